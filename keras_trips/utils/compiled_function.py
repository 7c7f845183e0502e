import keras
import numpy as np


class CompiledFunction(keras.Model):
    """A function of a model, run batch by batch through Keras' compiled
    `predict` (XLA under JAX and TensorFlow).

    Evaluation code that calls a model's methods eagerly runs op by op; under
    JAX every op of every new shape compiles on its own, which on a CPU
    costs more than the evaluation. Wrapping the computation here compiles
    it once per input shape, with the model's variables tracked (not baked
    in as constants).

    Args:
        model: the model (or layer) whose variables `function` reads.
        function: callable `(model, inputs) -> tensor or dict of tensors`,
            `inputs` a dict of batched tensors; written with `keras.ops`,
            its Python arguments fixed (they are part of the trace).

    Example:
    ```python
    embed = CompiledFunction(
        pretrainer,
        lambda model, x: model.embed_image(model.backbone.encode_image(x["images"])),
    )
    embeddings = embed.predict_in_batches({"images": images}, batch_size=64)
    ```
    """

    def __init__(self, model, function, **kwargs):
        super().__init__(**kwargs)

        # === Layers ===
        self.wrapped = model

        # === Config ===
        self.function = function
        # The wrapped model's variables exist already.
        self.built = True

    def call(self, inputs):
        return self.function(self.wrapped, inputs)

    def predict_in_batches(self, inputs, batch_size):
        """The function over `inputs` (a dict of arrays), `batch_size` rows
        at a time, as numpy arrays (or a dict of them).

        Every call sees one batch shape: a last, shorter batch is padded by
        repeating its last row and the padding's outputs are dropped, so
        the function compiles once, not twice (each compile of a model
        costs about a second on a CPU, more than its batches).
        """
        count = len(next(iter(inputs.values())))
        if not count:
            raise ValueError("`inputs` hold no rows to predict.")
        batch = min(batch_size, count)
        outputs = []
        for start in range(0, count, batch):
            rows = np.minimum(np.arange(start, start + batch), count - 1)
            part = {
                name: np.take(value, rows, axis=0) for name, value in inputs.items()
            }
            kept = min(batch, count - start)
            outputs.append(
                keras.tree.map_structure(
                    lambda x, kept=kept: np.asarray(x)[:kept],
                    self.predict_on_batch(part),
                )
            )
        return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *outputs)

import keras


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
    embeddings = embed.predict({"images": images}, batch_size=64, verbose=0)
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

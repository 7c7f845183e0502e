import keras

# Inputs every signature may name; the batch dimension is left dynamic.
STANDARD_INPUTS = {
    # CLIP-normalised images at the model's `image_shape`; served as raw
    # uint8 pixels and as normalised float32 (see `serving_inputs`).
    "images": lambda backbone, sequence_length: (backbone.image_shape, "float32"),
    "token_ids": lambda backbone, sequence_length: ((sequence_length,), "int32"),
    # int32 1/0, as `keras_trips.data` and tokenizers give it.
    "padding_mask": lambda backbone, sequence_length: ((sequence_length,), "int32"),
}


class ServingSignature:
    """One serving endpoint of an exported model: its inputs and computation.

    Task models plug into `export_saved_model` by registering their
    signatures with `register_serving_signature`.

    Args:
        name: str. The signature's name in the SavedModel.
        function: callable `(model, inputs) -> dict of tensors`, `inputs` a
            dict of the named inputs. Written with `keras.ops`, so that it
            traces under TensorFlow and converts through jax2tf under JAX;
            inference mode (`training=False`).
        inputs: tuple of the model inputs that `function` reads. The
            standard ones are `"images"` float32 `(B, H, W, C)`
            (CLIP-normalised, `H, W, C` the model's `image_shape`),
            `"token_ids"` int32 `(B, L)` and `"padding_mask"` int32 `(B, L)`,
            `L` the `sequence_length` fixed at export. A signature with
            `"images"` is served as `name` with raw uint8 `images_uint8` and
            as `name + "_normalized"` with `images_normalized`.
        custom_inputs: optional callable `(backbone, sequence_length) -> dict`
            mapping the names of other inputs to `(shape without the batch
            dimension, dtype)`, e.g. an image pair `"images"` of shape
            `(2, H, W, C)`.
        description: str. One line for `--help` texts and the docs.

    Example:
    ```python
    class AnswerClassifier(keras.Model):
        ...  # your task model: a TRIPSBackbone and a head

    def answer_scores(model, inputs):
        return {"answer_scores": model(inputs, training=False)}

    register_serving_signature(
        AnswerClassifier,
        ServingSignature(
            "answer", answer_scores, ("images", "token_ids", "padding_mask")
        ),
        default=True,
    )
    ```
    """

    def __init__(self, name, function, inputs, custom_inputs=None, description=""):
        self.name = name
        self.function = function
        self.inputs = tuple(inputs)
        self.custom_inputs = custom_inputs
        self.description = description

    def input_specs(self, backbone, sequence_length):
        """`{name: (shape with a None batch dimension, dtype)}` of the inputs."""
        custom = {}
        if self.custom_inputs is not None:
            custom = self.custom_inputs(backbone, sequence_length)
        specs = {}
        for name in self.inputs:
            if name in custom:
                shape, dtype = custom[name]
            elif name in STANDARD_INPUTS:
                shape, dtype = STANDARD_INPUTS[name](backbone, sequence_length)
            else:
                raise ValueError(
                    f"Signature {self.name!r} names the input {name!r}, which is "
                    f"neither standard ({sorted(STANDARD_INPUTS)}) nor given by "
                    "`custom_inputs`."
                )
            specs[name] = ((None, *shape), dtype)
        return specs


# Model class -> {signature name: ServingSignature}, the default first.
_REGISTRY = {}


def register_serving_signature(model_class, signature, default=False):
    """Makes `signature` exportable for models of `model_class`.

    The first signature registered for a class is its default (exported as
    `serving_default`) unless a later one says `default=True`.
    """
    signatures = _REGISTRY.setdefault(model_class, {})
    signatures.pop(signature.name, None)
    if default:
        _REGISTRY[model_class] = {signature.name: signature, **signatures}
    else:
        signatures[signature.name] = signature


def serving_signatures(model):
    """The signatures registered for `model`'s class (or its nearest base).

    Returns a dict `{name: ServingSignature}` whose first entry is the default.
    """
    for model_class in type(model).__mro__:
        if model_class in _REGISTRY:
            return dict(_REGISTRY[model_class])
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a Keras model. Received: {type(model)}")
    known = ", ".join(sorted(cls.__name__ for cls in _REGISTRY))
    raise ValueError(
        f"No serving signatures are registered for {type(model).__name__} "
        f"(registered: {known}). Register them with "
        "`keras_trips.export.register_serving_signature`."
    )

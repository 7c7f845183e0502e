import shutil
import tempfile

import keras

from keras_trips.export.serving_inputs import serving_functions
from keras_trips.export.serving_signature import serving_signatures

TORCH_UNSUPPORTED = (
    "Exporting a TF SavedModel is not supported under the torch backend: "
    "Keras's ExportArchive cannot add custom endpoints there (its torch "
    "export needs torch_xla and takes only the model's own call with a fixed "
    "batch size). Save the model as `.keras` (`model.save('model.keras')`) "
    "and export it with `python tools/export_saved_model.py model.keras "
    "OUT_DIR`, which loads it under the TensorFlow backend: a `.keras` file "
    "saved under torch loads under TensorFlow with the same outputs."
)


def export_saved_model(
    model,
    path,
    signatures=None,
    default_signature=None,
    sequence_length=None,
    verbose=False,
):
    """Writes `model` as a TF SavedModel for TensorFlow Serving.

    Each signature is an inference endpoint (see
    `keras_trips.export.trips_serving_signatures`): for a `TRIPSPretrainer`
    `"itm"` (image-text matching probability), `"image_embedding"` (text-free
    ITC image embeddings, for retrieval galleries), `"text_embedding"` and
    `"features"`; for a `TRIPSBackbone` `"features"`. Task models plug in
    through `register_serving_signature`.

    A signature with images is served twice (see
    `keras_trips.export.serving_inputs`): `<name>` takes `images_uint8`,
    raw 0-255 pixels, uint8 `(B, height, width, 3)` of any size, resized and
    CLIP-normalised inside as in training; `<name>_normalized` takes
    `images_normalized`, float32 `(B, H, W, C)` at the model's `image_shape`,
    already normalised (raw pixels sent as floats are rejected). The default
    signature's raw-pixel form is also `serving_default`. Text inputs:
    `token_ids` int32 `(B, L)` WordPiece ids packed as `[CLS] ... [SEP]
    [PAD]...` (as `keras_trips.data.TRIPSTextPreprocessor` makes them),
    `padding_mask` int32 `(B, L)`. The batch dimension is dynamic and must be
    the same for every input (checked); the text length is fixed at export,
    and so is the model's image size, so every patch-selection stage keeps a
    static number of tokens. The SavedModel needs neither Keras nor
    keras_trips to run.

    Works under the TensorFlow and JAX backends (JAX through jax2tf, native
    serialization: the graph holds `XlaCallModule` ops for the platform it was
    exported on, CPU here). Under torch it raises: export the `.keras` file
    with `tools/export_saved_model.py`, which loads it under TensorFlow.

    Args:
        model: a `TRIPSPretrainer`, a `TRIPSBackbone` or a model with
            registered signatures.
        path: str. Directory to write the SavedModel to.
        signatures: names of the signatures to export; `None` for all those
            registered for the model.
        default_signature: name of the one served as `serving_default`;
            `None` for the model's default (the first registered).
        sequence_length: int. Text length fixed at export; `None` for the
            backbone's `max_sequence_length`.
        verbose: bool. Let Keras print the exported endpoints.

    Returns:
        The names of the served signatures (raw-pixel and normalised forms),
        the default first; `serving_default` is the first one.

    Example:
    ```python
    pretrainer = keras_trips.utils.load_model("trips.keras")
    keras_trips.export.export_saved_model(
        pretrainer, "serving/trips/1", sequence_length=30
    )
    # In a process without Keras:
    served = tf.saved_model.load("serving/trips/1")
    served.signatures["serving_default"](
        images_uint8=pixels, token_ids=token_ids, padding_mask=padding_mask
    )["itm_probability"]
    ```
    """
    if keras.backend.backend() not in ("tensorflow", "jax"):
        raise NotImplementedError(TORCH_UNSUPPORTED)

    available = serving_signatures(model)
    names = list(available) if signatures is None else list(signatures)
    unknown = sorted(set(names) - set(available))
    if unknown or not names:
        raise ValueError(
            f"Unknown or no signatures {unknown or names} for "
            f"{type(model).__name__}. Available: {list(available)}"
        )
    default_signature = default_signature or next(
        name for name in available if name in names
    )
    if default_signature not in names:
        raise ValueError(
            f"The default signature {default_signature!r} is not among those "
            f"exported: {names}"
        )
    backbone = getattr(model, "backbone", model)
    if sequence_length is None:
        sequence_length = backbone.max_sequence_length
    if not 1 <= sequence_length <= backbone.max_sequence_length:
        raise ValueError(
            f"`sequence_length` must be in [1, {backbone.max_sequence_length}] "
            f"(the model's max_sequence_length). Received: {sequence_length}"
        )

    # ExportArchive serves its first endpoint as `serving_default`.
    names.remove(default_signature)
    names.insert(0, default_signature)
    specs = {
        name: available[name].input_specs(backbone, sequence_length) for name in names
    }
    # What the served functions call, and the object holding its variables.
    if keras.backend.backend() == "jax":
        holder = _jax2tf_endpoints(model, available, specs)
        model_functions = {name: getattr(holder, name) for name in names}
    else:
        holder = model
        model_functions = {name: _endpoint(available[name], model) for name in names}
    served = {}
    for name in names:
        served.update(serving_functions(name, model_functions[name], specs[name]))
    archive = keras.export.ExportArchive()
    archive.track(holder)
    for name, function in served.items():
        archive.add_endpoint(name, function)
    archive.write_out(path, verbose=verbose)
    return list(served)


def _jax2tf_endpoints(model, available, specs):
    """The endpoints under JAX, as jax2tf conversions written out and
    reloaded: the TensorFlow object holding them (the checks and
    preprocessing around them are TensorFlow ops, which a converted JAX
    function cannot hold)."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, input_specs in specs.items():
        archive.add_endpoint(
            name,
            _endpoint(available[name], model),
            input_signature=[
                {
                    key: tf.TensorSpec(shape, dtype, name=key)
                    for key, (shape, dtype) in input_specs.items()
                }
            ],
            # Inference only: no custom gradients to serialise (and warn about).
            jax2tf_kwargs={"with_gradient": False},
        )
    scratch = tempfile.mkdtemp()
    try:
        archive.write_out(scratch, verbose=False)
        return tf.saved_model.load(scratch)
    finally:
        shutil.rmtree(scratch)


def _endpoint(signature, model):
    """`signature` bound to `model`, a function of the inputs dict only."""

    def endpoint(inputs):
        return signature.function(model, inputs)

    return endpoint

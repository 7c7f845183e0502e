"""What a served signature takes: raw pixels or normalised images, checked.

A signature with images is served twice, under names a client cannot
confuse:

- `<name>` takes `images_uint8`: raw 0-255 pixels, uint8 `(B, height,
  width, 3)` of any size, resized (bilinear, antialiased) to the model's
  image size and CLIP-normalised inside, exactly as the training pipeline
  does (`keras_trips.data.image_ops`);
- `<name>_normalized` takes `images_normalized`: float32 images already
  resized and CLIP-normalised. Values outside the CLIP range (raw pixels
  sent as floats) are rejected, not served.

Every signature checks that its inputs share one batch size before the model
runs. The checks are TensorFlow ops around the exported model (which may be
a jax2tf conversion), so they hold in TF Serving too.
"""

RAW_IMAGES = "images_uint8"
NORMALIZED_IMAGES = "images_normalized"
NORMALIZED_SUFFIX = "_normalized"
# CLIP-normalised pixels lie in [-1.79, 2.15]; the margin leaves room for
# resizers that overshoot, while raw pixels (3 and above) fall outside.
_MARGIN = 0.5


def serving_functions(name, model_function, input_specs):
    """The served `tf.function`s of one exported signature.

    Args:
        name: str. The signature's name.
        model_function: callable on the dict of model inputs (`"images"`
            CLIP-normalised float32), e.g. the exported endpoint.
        input_specs: `{input name: (shape with a None batch, dtype)}` of the
            model inputs.

    Returns:
        `{name: function}` for a text-only signature; with images,
        `{name: raw-pixel function, name + "_normalized": function}`.
    """
    if "images" not in input_specs:
        return {name: _serving_function(model_function, input_specs, None, None)}
    image_shape, _ = input_specs["images"]
    others = {key: spec for key, spec in input_specs.items() if key != "images"}
    raw_shape = (*image_shape[:-3], None, None, image_shape[-1])
    return {
        name: _serving_function(
            model_function,
            {RAW_IMAGES: (raw_shape, "uint8"), **others},
            RAW_IMAGES,
            lambda images: _normalize_raw_images(images, image_shape),
        ),
        name + NORMALIZED_SUFFIX: _serving_function(
            model_function,
            {NORMALIZED_IMAGES: (image_shape, "float32"), **others},
            NORMALIZED_IMAGES,
            lambda images: _check_normalized_images(images, name),
        ),
    }


def _serving_function(model_function, input_specs, image_input, prepare_images):
    """A traced `tf.function` of the named inputs: checks the batch sizes,
    prepares the images (`prepare_images(images) -> (images, checks)`), then
    runs `model_function`."""
    import tensorflow as tf

    specs = {
        key: tf.TensorSpec(shape, dtype, name=key)
        for key, (shape, dtype) in input_specs.items()
    }

    @tf.function(input_signature=[specs], autograph=False)
    def serve(inputs):
        checks = _batch_size_checks(inputs)
        model_inputs = dict(inputs)
        if image_input is not None:
            images, image_checks = prepare_images(model_inputs.pop(image_input))
            model_inputs["images"] = images
            checks += image_checks
        # The model runs only on inputs that passed every check.
        with tf.control_dependencies(checks):
            model_inputs = {key: tf.identity(x) for key, x in model_inputs.items()}
        return model_function(model_inputs)

    serve.get_concrete_function()  # traced: ExportArchive takes it as it is
    return serve


def _batch_size_checks(inputs):
    import tensorflow as tf

    first, *rest = sorted(inputs)
    return [
        tf.debugging.assert_equal(
            tf.shape(inputs[key])[0],
            tf.shape(inputs[first])[0],
            message=f"`{key}` and `{first}` must have the same batch size.",
        )
        for key in rest
    ]


def _normalize_raw_images(images, image_shape):
    """uint8 pixels of any size -> CLIP-normalised float32 `image_shape`."""
    import tensorflow as tf

    from keras_trips.data import image_ops

    shape = tf.shape(images)
    flat = tf.reshape(images, tf.concat([[-1], shape[-3:]], axis=0))
    resized = image_ops.resize(flat, image_shape[-3:-1])
    normalized = image_ops.normalize_images(resized)
    normalized = tf.reshape(normalized, tf.concat([shape[:-3], image_shape[-3:]], 0))
    return tf.ensure_shape(normalized, image_shape), []


def _check_normalized_images(images, name):
    import tensorflow as tf

    low, high = normalized_range()
    message = (
        f"`{NORMALIZED_IMAGES}` must be CLIP-normalised float32 images, with "
        f"values in [{low:.2f}, {high:.2f}]; these are not (raw 0-255 pixels "
        f"sent as floats?). Send raw pixels as uint8 `{RAW_IMAGES}` to the "
        f"`{name}` signature, which resizes and normalises them."
    )
    checks = [
        tf.debugging.assert_greater_equal(tf.reduce_min(images), low, message=message),
        tf.debugging.assert_less_equal(tf.reduce_max(images), high, message=message),
    ]
    return images, checks


def normalized_range():
    """`(low, high)`: the values a `images_normalized` input may hold."""
    from keras_trips.data.image_ops import CLIP_MEAN, CLIP_STD

    pairs = list(zip(CLIP_MEAN, CLIP_STD, strict=True))
    return (
        min(-mean / std for mean, std in pairs) - _MARGIN,
        max((1 - mean) / std for mean, std in pairs) + _MARGIN,
    )

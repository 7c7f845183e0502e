import keras
import keras_hub
import numpy as np
import tensorflow as tf

from keras_trips.data import image_ops
from keras_trips.models import TRIPSBackbone, TRIPSImageConverter


def pixels(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (2, height, width, 3)).astype("uint8")


def test_normalises_as_the_training_input():
    converter = TRIPSImageConverter(image_size=(32, 32))
    images = pixels(32, 32)
    expected = image_ops.normalize_images(images).numpy()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(converter(images)), expected, atol=1e-5
    )
    # (0.5 - mean) / std of the red channel, by hand.
    gray = np.full((1, 32, 32, 3), 127.5, "float32")
    red = keras.ops.convert_to_numpy(converter(gray))[0, 0, 0, 0]
    np.testing.assert_allclose(red, (0.5 - 0.48145466) / 0.26862954, rtol=1e-5)


def test_resizes_any_size_in_tf_data_as_the_training_input():
    converter = TRIPSImageConverter(image_size=(32, 32))
    images = pixels(48, 40)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(2).map(converter)
    converted = next(iter(dataset)).numpy()
    expected = image_ops.normalize_images(
        image_ops.resize(images.astype("float32"), (32, 32))
    ).numpy()
    assert converted.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(converted, expected, atol=1e-5)


def test_config_round_trip_and_preset(tmp_path):
    converter = TRIPSImageConverter(image_size=(16, 24))
    restored = TRIPSImageConverter.from_config(converter.get_config())
    images = pixels(16, 24)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(images)),
        keras.ops.convert_to_numpy(converter(images)),
    )
    # A backbone's preset holds the converter of its image size, which
    # keras-hub's own loader finds too.
    backbone = TRIPSBackbone.from_preset("micro")
    backbone.save_to_preset(str(tmp_path))
    for loader in (TRIPSImageConverter, keras_hub.layers.ImageConverter):
        loaded = loader.from_preset(str(tmp_path))
        assert isinstance(loaded, TRIPSImageConverter)
        assert tuple(loaded.image_size) == backbone.image_shape[:2]

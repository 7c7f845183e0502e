import numpy as np
import tensorflow as tf
from backend_utils import backend_independent

from keras_trips.data import CLIP_MEAN, CLIP_STD, image_ops

pytestmark = backend_independent


def test_swap_left_right_whole_words_only():
    text = tf.constant("the dog LEFT of the Right cat, leftover and rightly left")
    swapped = image_ops.swap_left_right(text).numpy().decode()
    assert swapped == "the dog right of the left cat, leftover and rightly right"


def test_flip_moves_image_text_and_boxes_together():
    image = tf.random.uniform((8, 10, 3), maxval=255.0, seed=1)
    box = tf.constant([0.1, 0.2, 0.3, 0.9])
    outcomes = set()
    for seed in range(20):
        flipped, text, new_box = image_ops.random_flip(
            image, tf.constant("a cat left of a dog"), tf.constant([seed, 0]), boxes=box
        )
        if text.numpy() == b"a cat right of a dog":
            np.testing.assert_array_equal(flipped.numpy(), image.numpy()[:, ::-1])
            np.testing.assert_allclose(new_box.numpy(), [0.7, 0.2, 0.9, 0.9], atol=1e-6)
            outcomes.add("flipped")
        else:
            assert text.numpy() == b"a cat left of a dog"
            np.testing.assert_array_equal(flipped.numpy(), image.numpy())
            np.testing.assert_array_equal(new_box.numpy(), box.numpy())
            outcomes.add("kept")
    assert outcomes == {"flipped", "kept"}


def test_random_resized_crop_keeps_box_on_object():
    # A white object on black: after the crop, the object's pixels are where
    # the transformed box says.
    image = np.zeros((60, 80, 3), np.uint8)
    image[20:35, 30:50] = 255
    box = tf.constant([30 / 80, 20 / 60, 50 / 80, 35 / 60])
    for seed in range(5):
        cropped, new_box = image_ops.random_resized_crop(
            tf.constant(image), 64, tf.constant([seed, 7]), scale=(0.3, 0.6), boxes=box
        )
        assert cropped.shape == (64, 64, 3)
        ys, xs = np.nonzero(cropped.numpy()[..., 0] > 127)
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 64
        np.testing.assert_allclose(found, new_box.numpy(), atol=2 / 64)


def test_crop_boxes_arithmetic():
    boxes = tf.constant([[0.5, 0.5, 1.0, 1.0]])
    cropped = image_ops.crop_boxes(boxes, (100, 200), (25, 50), (50, 100))
    np.testing.assert_allclose(cropped.numpy(), [[0.5, 0.5, 1.0, 1.0]])


def test_normalize_uses_clip_statistics():
    images = tf.constant([[[[0, 255, 128]]]], tf.uint8)
    expected = (np.array([0, 255, 128]) / 255 - np.array(CLIP_MEAN)) / np.array(
        CLIP_STD
    )
    np.testing.assert_allclose(
        image_ops.normalize_images(images).numpy()[0, 0, 0], expected, rtol=1e-5
    )


def test_decode_jpeg_png_and_gray(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "a.jpg")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "g.png")
    for name in ("a.png", "a.jpg", "g.png"):
        decoded = image_ops.decode_image(tf.io.read_file(str(tmp_path / name)))
        assert decoded.shape == (9, 7, 3) and decoded.dtype == tf.uint8

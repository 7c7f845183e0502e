import numpy as np
import pytest
from harness import numpy, run_layer_test

from keras_trips.layers import TRIPSPatchEmbedding
from keras_trips.layers.trips_patch_embedding import interpolate_position_embedding

CONFIG = {"image_shape": (32, 32, 3), "patch_size": 8, "hidden_dim": 16}


def images(batch=2, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(batch, size, size, 3)).astype("float32")


@pytest.mark.parametrize(
    "stem, num_weights",
    # Patch: projection kernel and bias, [CLS], positions. Conv: three
    # stride-2 convolutions with their LayerNorms before the 1x1 projection.
    [("patch", 4), ("conv", 3 * 4 + 4)],
)
def test_layer(stem, num_weights, tmp_path):
    run_layer_test(
        TRIPSPatchEmbedding,
        {**CONFIG, "stem": stem},
        {"images": images()},
        expected_output_shape=(2, 1 + 16, 16),
        expected_num_trainable_weights=num_weights,
        tmp_path=tmp_path,
    )


def test_patch_stem_is_the_linear_patch_projection():
    embedding = TRIPSPatchEmbedding(**CONFIG)
    x = images()
    kernel = numpy(embedding.projection.kernel).reshape(8 * 8 * 3, 16)
    bias = numpy(embedding.projection.bias)
    positions = numpy(embedding.position_embedding)
    # Patches in row-major order, each flattened as (row, column, channel).
    patches = x.reshape(2, 4, 8, 4, 8, 3).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(2, 16, 8 * 8 * 3)
    expected = np.concatenate(
        [
            np.broadcast_to(numpy(embedding.class_token), (2, 1, 16)),
            patches @ kernel + bias,
        ],
        axis=1,
    )
    np.testing.assert_allclose(numpy(embedding(x)), expected + positions, atol=1e-5)


def test_position_interpolation_keeps_cls_and_constant_grids():
    width = 4
    positions = np.concatenate(
        [np.full((1, width), 7.0), np.full((4, width), 2.0)]
    ).astype("float32")
    resized = numpy(interpolate_position_embedding(positions, (4, 4)))
    assert resized.shape == (1 + 16, width)
    np.testing.assert_allclose(resized[0], 7.0)
    np.testing.assert_allclose(resized[1:], 2.0, atol=1e-5)
    same = numpy(interpolate_position_embedding(positions, (2, 2)))
    np.testing.assert_array_equal(same, positions)
    with pytest.raises(ValueError, match="not a square grid"):
        interpolate_position_embedding(np.zeros((1 + 6, width), "float32"), (4, 4))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"image_shape": (32, 32)}, "must be \\(height, width, channels\\)"),
        ({"image_shape": (30, 32, 3)}, "not divisible by patch_size=8"),
        ({"stem": "resnet"}, "`stem` must be one of"),
        ({"stem": "conv", "patch_size": 6, "image_shape": (36, 36, 3)}, "power of 2"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        TRIPSPatchEmbedding(**{**CONFIG, **overrides})


def test_images_of_another_size_are_rejected():
    with pytest.raises(ValueError, match="images"):
        TRIPSPatchEmbedding(**CONFIG)(images(size=64))

import keras
import numpy as np
import pytest
from harness import run_layer_test

from keras_trips.layers import TRIPSFusionEncoder

CONFIG = {
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "intermediate_dim": 32,
    "dropout": 0.0,
}
PADDING_MASK = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], bool)
IMAGE_PADDING_MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(2, 5, 16)).astype("float32")
    image = rng.normal(size=(2, 6, 16)).astype("float32")
    return text, image


def numpy_output(x):
    return keras.ops.convert_to_numpy(x)


def test_layer(tmp_path):
    text, image = inputs()
    run_layer_test(
        TRIPSFusionEncoder,
        CONFIG,
        {"text_sequence": text, "image_tokens": image, "padding_mask": PADDING_MASK},
        expected_output_shape=(2, 5, 16),
        tmp_path=tmp_path,
    )


def test_text_padding_is_masked():
    fusion = TRIPSFusionEncoder(**CONFIG)
    text, image = inputs()
    fused = numpy_output(fusion(text, image, padding_mask=PADDING_MASK))
    changed_text = np.where(PADDING_MASK[..., None], text, 5.0)
    changed = numpy_output(fusion(changed_text, image, padding_mask=PADDING_MASK))
    np.testing.assert_allclose(changed[PADDING_MASK], fused[PADDING_MASK], atol=1e-5)


def test_image_padding_is_masked_and_image_is_attended():
    fusion = TRIPSFusionEncoder(**CONFIG)
    text, image = inputs()

    def run(image_tokens):
        return numpy_output(
            fusion(
                text,
                image_tokens,
                padding_mask=PADDING_MASK,
                image_padding_mask=IMAGE_PADDING_MASK,
            )
        )

    fused = run(image)
    np.testing.assert_allclose(
        run(np.where(IMAGE_PADDING_MASK[..., None], image, 5.0)), fused, atol=1e-5
    )
    assert np.abs(run(image + 1.0) - fused).max() > 1e-3


def test_no_causal_mask():
    fusion = TRIPSFusionEncoder(**CONFIG)
    text, image = inputs()
    fused = numpy_output(fusion(text, image))
    changed_text = text.copy()
    changed_text[:, -1] += 1.0
    changed = numpy_output(fusion(changed_text, image))
    # The first token sees the last one: bidirectional self-attention.
    assert np.abs(changed[:, 0] - fused[:, 0]).max() > 1e-4


def test_image_width_must_match_text_width():
    fusion = TRIPSFusionEncoder(**CONFIG)
    text, _ = inputs()
    with pytest.raises(ValueError, match=r"image_tokens` width \(24\).*\(16\)"):
        fusion(text, np.zeros((2, 6, 24), "float32"))
    # Also once built with the right width.
    fusion(text, np.zeros((2, 6, 16), "float32"))
    with pytest.raises(ValueError, match=r"image_tokens` width \(8\)"):
        fusion(text, np.zeros((2, 6, 8), "float32"))


def test_text_width_must_match_hidden_dim():
    fusion = TRIPSFusionEncoder(**CONFIG)
    with pytest.raises(ValueError, match=r"text_sequence` width \(8\)"):
        fusion(np.zeros((2, 5, 8), "float32"), np.zeros((2, 6, 16), "float32"))


def test_wrong_rank_image_tokens():
    fusion = TRIPSFusionEncoder(**CONFIG)
    text, _ = inputs()
    with pytest.raises(ValueError, match="image_tokens` must have shape"):
        fusion(text, np.zeros((2, 16), "float32"))


@pytest.mark.parametrize(
    ("mask_name", "mask", "expected"),
    [
        ("padding_mask", PADDING_MASK[:, :3], r"\(2, 5\)"),
        ("padding_mask", PADDING_MASK[None], r"\(2, 5\)"),
        ("image_padding_mask", IMAGE_PADDING_MASK[:1], r"\(2, 6\)"),
    ],
)
def test_mask_shape_mismatch(mask_name, mask, expected):
    fusion = TRIPSFusionEncoder(**CONFIG)
    text, image = inputs()
    with pytest.raises(ValueError, match=rf"{mask_name}.*{expected}"):
        fusion(text, image, **{mask_name: mask})

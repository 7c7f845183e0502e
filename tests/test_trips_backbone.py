import keras
import numpy as np
import pytest
from keras import ops
from pretraining_utils import MICRO, pretraining_batch

from keras_trips.models import TRIPSBackbone


def backbone_inputs():
    batch = pretraining_batch(batch_size=2)
    return {k: batch[k] for k in ("images", "token_ids", "padding_mask")}


def test_outputs_and_text_guidance():
    backbone = TRIPSBackbone(**MICRO)
    inputs = backbone_inputs()
    outputs = backbone(inputs)
    # 16 patches, keep 0.5 in block 0: [CLS] + 8 kept + 1 fused.
    assert tuple(outputs["image_sequence"].shape) == (2, 10, 32)
    assert tuple(outputs["text_sequence"].shape) == (2, 8, 32)
    assert tuple(outputs["fusion_sequence"].shape) == (2, 8, 32)
    # The image tokens are the vision encoder's, guided by the text [CLS].
    expected = backbone.vision_encoder(
        {
            "images": inputs["images"],
            "text_embedding": outputs["text_sequence"][:, 0],
        }
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs["image_sequence"]),
        ops.convert_to_numpy(expected),
        atol=1e-6,
    )


def test_presets():
    assert set(TRIPSBackbone.presets) == {"micro", "tiny", "small", "base"}
    micro = TRIPSBackbone.from_preset("micro")
    assert micro.vision_encoder.sequence_lengths() == [17, 10, 10]
    tiny = TRIPSBackbone.presets["tiny"]
    assert tiny["image_shape"] == (64, 64, 3) and tiny["patch_size"] == 8
    base = TRIPSBackbone.presets["base"]
    assert (base["vision_num_layers"], base["text_num_layers"]) == (12, 6)
    assert (base["selection_layers"], base["keep_rate"]) == ((4, 9), 0.7)
    backbone = TRIPSBackbone.from_preset(
        "tiny", vision_num_layers=2, selection_layers=(1,)
    )
    assert backbone.vision_encoder.num_layers == 2
    with pytest.raises(ValueError, match="Unknown TRIPSBackbone configuration"):
        TRIPSBackbone.from_preset("huge")


def test_keras_round_trip(tmp_path):
    backbone = TRIPSBackbone(**MICRO)
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)
    restored = keras.saving.load_model(path)
    assert restored.get_config() == backbone.get_config()
    assert_same_outputs(backbone, restored, backbone_inputs())


def test_mixed_bfloat16():
    backbone = TRIPSBackbone(**MICRO, dtype="mixed_bfloat16")
    outputs = backbone(backbone_inputs())
    assert (
        keras.backend.standardize_dtype(outputs["fusion_sequence"].dtype) == "bfloat16"
    )
    assert backbone.text_encoder.token_embedding.embeddings.dtype == "float32"


def assert_same_outputs(backbone, restored, inputs):
    expected, actual = backbone(inputs), restored(inputs)
    for name in expected:
        np.testing.assert_array_equal(
            ops.convert_to_numpy(actual[name]), ops.convert_to_numpy(expected[name])
        )


def test_text_wider_than_vision_through_guidance_projection(tmp_path):
    backbone = TRIPSBackbone(**MICRO, text_hidden_dim=64, guidance_projection=True)
    inputs = backbone_inputs()
    text = backbone.encode_text(inputs["token_ids"], inputs["padding_mask"])
    assert tuple(text.shape) == (2, 8, 64)
    assert tuple(backbone.guidance_dense.kernel.shape) == (64, 32)
    image = backbone.encode_image(inputs["images"], text[:, 0])
    assert tuple(image.shape) == (2, 10, 32)
    # The text [CLS] guides selection through the projection.
    expected = backbone.vision_encoder(
        {
            "images": inputs["images"],
            "text_embedding": backbone.guidance_dense(text[:, 0]),
        }
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(image), ops.convert_to_numpy(expected), atol=1e-6
    )
    assert tuple(backbone.encode_image(inputs["images"]).shape) == (2, 10, 32)
    fused = backbone.fuse(text, image, inputs["padding_mask"])
    assert tuple(fused.shape) == (2, 8, 64)
    # The towers' widths are checked where they meet.
    with pytest.raises(ValueError, match="image_sequence"):
        backbone.fuse(text, text, inputs["padding_mask"])

    path = str(tmp_path / "wide_text.keras")
    backbone.save(path)
    restored = keras.saving.load_model(path)
    assert restored.get_config() == backbone.get_config()
    assert_same_outputs(backbone, restored, inputs)


def test_text_width_other_than_vision_needs_guidance_projection():
    with pytest.raises(ValueError, match="guidance_projection=True"):
        TRIPSBackbone(**MICRO, text_hidden_dim=64)


def test_convolutional_stem(tmp_path):
    backbone = TRIPSBackbone(**MICRO, vision_stem="conv")
    embedding = backbone.vision_encoder.patch_embedding
    # 8 px patches: three 3x3 stride-2 convolutions (32 -> 16 -> 8 -> 4 px),
    # each with a LayerNorm and a GELU, then a 1x1 projection.
    assert [layer.name for layer in embedding.stem_layers[::3]] == [
        "stem_conv_0",
        "stem_conv_1",
        "stem_conv_2",
    ]
    assert embedding.projection.kernel_size == (1, 1)
    inputs = backbone_inputs()
    outputs = backbone(inputs)
    assert tuple(outputs["image_sequence"].shape) == (2, 10, 32)
    assert tuple(outputs["fusion_sequence"].shape) == (2, 8, 32)
    path = str(tmp_path / "conv_stem.keras")
    backbone.save(path)
    restored = keras.saving.load_model(path)
    assert restored.vision_stem == "conv"
    assert_same_outputs(backbone, restored, inputs)


def test_convolutional_stem_needs_a_power_of_two_patch_size():
    config = {**MICRO, "image_shape": (36, 36, 3), "patch_size": 6}
    # The linear patch stem takes any patch size that divides the image.
    TRIPSBackbone(**config)
    with pytest.raises(ValueError, match=r"must be a power of 2\. Received: 6"):
        TRIPSBackbone(**config, vision_stem="conv")
    with pytest.raises(ValueError, match="`stem` must be one of"):
        TRIPSBackbone(**MICRO, vision_stem="convolutional")

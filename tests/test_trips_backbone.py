import numpy as np
import pytest
from harness import run_backbone_test, run_model_saving_test
from keras import ops
from pretraining_utils import MICRO, pretraining_batch

from keras_trips.models import TRIPSBackbone


def backbone_inputs():
    batch = pretraining_batch(batch_size=2)
    return {k: batch[k] for k in ("images", "token_ids", "padding_mask")}


def test_text_guidance():
    backbone = TRIPSBackbone(**MICRO)
    inputs = backbone_inputs()
    outputs = backbone(inputs)
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


def test_backbone(tmp_path):
    # 16 patches, keep 0.5 in block 0: [CLS] + 8 kept + 1 fused.
    run_backbone_test(
        TRIPSBackbone,
        MICRO,
        backbone_inputs(),
        {
            "image_sequence": (2, 10, 32),
            "text_sequence": (2, 8, 32),
            "fusion_sequence": (2, 8, 32),
        },
        tmp_path,
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

    run_model_saving_test(backbone, inputs, tmp_path)


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
    assert run_model_saving_test(backbone, inputs, tmp_path).vision_stem == "conv"


def test_convolutional_stem_needs_a_power_of_two_patch_size():
    config = {**MICRO, "image_shape": (36, 36, 3), "patch_size": 6}
    # The linear patch stem takes any patch size that divides the image.
    TRIPSBackbone(**config)
    with pytest.raises(ValueError, match=r"must be a power of 2\. Received: 6"):
        TRIPSBackbone(**config, vision_stem="conv")
    with pytest.raises(ValueError, match="`stem` must be one of"):
        TRIPSBackbone(**MICRO, vision_stem="convolutional")

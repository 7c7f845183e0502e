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
    inputs = backbone_inputs()
    expected, actual = backbone(inputs), restored(inputs)
    for name in expected:
        np.testing.assert_array_equal(
            ops.convert_to_numpy(actual[name]), ops.convert_to_numpy(expected[name])
        )


def test_mixed_bfloat16():
    backbone = TRIPSBackbone(**MICRO, dtype="mixed_bfloat16")
    outputs = backbone(backbone_inputs())
    assert (
        keras.backend.standardize_dtype(outputs["fusion_sequence"].dtype) == "bfloat16"
    )
    assert backbone.text_encoder.token_embedding.embeddings.dtype == "float32"

"""Preset directories: `save_to_preset` and `from_preset(path)` of the
backbone, the pretrainer and the text preprocessor."""

import json
import os

import numpy as np
import pytest
from keras import ops
from pretraining_utils import MICRO, pretraining_batch

from keras_trips.data import TRIPSTextPreprocessor
from keras_trips.models import TRIPSBackbone, TRIPSPretrainer
from keras_trips.utils import load_model

BACKBONE_INPUTS = ("images", "token_ids", "padding_mask")


def trained_pretrainer():
    """A micro pretrainer whose weights differ from any fresh one's (noise
    stands in for training: no `fit` to trace)."""
    pretrainer = TRIPSPretrainer(TRIPSBackbone(**MICRO), embedding_dim=16)
    rng = np.random.default_rng(0)
    for variable in pretrainer.weights:
        if "float" in str(variable.dtype):
            noise = rng.normal(scale=0.05, size=variable.shape)
            variable.assign(ops.convert_to_numpy(variable) + noise.astype("float32"))
    return pretrainer, pretraining_batch(batch_size=4)


def numpy_outputs(outputs):
    return {name: ops.convert_to_numpy(value) for name, value in outputs.items()}


def test_pretrainer_preset_loads_the_same_model(tmp_path):
    pretrainer, batch = trained_pretrainer()
    preprocessor = TRIPSTextPreprocessor(sequence_length=8, mask_rate=0.15)
    pretrainer.save_to_preset(str(tmp_path), preprocessor=preprocessor)

    assert sorted(os.listdir(tmp_path)) == [
        "assets",
        "config.json",
        "image_converter.json",
        "metadata.json",
        "model.weights.h5",
        "preprocessor.json",
        "task.json",
        "task.weights.h5",
    ]
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert metadata["weights"] == "trained"
    assert metadata["parameter_count"] == pretrainer.count_params()

    restored = TRIPSPretrainer.from_preset(str(tmp_path))
    expected = numpy_outputs(pretrainer(batch, training=False))
    actual = numpy_outputs(restored(batch, training=False))
    for name in ("itc_loss", "mlm_loss", "image_similarity"):
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5)

    # The backbone alone, from the same directory.
    backbone = TRIPSBackbone.from_preset(str(tmp_path))
    inputs = {name: batch[name] for name in BACKBONE_INPUTS}
    expected = numpy_outputs(pretrainer.backbone(inputs))
    actual = numpy_outputs(backbone(inputs))
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, atol=1e-5, err_msg=name)

    # The tools' loader: the task of the preset.
    assert isinstance(load_model(str(tmp_path)), TRIPSPretrainer)

    # The preprocessor: the saved settings, the preset's own vocabulary.
    loaded = TRIPSTextPreprocessor.from_preset(str(tmp_path))
    assert (loaded.sequence_length, loaded.mask_rate) == (8, 0.15)
    assert loaded.vocabulary == str(
        tmp_path / "assets" / "tokenizer" / "vocabulary.txt"
    )
    captions = ["a cow above a crown"]
    np.testing.assert_array_equal(
        loaded(captions)["token_ids"], preprocessor(captions)["token_ids"]
    )
    unmasking = TRIPSTextPreprocessor.from_preset(str(tmp_path), mask_rate=0)
    assert "mask_positions" not in unmasking(captions)


def test_backbone_preset_gives_a_new_pretrainer_on_its_weights(tmp_path):
    backbone = TRIPSBackbone(**MICRO)
    backbone.save_to_preset(str(tmp_path))
    assert not (tmp_path / "task.json").exists()

    assert isinstance(load_model(str(tmp_path)), TRIPSBackbone)
    pretrainer = TRIPSPretrainer.from_preset(str(tmp_path), embedding_dim=8)
    assert pretrainer.embedding_dim == 8
    for restored, original in zip(pretrainer.backbone.weights, backbone.weights):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(restored), ops.convert_to_numpy(original)
        )


def test_bad_presets_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"neither a name .* nor a preset directory"):
        TRIPSBackbone.from_preset(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not a preset directory"):
        TRIPSPretrainer.from_preset(str(tmp_path))

    pretrainer, _ = trained_pretrainer()
    pretrainer.save_to_preset(str(tmp_path))
    with pytest.raises(ValueError, match="cannot be overridden"):
        TRIPSBackbone.from_preset(str(tmp_path), keep_rate=0.5)
    with pytest.raises(ValueError, match="cannot be overridden"):
        TRIPSPretrainer.from_preset(str(tmp_path), embedding_dim=8)
    (tmp_path / "task.weights.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"task\.weights\.h5 is missing"):
        TRIPSPretrainer.from_preset(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not a valid JSON file"):
        TRIPSBackbone.from_preset(str(tmp_path))

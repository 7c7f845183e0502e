"""int8-quantized models save as `.keras` and load quantized: the same
quantized layers, weights and outputs. Their blocks build their own
sublayers, so the loaded model learns which ones are quantized from the
`DTypePolicyMap` in its config."""

import keras
import numpy as np
import pytest
from harness import numpy, randomize_weights, run_model_saving_test
from pretraining_utils import MICRO, pretraining_batch
from test_trips_vision_encoder import tiny_encoder, tiny_inputs

from keras_trips.models import TRIPSVQA, TRIPSBackbone, TRIPSPretrainer


def backbone_inputs():
    batch = pretraining_batch(batch_size=2)
    return {key: batch[key] for key in ("images", "token_ids", "padding_mask")}


def quantized_paths(model):
    return sorted(
        layer.path
        for layer in model._flatten_layers()
        if layer.quantization_mode == "int8"
    )


@pytest.mark.parametrize(
    "build, inputs, head",
    [
        (lambda: tiny_encoder(keep_rate=0.5), tiny_inputs, None),
        # A task: its head and its backbone's encoders.
        (
            lambda: TRIPSVQA(TRIPSBackbone(**MICRO), answers=["yes", "no"]),
            backbone_inputs,
            "answer_head/output",
        ),
    ],
    ids=["vision_encoder", "vqa"],
)
def test_quantized_model_round_trip(build, inputs, head, tmp_path):
    model = randomize_weights(build())
    model.quantize("int8")
    paths = quantized_paths(model)
    assert any(path.endswith("block_0/qkv") for path in paths), paths
    assert head is None or head in paths
    loaded = run_model_saving_test(model, inputs(), tmp_path)
    assert quantized_paths(loaded) == paths


def test_quantized_pretrainer_round_trip(tmp_path):
    pretrainer = randomize_weights(
        TRIPSPretrainer(TRIPSBackbone(**MICRO), embedding_dim=16)
    )
    pretrainer.quantize("int8")
    paths = quantized_paths(pretrainer)
    assert {"itm_head", "text_projection", "vision_projection"} <= set(paths)
    path = str(tmp_path / "pretrainer.keras")
    pretrainer.save(path)
    loaded = keras.saving.load_model(path)
    assert quantized_paths(loaded) == paths
    for saved, restored in zip(pretrainer.weights, loaded.weights, strict=True):
        assert saved.path == restored.path
        np.testing.assert_array_equal(numpy(saved.value), numpy(restored.value))

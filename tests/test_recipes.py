"""The recipes end to end on the micro configuration and tiny scenes."""

import importlib.util
import json
import os
import pathlib

import keras
import numpy as np
import pytest
from pretraining_utils import MICRO

RECIPES = pathlib.Path(__file__).resolve().parents[1] / "recipes"
# The micro model on the tokenizer's vocabulary (the data's token ids).
MICRO_OVERRIDES = {
    key: value
    for key, value in MICRO.items()
    if key not in ("vocabulary_size", "image_shape", "keep_rate", "dropout")
}


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def micro_arguments(output_dir, *extra):
    return [
        "--model=tiny",
        f"--backbone-overrides={json.dumps(MICRO_OVERRIDES)}",
        "--embedding-dim=16",
        "--dropout=0",
        "--keep-rate=0.5",
        "--num-scenes=64",
        "--image-size=32",
        "--batch-size=8",
        "--warmup-steps=2",
        f"--output-dir={output_dir}",
        *extra,
    ]


@pytest.fixture(autouse=True)
def scenes_cache(monkeypatch, tmp_path_factory):
    # One tiny generated dataset for the whole session.
    cache = os.environ.get("KERAS_TRIPS_TEST_CACHE") or str(
        tmp_path_factory.getbasetemp().parent / "keras_trips_cache"
    )
    monkeypatch.setenv("KERAS_TRIPS_CACHE", cache)


class Interrupt(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Raises after a given number of batches, as a kill would stop a run."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.batches:
            raise Interrupt()


def optimizer_state(model):
    return [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]


def model_state(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def test_pretraining_resumes_where_it_was_killed(tmp_path):
    pretrain = load_recipe("pretrain")
    # 64 scenes / 8 = 8 batches a pass; epochs of 5: the kill at batch 7 is
    # mid-epoch, past the checkpoint at 6, and the run crosses a data pass.
    common = ["--steps=10", "--steps-per-epoch=5", "--checkpoint-every=3"]
    straight = pretrain.main(micro_arguments(tmp_path / "straight", *common))

    with pytest.raises(Interrupt):
        pretrain.main(
            micro_arguments(tmp_path / "killed", *common),
            extra_callbacks=[InterruptAt(7)],
        )
    checkpoints = sorted(os.listdir(tmp_path / "killed" / "checkpoints"))
    assert checkpoints[-1] == "step-000000006.weights.h5"
    resumed = pretrain.main(micro_arguments(tmp_path / "killed", *common))

    assert resumed["timing"]["start_step"] == 6
    assert resumed["timing"]["steps"] == 4
    for run in (straight, resumed):
        assert int(keras.ops.convert_to_numpy(run["model"].optimizer.iterations)) == 10
    for expected, actual in zip(
        optimizer_state(straight["model"]), optimizer_state(resumed["model"])
    ):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)
    for expected, actual in zip(
        model_state(straight["model"]), model_state(resumed["model"])
    ):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)
    # The per-step log runs on from the checkpoint, the epochs stay aligned.
    history = (tmp_path / "killed" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1"]
    for name in ("backbone.keras", "pretrainer.keras", "losses.png", "steps.csv"):
        assert (tmp_path / "killed" / name).is_file()
    for name in ("loss", "itc_loss", "itm_loss", "mlm_loss"):
        assert np.isfinite(resumed["final"][name])

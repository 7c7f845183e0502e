"""The recipes end to end on the micro configuration and tiny scenes."""

import contextlib
import importlib.util
import json
import os
import pathlib
import sys

import keras
import numpy as np
import pytest
from backend_utils import end_to_end
from pretraining_utils import MICRO

from keras_trips.models import TRIPSPretrainer

pytestmark = pytest.mark.usefixtures("scenes_cache")

RECIPES = pathlib.Path(__file__).resolve().parents[1] / "recipes"
# The micro model on the tokenizer's vocabulary (the data's token ids).
MICRO_OVERRIDES = {
    key: value
    for key, value in MICRO.items()
    if key not in ("vocabulary_size", "image_shape", "keep_rate", "dropout")
}


def load_recipe(name):
    # As when run as a script: the recipes import their shared front module.
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))
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
        "--num-eval-scenes=8",
        "--image-size=32",
        "--batch-size=8",
        "--warmup-steps=2",
        f"--output-dir={output_dir}",
        *extra,
    ]


@contextlib.contextmanager
def compiled_eagerly(eager=True):
    """While inside (and `eager`), `TRIPSPretrainer.compile` sets
    `run_eagerly=True`: a reference run of the same ops without tracing."""
    compile_traced = TRIPSPretrainer.compile
    if eager:
        TRIPSPretrainer.compile = lambda self, **kwargs: compile_traced(
            self, run_eagerly=True, **kwargs
        )
    try:
        yield
    finally:
        TRIPSPretrainer.compile = compile_traced


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


def training_state(model):
    """Every weight, optimizer variable and seed state: `(path, value)`."""
    variables = model.variables + model.optimizer.variables
    return [(v.path, keras.ops.convert_to_numpy(v)) for v in variables]


def test_pretraining_resumes_where_it_was_killed(tmp_path):
    pretrain = load_recipe("pretrain")
    # 64 scenes / 8 = 8 batches a pass; epochs of 5: the kill at batch 7 is
    # mid-epoch, past the checkpoint at 6, the run crosses a data pass, and
    # the resumed run starts a new epoch at 10 (torch's fit draws between
    # epochs). Dropout on: its random state must resume too.
    common = [
        "--steps=12",
        "--steps-per-epoch=5",
        "--checkpoint-every=3",
        "--dropout=0.1",
        "--skip-evaluation",
    ]
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
    assert resumed["timing"]["steps"] == 6
    for run in (straight, resumed):
        assert int(keras.ops.convert_to_numpy(run["model"].optimizer.iterations)) == 12
    expected = training_state(straight["model"])
    actual = training_state(resumed["model"])
    assert len(actual) == len(expected)
    for (path, value), (_, resumed_value) in zip(expected, actual):
        np.testing.assert_allclose(
            resumed_value, value, rtol=1e-4, atol=1e-6, err_msg=path
        )
    # The per-step log runs on from the checkpoint, the epochs stay aligned.
    history = (tmp_path / "killed" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1", "2"]
    for name in ("backbone.keras", "pretrainer.keras", "losses.png", "steps.csv"):
        assert (tmp_path / "killed" / name).is_file()
    preset = tmp_path / "killed" / "preset"
    assert {"task.weights.h5", "preprocessor.json"} <= set(os.listdir(preset))
    for name in ("loss", "itc_loss", "itm_loss", "mlm_loss"):
        assert np.isfinite(resumed["final"][name])


@end_to_end
def test_retrieval_finetuning_reports_recall(tmp_path):
    finetune = load_recipe("finetune_retrieval")
    result = finetune.main(
        micro_arguments(tmp_path, "--steps=2", "--k-test=4", "--checkpoint-every=2")
    )
    assert result["timing"]["steps"] == 2
    assert set(result["recall"]) >= {"image_to_text_r1", "text_to_image_r10"}
    assert all(0.0 <= value <= 1.0 for value in result["recall"].values())
    assert os.path.isfile(result["files"]["pretrainer"])

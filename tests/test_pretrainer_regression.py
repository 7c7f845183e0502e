"""The pretrainer's losses and accuracies, pinned to float precision.

`data/pretrainer_regression.json` holds, per backend, every loss and accuracy
the pretrainer computed on a fixed micro batch (before training, after each of
3 training steps, and on another batch after them), with and without the
momentum model, as the code computed them when the file was recorded. A change
of the pretrainer's code that keeps its behaviour keeps these numbers.

`data/legacy_pretrainer.keras` is a pretrainer (momentum model on, after those
3 steps, saved under TensorFlow) of the first `.keras` layout, whose variable
paths differ from today's: it converts and loads with the outputs it had
then, kept in the same file as `"legacy_file"`.

Record anew (only when the behaviour changes on purpose) with
`KERAS_BACKEND=<backend> python tests/test_pretrainer_regression.py`. (Recorded
again when the ViT blocks' query, key and value projections became one fused
projection, whose initialisation draws differ.)
"""

import json
import os
import sys

import keras
import numpy as np
import pytest
from pretraining_utils import MICRO, pretraining_batch

from keras_trips.models import (
    TRIPSBackbone,
    TRIPSPretrainer,
    convert_legacy_pretrainer,
)

BACKEND = keras.backend.backend()
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
EXPECTED_PATH = os.path.join(DATA, "pretrainer_regression.json")
LEGACY_PATH = os.path.join(DATA, "legacy_pretrainer.keras")
CASES = {
    "plain": dict(),
    "momentum": dict(use_momentum=True, momentum=0.9, queue_size=6),
}
STEPS = 3
RTOL = 1e-5
# The hard negatives are random draws, whose generator differs by backend.
BACKEND_RANDOM_OUTPUTS = ("itm_loss", "itm_accuracy")


def floats(outputs):
    return {name: float(keras.ops.convert_to_numpy(v)) for name, v in outputs.items()}


def build(case):
    keras.utils.set_random_seed(0)
    return TRIPSPretrainer(TRIPSBackbone(**MICRO), embedding_dim=16, **CASES[case])


def regression_values(pretrainer):
    """Outputs on the batch, the logs of `STEPS` training steps, and the
    outputs on another batch after them."""
    batch = pretraining_batch()
    values = {"before": floats(pretrainer(batch, training=False))}
    # Under TensorFlow the steps run eagerly: the same ops without tracing
    # (seconds per case); JAX and torch run them as `fit` would (JAX
    # compiled: op by op it takes four times as long).
    pretrainer.compile(learning_rate=1e-3, run_eagerly=BACKEND == "tensorflow")
    for step in range(STEPS):
        values[f"step_{step}"] = floats(
            pretrainer.train_on_batch(batch, return_dict=True)
        )
    values["after"] = floats(pretrainer(pretraining_batch(seed=1), training=False))
    return values


def assert_close(actual, expected, skip=(), rtol=RTOL):
    for stage, outputs in expected.items():
        # Every recorded value is still there (diagnostics may be added).
        assert set(outputs) <= set(actual[stage]), stage
        for name, value in outputs.items():
            if name not in skip:
                np.testing.assert_allclose(
                    actual[stage][name], value, rtol=rtol, err_msg=f"{stage} {name}"
                )


@pytest.mark.parametrize("case", sorted(CASES))
def test_losses_and_accuracies_are_those_recorded(case):
    with open(EXPECTED_PATH) as file:
        expected = json.load(file)[BACKEND][case]
    assert_close(regression_values(build(case)), expected)


def test_keras_file_of_the_first_layout_says_how_to_convert_then_loads(tmp_path):
    with pytest.raises(
        ValueError, match=r"convert_legacy_pretrainer\(path, new_path\)"
    ):
        keras.saving.load_model(LEGACY_PATH)
    converted = str(tmp_path / "pretrainer.keras")
    convert_legacy_pretrainer(LEGACY_PATH, converted)
    pretrainer = keras.saving.load_model(converted)
    with open(EXPECTED_PATH) as file:
        expected = json.load(file)["legacy_file"]
    actual = floats(pretrainer(pretraining_batch(seed=1), training=False))
    skip = () if BACKEND == "tensorflow" else BACKEND_RANDOM_OUTPUTS
    # Its three query/key/value kernels load into today's fused projection,
    # which sums in another order.
    assert_close({"after": actual}, {"after": expected}, skip, rtol=1e-4)
    with pytest.raises(ValueError, match="today's layout already"):
        convert_legacy_pretrainer(converted, str(tmp_path / "again.keras"))


def record():
    """Writes this backend's values."""
    expected = {}
    if os.path.isfile(EXPECTED_PATH):
        with open(EXPECTED_PATH) as file:
            expected = json.load(file)
    expected[BACKEND] = {}
    for case in sorted(CASES):
        expected[BACKEND][case] = regression_values(build(case))
    with open(EXPECTED_PATH, "w") as file:
        json.dump(expected, file, indent=1, sort_keys=True)
        file.write("\n")


if __name__ == "__main__":
    sys.exit(record())

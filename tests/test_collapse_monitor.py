import math
import warnings

import numpy as np
import pytest
from backend_utils import backend_independent

from keras_trips.callbacks import CollapseMonitor

pytestmark = backend_independent

# ln(8) = 2.0794...
CHANCE_8 = math.log(8)


def warnings_of(monitor, steps):
    """Drives `on_train_batch_end` with each logs dict of `steps`; returns the
    messages warned at each step (every warning shown, none deduplicated)."""
    warned = []
    for batch, logs in enumerate(steps):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monitor.on_train_batch_end(batch, logs)
        warned.append([str(w.message) for w in caught])
    return warned


def test_prints_the_chance_level(capsys):
    monitor = CollapseMonitor(num_candidates=32)
    monitor.on_train_begin()
    assert monitor.chance == pytest.approx(3.4657359)
    assert "ln(32) = 3.466" in capsys.readouterr().out
    CollapseMonitor(num_candidates=32, verbose=False).on_train_begin()
    assert capsys.readouterr().out == ""


def test_stall_is_warned_once_after_patience():
    monitor = CollapseMonitor(num_candidates=8, patience=3, tolerance=0.02)
    at_chance = {"itc_loss": np.float32(0.99 * CHANCE_8)}
    warned = warnings_of(monitor, [at_chance] * 6)
    # Steps 1 and 2 are before patience; step 3 warns; later steps repeat it.
    assert [len(w) for w in warned] == [0, 0, 1, 0, 0, 0]
    assert "after 3 steps" in warned[2][0]
    assert "ln(8) = 2.0794" in warned[2][0]


def test_stall_counts_steps_without_itc_loss():
    monitor = CollapseMonitor(num_candidates=8, patience=3)
    warned = warnings_of(monitor, [None, {}, {"itc_loss": CHANCE_8}])
    assert [len(w) for w in warned] == [0, 0, 1]


def test_loss_above_chance_counts_as_stalled():
    monitor = CollapseMonitor(num_candidates=8, patience=1)
    (warned,) = warnings_of(monitor, [{"itc_loss": 1.5 * CHANCE_8}])
    assert len(warned) == 1 and "itc_loss is 3.1192" in warned[0]


def test_no_stall_below_the_tolerance():
    # Stalled means itc_loss > chance * (1 - tolerance) = 0.98 * chance.
    steps = [{"itc_loss": 0.97 * CHANCE_8}] * 5 + [{"itc_loss": 0.5}] * 5
    monitor = CollapseMonitor(num_candidates=8, patience=2, tolerance=0.02)
    assert warnings_of(monitor, steps) == [[]] * 10
    # A wider tolerance counts 0.97 * chance as at chance.
    monitor = CollapseMonitor(num_candidates=8, patience=2, tolerance=0.05)
    warned = warnings_of(monitor, steps)
    assert [len(w) for w in warned] == [0, 1] + [0] * 8


def test_each_collapse_is_warned_once():
    monitor = CollapseMonitor(num_candidates=8, max_similarity=0.98)
    steps = [
        {"image_similarity": 0.97, "text_similarity": 0.5},
        {"image_similarity": 0.99, "text_similarity": 0.5},
        {"image_similarity": 0.995, "text_similarity": 0.5},
        {"image_similarity": 0.99, "text_similarity": np.float32(0.999)},
        {"image_similarity": 0.99, "text_similarity": 0.999},
    ]
    warned = warnings_of(monitor, steps)
    assert [len(w) for w in warned] == [0, 1, 0, 1, 0]
    assert "image embeddings have collapsed" in warned[1][0]
    assert "cosine is 0.9900 (above 0.98) after 2 steps" in warned[1][0]
    assert "text embeddings have collapsed" in warned[3][0]
    assert monitor.reported == {"image_similarity", "text_similarity"}


def test_all_symptoms_of_one_step_are_warned():
    monitor = CollapseMonitor(num_candidates=8, patience=1)
    logs = {"itc_loss": CHANCE_8, "image_similarity": 1.0, "text_similarity": 1.0}
    (warned,) = warnings_of(monitor, [logs])
    assert len(warned) == 3
    assert "chance level" in warned[0]
    assert "image embeddings" in warned[1] and "text embeddings" in warned[2]


def test_warns_as_a_user_warning():
    monitor = CollapseMonitor(num_candidates=4, patience=1)
    with pytest.warns(UserWarning, match=r"chance level ln\(4\)"):
        monitor.on_train_batch_end(0, {"itc_loss": math.log(4)})


@pytest.mark.parametrize("num_candidates", [1, 0])
def test_fewer_than_two_candidates_is_an_error(num_candidates):
    with pytest.raises(ValueError, match="`num_candidates` must be at least 2"):
        CollapseMonitor(num_candidates=num_candidates)

import numpy as np
import pytest
from harness import run_model_saving_test, run_serialization_test
from pretraining_utils import MICRO
from task_utils import (
    BATCH,
    assert_keep_rate_changes_at_inference,
    fit_one_batch,
    task_features,
)

from keras_trips.models import TRIPSVQA, TRIPSBackbone

ANSWERS = ["yes", "no", "2", "red"]


def vqa_model():
    return TRIPSVQA(TRIPSBackbone(**MICRO), answers=ANSWERS)


def test_overfits_a_batch_to_full_vqa_accuracy(tmp_path):
    model = vqa_model()
    model.compile(learning_rate=1e-3)
    x = task_features()
    # Soft scores: the right answer 1.0, a partly right one 0.3.
    targets = np.eye(4, dtype="float32")[np.arange(BATCH) % 4]
    targets[:, 0] = np.maximum(targets[:, 0], 0.3)
    after = fit_one_batch(model, x, targets, steps=60)
    assert after["vqa_accuracy"] == 1.0
    assert model.predict_answers(x) == ANSWERS * 2
    run_serialization_test(model)
    loaded = run_model_saving_test(model, x, tmp_path)
    assert loaded.answers == ANSWERS
    # The compiled loss and metric come back too.
    assert loaded.evaluate(x, targets, verbose=0, return_dict=True) == pytest.approx(
        after
    )


def test_keep_rate_changes_at_inference():
    model = vqa_model()
    model.compile()
    assert_keep_rate_changes_at_inference(model, task_features())


def test_bad_answer_vocabularies_are_rejected():
    backbone = TRIPSBackbone(**MICRO)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        TRIPSVQA(backbone, answers=[])
    with pytest.raises(ValueError, match="repeats an answer"):
        TRIPSVQA(backbone, answers=["yes", "yes"])

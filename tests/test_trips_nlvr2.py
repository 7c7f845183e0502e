import numpy as np
import pytest
from harness import numpy, run_model_saving_test, run_serialization_test
from pretraining_utils import MICRO
from task_utils import (
    BATCH,
    fit_one_batch,
    task_features,
)

from keras_trips.models import TRIPSNLVR2, TRIPSBackbone


def test_overfits_a_batch(tmp_path):
    model = TRIPSNLVR2(TRIPSBackbone(**MICRO))
    model.compile(learning_rate=1e-3)
    x = task_features(pairs=True)
    labels = (np.arange(BATCH) % 2).astype("int32")
    after = fit_one_batch(model, x, labels, steps=40)
    assert after["accuracy"] == 1.0
    run_serialization_test(model)
    run_model_saving_test(model, x, tmp_path)


def test_each_image_is_encoded_under_the_statement():
    model = TRIPSNLVR2(TRIPSBackbone(**MICRO))
    x = task_features(pairs=True)
    logits = numpy(model(x))
    # Left and right are told apart, and the statement matters.
    swapped = {**x, "images": x["images"][:, ::-1]}
    assert not np.allclose(logits, numpy(model(swapped)))
    other = {**x, "token_ids": task_features(seed=1)["token_ids"]}
    assert not np.allclose(logits, numpy(model(other)))
    # Each pair is classified on its own: a batch of one gives the same.
    first = {name: value[:1] for name, value in x.items()}
    np.testing.assert_allclose(numpy(model(first)), logits[:1], atol=1e-5)


def test_one_image_per_statement_is_rejected():
    model = TRIPSNLVR2(TRIPSBackbone(**MICRO))
    with pytest.raises(ValueError, match="image pairs of shape"):
        model(task_features())

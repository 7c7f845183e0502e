"""Batches and helpers for the task model tests (MICRO configuration)."""

import numpy as np
import tensorflow as tf
from harness import numpy
from pretraining_utils import MICRO

BATCH = 8
# Micro vocabulary: 1 is [CLS], 2 ends a text; the captioning prompt "[CLS] 7".
END = 2
PROMPT = (1, 7)


def task_features(batch=BATCH, pairs=False, seed=0):
    """Random images and distinct texts `[CLS] w1 .. w4 [END] [PAD] ...`."""
    rng = np.random.default_rng(seed)
    token_ids = np.zeros((batch, MICRO["max_sequence_length"]), "int32")
    token_ids[:, 0] = 1
    token_ids[:, 1:5] = rng.integers(10, 100, (batch, 4))
    token_ids[:, 5] = END
    shape = (batch, 2, 32, 32, 3) if pairs else (batch, 32, 32, 3)
    return {
        "images": rng.uniform(size=shape).astype("float32"),
        "token_ids": token_ids,
        "padding_mask": token_ids != 0,
    }


def fit_one_batch(model, x, y, steps):
    """`fit` on a `tf.data.Dataset` repeating one batch; returns `evaluate`."""
    dataset = tf.data.Dataset.from_tensors(x if y is None else (x, y))
    model.fit(dataset.repeat(steps), verbose=0, shuffle=False)
    return model.evaluate(dataset, verbose=0, return_dict=True)


def assert_keep_rate_changes_at_inference(model, x):
    """`keep_rate=` per call and `set_keep_rate` for predict agree."""
    default = model.predict(x, verbose=0)
    full = numpy(model(x, keep_rate=1.0))
    assert not np.allclose(default, full)
    model.set_keep_rate(1.0)
    np.testing.assert_allclose(model.predict(x, verbose=0), full, atol=1e-5)
    model.set_keep_rate(0.5)
    np.testing.assert_allclose(model.predict(x, verbose=0), default, atol=1e-5)

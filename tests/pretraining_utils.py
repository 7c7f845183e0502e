"""A micro TRIPS configuration and a synthetic pre-training batch for tests."""

import numpy as np

from keras_trips.models import TRIPSBackbone

# The "micro" preset on a 100-word vocabulary and 8-token texts.
MICRO = {
    **TRIPSBackbone.presets["micro"],
    "vocabulary_size": 100,
    "max_sequence_length": 8,
}


def pretraining_batch(batch_size=4, seed=0):
    """The `keras_trips.data` pre-training format: positions 1-2 masked."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(5, 100, (batch_size, 8)).astype("int32")
    token_ids[:, 0] = 1
    token_ids[:, 6:] = 0
    masked = token_ids.copy()
    masked[:, 1:3] = 3
    return {
        "images": rng.uniform(size=(batch_size, 32, 32, 3)).astype("float32"),
        "token_ids": token_ids,
        "padding_mask": (token_ids != 0).astype("int32"),
        "masked_token_ids": masked,
        "mask_positions": np.array([[1, 2]] * batch_size, "int32"),
        "mask_ids": token_ids[:, 1:3].copy(),
        "mask_weights": np.ones((batch_size, 2), "float32"),
    }

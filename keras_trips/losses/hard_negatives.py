"""ITM's hard negatives: sampled in proportion to the ITC similarity."""

import keras
from keras import ops


def sample_hard_negatives(sim_i2t, sim_t2i, seed=None):
    """Per image a negative text, per text a negative image, `(B,)` each.

    Drawn in proportion to the softmax similarity, the positive (the
    diagonal) masked out, as ALBEF samples them.

    Args:
        sim_i2t, sim_t2i: `(B, B)` image-to-text and text-to-image
            similarities of a batch (no gradient flows through them).
        seed: a `keras.random.SeedGenerator` (or int) for the draws.
    """
    batch = ops.shape(sim_i2t)[0]
    positive = ops.cast(ops.eye(batch), "bool")

    def draw(similarity):
        similarity = ops.stop_gradient(ops.convert_to_tensor(similarity))
        logits = ops.where(positive, -1e9, similarity)
        return keras.random.categorical(logits, 1, seed=seed, dtype="int32")[:, 0]

    return draw(sim_i2t), draw(sim_t2i)

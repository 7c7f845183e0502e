"""ITM's negatives: hard ones sampled in proportion to the ITC similarity,
or random ones."""

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


def sample_random_negatives(rows, global_batch_size, seed=None):
    """Per row a negative text and a negative image, `(B,)` each: uniform
    draws among the other rows of the global batch.

    Args:
        rows: `(B,)` int, each pair's row in the global batch.
        global_batch_size: int. Rows the negatives are drawn from.
        seed: a `keras.random.SeedGenerator` (or int) for the draws.
    """

    rows = ops.cast(rows, "int32")

    def draw():
        # An offset in [1, size) never lands on the pair's own row. Drawn
        # for the whole global batch and taken at `rows`, so that replicas
        # (which share the seed) draw what one device would.
        offsets = keras.random.randint(
            (global_batch_size,), 1, global_batch_size, dtype="int32", seed=seed
        )
        return (rows + ops.take(offsets, rows)) % global_batch_size

    return draw(), draw()

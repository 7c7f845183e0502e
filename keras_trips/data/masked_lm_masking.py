"""BERT's masked-language-model masking, drawn from one stateless seed per row.

keras-hub's `MaskedLMMaskGenerator` draws with stateful TensorFlow random
ops, whose state a resumed run cannot restore. Here each caption's masking
is a pure function of its tokens and its seed, so the data pipeline (which
derives the seeds from its own) masks a resumed run as the uninterrupted one.
The statistics are keras-hub's: every selectable token is selected with
probability `selection_rate` (at most `selection_length` per row, a random
subset when more are drawn); a selected token becomes `[MASK]` with
probability `mask_token_rate`, a uniformly random id with probability
`random_token_rate`, and stays unchanged otherwise.
"""

import tensorflow as tf


def stateless_masked_lm(
    token_ids,
    seeds,
    selection_rate,
    selection_length,
    unselectable_ids,
    mask_token_id,
    vocabulary_size,
    mask_token_rate=0.8,
    random_token_rate=0.1,
):
    """Mask a batch of packed token ids for MLM.

    Args:
        token_ids: int32 `(B, L)` packed token ids.
        seeds: int `(B, 2)` stateless seeds, one per row.
        selection_rate: float. Probability that a selectable token is selected.
        selection_length: int. The most selections per row (P).
        unselectable_ids: list of int. Ids never selected (`[CLS]`, `[PAD]`...).
        mask_token_id: int. The `[MASK]` id.
        vocabulary_size: int. Random replacements are drawn from `[0, V)`.
        mask_token_rate: float. Share of the selections set to `[MASK]`.
        random_token_rate: float. Share set to a random id.

    Returns:
        A dict of `"masked_token_ids"` int32 `(B, L)`, and int32
        `"mask_positions"`, int32 `"mask_ids"` (the original ids) and float32
        `"mask_weights"` (0 on padding), each `(B, P)`, positions ascending.
    """
    token_ids = tf.convert_to_tensor(token_ids, tf.int32)
    length = tf.shape(token_ids)[1]
    # (B, 3, L): selection, replacement kind, random id.
    draws = tf.map_fn(
        lambda seed: tf.random.stateless_uniform(tf.stack([3, length]), seed),
        tf.cast(seeds, tf.int32),
        fn_output_signature=tf.float32,
    )
    selectable = tf.reduce_all(
        token_ids[..., None] != tf.constant(unselectable_ids, tf.int32), axis=-1
    )
    drawn = selectable & (draws[:, 0] < selection_rate)
    # Past P selections, keep the P with the lowest draws: a random subset.
    priority = tf.where(drawn, draws[:, 0], 2.0)
    rank = tf.argsort(tf.argsort(priority, axis=1, stable=True), axis=1)
    selected = drawn & (rank < selection_length)

    random_ids = tf.cast(draws[:, 2] * vocabulary_size, tf.int32)
    replacement = tf.where(
        draws[:, 1] < mask_token_rate,
        mask_token_id,
        tf.where(
            draws[:, 1] < mask_token_rate + random_token_rate, random_ids, token_ids
        ),
    )
    positions = tf.ragged.boolean_mask(
        tf.broadcast_to(tf.range(length), tf.shape(token_ids)), selected
    )
    dense_shape = [None, selection_length]
    return {
        "masked_token_ids": tf.where(selected, replacement, token_ids),
        "mask_positions": positions.to_tensor(shape=dense_shape),
        "mask_ids": tf.ragged.boolean_mask(token_ids, selected).to_tensor(
            shape=dense_shape
        ),
        "mask_weights": tf.ones_like(positions, tf.float32).to_tensor(
            shape=dense_shape
        ),
    }

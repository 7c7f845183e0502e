"""ITM: a binary match head over positives and hard negatives (ALBEF)."""

import keras
from keras import ops


def hard_negative_triples(
    text, image, padding_mask, batch, negative_text, negative_image
):
    """The ITM pairs of a batch: its B positives, then B (image, negative
    text) pairs, then B (negative image, text) pairs; and their labels.

    The negatives reuse the batch's text states and image tokens (one vision
    pass per pair, docs/method.md).

    Args:
        text, image, padding_mask: this batch's text states `(B, L, D)`,
            image tokens `(B, T, D)` and padding mask `(B, L)`.
        batch: dict of the same three, `"text"`, `"image"`, `"padding_mask"`,
            over the rows the negatives are drawn from (the global batch).
        negative_text, negative_image: `(B,)` rows of `batch`.

    Returns:
        `(texts, images, padding_masks, labels)` of the 3B pairs; labels are
        1 for a match.
    """
    padding_mask = ops.cast(padding_mask, "bool")
    negative_masks = ops.cast(
        ops.take(batch["padding_mask"], negative_text, axis=0), "bool"
    )
    texts = ops.concatenate(
        [text, ops.take(batch["text"], negative_text, axis=0), text], axis=0
    )
    images = ops.concatenate(
        [image, image, ops.take(batch["image"], negative_image, axis=0)], axis=0
    )
    masks = ops.concatenate([padding_mask, negative_masks, padding_mask], axis=0)
    ones = ops.ones_like(negative_text)
    labels = ops.concatenate([ones, ops.zeros_like(ones), ops.zeros_like(ones)])
    return texts, images, masks, labels


def image_text_matching_loss(logits, labels):
    """Per-pair ITM cross-entropy and correctness.

    Args:
        logits: `(N, 2)` the match head's logits; column 1 is "match".
        labels: `(N,)` 1 for a match, 0 for a negative.

    Returns:
        `(loss, correct)`, `(N,)` each.
    """
    loss = keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True
    )
    return loss, ops.argmax(logits, axis=-1) == labels

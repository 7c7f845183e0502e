"""MLM with the momentum model's predictions as soft targets (ALBEF)."""

import keras
from keras import ops


def masked_lm_loss(logits, mask_ids, soft_target_logits=None, distillation_alpha=0.4):
    """Per-slot MLM loss and correctness.

    With the momentum model's logits, the target mixes the true token with
    its prediction: `(1 - alpha) * CE(true) + alpha * CE(softmax(momentum))`.

    Args:
        logits: `(B, P, V)` float32, the MLM head's at the prediction slots.
        mask_ids: `(B, P)` the true tokens.
        soft_target_logits: None, or the momentum model's `(B, P, V)` logits.
        distillation_alpha: float. Weight of the soft targets.

    Returns:
        `(loss, correct)`, `(B, P)` each; weigh them by `mask_weights`.
    """
    loss = keras.losses.sparse_categorical_crossentropy(
        mask_ids, logits, from_logits=True
    )
    if soft_target_logits is not None:
        soft_targets = ops.softmax(soft_target_logits)
        distillation = -ops.sum(soft_targets * ops.log_softmax(logits), axis=-1)
        alpha = distillation_alpha
        loss = (1 - alpha) * loss + alpha * distillation
    return loss, ops.argmax(logits, axis=-1) == ops.cast(mask_ids, "int32")

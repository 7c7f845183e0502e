"""ITC: symmetric InfoNCE over the batch (and the queues), as in ALBEF."""

from keras import ops

EMBEDDING_POOLINGS = ("cls", "mean")


def contrastive_embedding(projection, sequence, padding_mask=None, pooling="cls"):
    """The L2-normalised ITC embedding `(B, E)` of an encoder's output.

    Args:
        projection: the tower's ITC projection (a `Dense` layer).
        sequence: `(B, L, D)` encoder output; `[:, 0]` is its [CLS].
        padding_mask: None, or `(B, L)` with 1 on the real tokens.
        pooling: `"cls"` (the [CLS] state, as ALBEF) or `"mean"` (the mean
            of the other tokens: image patches, kept and fused, or the real
            text tokens). A freshly initialised encoder's [CLS] barely
            depends on its input; the mean does from the first step.
    """
    if pooling == "cls":
        pooled = sequence[:, 0]
    else:
        weights = ops.ones(ops.shape(sequence)[:2], sequence.dtype)
        if padding_mask is not None:
            weights = ops.cast(padding_mask, sequence.dtype)
        weights = weights[:, 1:, None]
        pooled = ops.divide(
            ops.sum(ops.multiply(sequence[:, 1:], weights), axis=1),
            ops.maximum(ops.sum(weights, axis=1), 1.0),
        )
    embedding = ops.cast(projection(pooled), "float32")
    return embedding / (ops.norm(embedding, axis=-1, keepdims=True) + 1e-12)


def mean_pairwise_similarity(embeddings):
    """Per row, the mean cosine `(B,)` of its L2-normalised embedding with
    the other rows': near 1 when every input maps to one point (collapse)."""
    batch = ops.cast(ops.shape(embeddings)[0], embeddings.dtype)
    total = ops.sum(embeddings, axis=0, keepdims=True)
    return (ops.sum(embeddings * total, axis=-1) - 1.0) / ops.maximum(batch - 1, 1)


def image_text_contrastive_loss(
    image_embeddings,
    text_embeddings,
    image_keys,
    text_keys,
    positives,
    temperature,
    momentum_embeddings=None,
    distillation_alpha=0.4,
):
    """Per-pair ITC loss: image-to-text and text-to-image InfoNCE, averaged.

    Each image is contrasted with every text key, each text with every image
    key; key `positives[i]` is pair i's own. With the momentum model, the
    one-hot targets are mixed with its similarity distribution (ALBEF's
    momentum distillation): `alpha * softmax(s_m / t) + (1 - alpha) * onehot`.

    Args:
        image_embeddings, text_embeddings: `(B, E)` L2-normalised.
        image_keys, text_keys: `(K, E)`: the global batch's embeddings (the
            momentum model's when it is on), then the queue.
        positives: `(B,)` int, the key index of each pair.
        temperature: scalar.
        momentum_embeddings: None, or the momentum model's `(image, text)`
            embeddings of the pairs, `(B, E)` each.
        distillation_alpha: float. Weight of the momentum targets.

    Returns:
        `(loss, sim_i2t, sim_t2i)`: the per-pair loss `(B,)` and the
        similarities `(B, K)` (divided by the temperature).
    """
    targets = ops.one_hot(positives, ops.shape(text_keys)[0])
    targets_i2t = targets_t2i = targets
    if momentum_embeddings is not None:
        image_m, text_m = momentum_embeddings
        sim_i2t_m = ops.matmul(image_m, ops.transpose(text_keys)) / temperature
        sim_t2i_m = ops.matmul(text_m, ops.transpose(image_keys)) / temperature
        alpha = distillation_alpha
        targets_i2t = alpha * ops.softmax(sim_i2t_m) + (1 - alpha) * targets
        targets_t2i = alpha * ops.softmax(sim_t2i_m) + (1 - alpha) * targets
    sim_i2t = ops.matmul(image_embeddings, ops.transpose(text_keys)) / temperature
    sim_t2i = ops.matmul(text_embeddings, ops.transpose(image_keys)) / temperature
    loss_i2t = -ops.sum(ops.log_softmax(sim_i2t) * targets_i2t, axis=-1)
    loss_t2i = -ops.sum(ops.log_softmax(sim_t2i) * targets_t2i, axis=-1)
    return (loss_i2t + loss_t2i) / 2, sim_i2t, sim_t2i

import math

import keras
from keras import ops

from keras_trips.layers.input_checks import check_batch_sizes, check_dtype


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSPatchSelection(keras.layers.Layer):
    """Text-relevant image patch selection (TRIPS, EMNLP 2022).

    Scores the N image tokens of a ViT sequence by the attention a guidance
    query pays them, keeps the `k = ceil(keep_rate * N)` most attended ones in
    their original order, and fuses the rest into one token weighted by their
    scores. Token 0, the image [CLS], is always kept and never scored. With
    the text [CLS] as query (projected by the ViT block's own query
    projection) this is TRIPS; with the image [CLS] it is EViT. The layer has
    no weights: gradient reaches the query through the fusion weights only.

    Scores: the width D is split into `num_heads` heads; per head a softmax
    over the N non-[CLS] tokens of `q . k / sqrt(D / num_heads)`; then the
    mean over heads and over queries.

    Args:
        keep_rate: float in (0, 1]. Fraction of the N image tokens kept.
            `1.0` (or any rate that keeps all N) returns the tokens unchanged.
        num_heads: int. Heads the scores are computed in (the block's
            attention heads, so that scores match its attention map).
        fuse_inattentive: bool. Whether to append the fused token made of the
            tokens not kept. Without it they are dropped.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        tokens: `(B, 1 + N, D)` sequence, image [CLS] first.
        query: `None` to use `tokens[:, 0]`; `(B, D)` one guidance vector; or
            `(B, Q, D)` several, whose score distributions are averaged
            (text + image guidance).
        keys: `(B, 1 + N, D)` keys the query is matched against (the block's
            projected keys). `None` uses `tokens`.
        return_indices: bool. Also return the kept indices `(B, k)`, int32,
            ascending into the N image tokens, and the scores `(B, N)`: the
            attention scores at every keep rate, 1.0 included (where the
            tokens pass unchanged).

    Returns:
        `(B, 1 + k + 1, D)` tokens `[cls, kept..., fused]` (no fused token
        without `fuse_inattentive`), or `(tokens, indices, scores)`.

    Example:
    ```python
    tokens = keras.random.normal((2, 1 + 196, 768))
    text_query = keras.random.normal((2, 768))
    selection = keras_trips.layers.TRIPSPatchSelection(keep_rate=0.7, num_heads=12)
    selection(tokens, query=text_query).shape  # (2, 1 + 138 + 1, 768)
    ```
    """

    def __init__(self, keep_rate=0.7, num_heads=1, fuse_inattentive=True, **kwargs):
        super().__init__(**kwargs)
        self.keep_rate = validate_keep_rate(keep_rate)
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(
                f"`num_heads` must be a positive int. Received: {num_heads}"
            )
        self.num_heads = num_heads
        self.fuse_inattentive = bool(fuse_inattentive)
        self.supports_masking = False
        # No weights; built now, since vision blocks call `score`/`select`
        # rather than the layer, and an unbuilt layer makes Keras trace the
        # whole model again (under MirroredStrategy on an averaged batch).
        self.built = True

    def num_kept(self, num_tokens, keep_rate=None):
        """Returns k, the number of the `num_tokens` image tokens kept."""
        return kept_count(
            num_tokens, self.keep_rate if keep_rate is None else keep_rate
        )

    def selects(self, num_tokens, keep_rate=None):
        """Whether selection changes a sequence of `num_tokens` image tokens."""
        return self.num_kept(num_tokens, keep_rate) < num_tokens

    def output_length(self, num_tokens, keep_rate=None):
        """Sequence length, [CLS] included, after selecting from `num_tokens`."""
        if not self.selects(num_tokens, keep_rate):
            return 1 + num_tokens
        return 1 + self.num_kept(num_tokens, keep_rate) + int(self.fuse_inattentive)

    def _validate(self, tokens_shape, query_shape, keys_shape):
        if len(tokens_shape) != 3:
            raise ValueError(
                "`tokens` must have shape (batch, 1 + num_patches, width). "
                f"Received shape: {tokens_shape}"
            )
        length, width = tokens_shape[1], tokens_shape[2]
        if length is None or width is None:
            raise ValueError(
                "`tokens` needs a static sequence length and width, so that the "
                f"number of kept tokens is static. Received shape: {tokens_shape}"
            )
        if length < 3:
            raise ValueError(
                "`tokens` has too few image tokens to select from: it needs the "
                f"[CLS] token and at least 2 image tokens. Received shape: {tokens_shape}"
            )
        if width % self.num_heads:
            raise ValueError(
                f"The `tokens` width {width} is not divisible by num_heads="
                f"{self.num_heads}."
            )
        if keys_shape is not None and tuple(keys_shape[1:]) != tuple(tokens_shape[1:]):
            raise ValueError(
                "`keys` must have the shape of `tokens`. Received keys shape "
                f"{keys_shape} for tokens shape {tokens_shape}"
            )
        if query_shape is not None:
            if len(query_shape) not in (2, 3):
                raise ValueError(
                    "`query` must have shape (batch, width) or (batch, num_queries, "
                    f"width). Received shape: {query_shape}"
                )
            if query_shape[-1] != width:
                raise ValueError(
                    f"The `query` width {query_shape[-1]} does not match the token "
                    f"width {width}. Received query shape {query_shape}, tokens "
                    f"shape {tokens_shape}"
                )
        check_batch_sizes(tokens=tokens_shape, query=query_shape, keys=keys_shape)

    def score(self, query, keys):
        """Attention of the queries on the image tokens, `(B, N)`, sums to 1.

        `query` is `(B, Q, D)`, `keys` `(B, 1 + N, D)`.
        """
        # Softmax in float32 even under mixed precision: the scores rank tokens.
        query = ops.cast(query, "float32")
        keys = ops.cast(keys[:, 1:], "float32")
        _, num_queries, width = query.shape
        head_dim = width // self.num_heads
        query = ops.reshape(query, (-1, num_queries, self.num_heads, head_dim))
        keys = ops.reshape(keys, (-1, keys.shape[1], self.num_heads, head_dim))
        logits = ops.einsum("bqhd,bnhd->bqhn", query, keys) / math.sqrt(head_dim)
        return ops.mean(ops.softmax(logits, axis=-1), axis=(1, 2))

    def select(self, tokens, scores, keep_rate=None):
        """Keeps the top-k tokens by `scores`, fuses the rest.

        Returns `(tokens_out, indices)`.
        """
        num_tokens = tokens.shape[1] - 1
        k = self.num_kept(num_tokens, keep_rate)
        cls_token, patches = tokens[:, :1], tokens[:, 1:]
        # Stable descending sort: equal scores keep the lower index, on every
        # backend (top_k's tie order is backend-defined).
        order = ops.argsort(-scores, axis=-1)
        indices = ops.sort(order[:, :k], axis=-1)
        indices = ops.cast(indices, "int32")
        # Whole rows of the flattened batch: take_along_axis would broadcast
        # the indices over the width and, under TensorFlow, gather (and
        # scatter the gradient) element by element, about 3x slower.
        width = patches.shape[2]
        offsets = ops.arange(ops.shape(patches)[0], dtype="int32") * num_tokens
        kept = ops.take(
            ops.reshape(patches, (-1, width)), indices + offsets[:, None], axis=0
        )
        # A no-op, except for an empty batch, whose gather JAX flattens.
        kept = ops.reshape(kept, (-1, k, width))
        outputs = [cls_token, kept]
        if self.fuse_inattentive:
            kept_mask = ops.sum(ops.one_hot(indices, num_tokens, dtype=scores.dtype), 1)
            fusion_weights = ops.cast(scores * (1.0 - kept_mask), patches.dtype)
            fused = ops.einsum("bn,bnd->bd", fusion_weights, patches)
            outputs.append(fused[:, None, :])
        return ops.concatenate(outputs, axis=1), indices

    def call(self, tokens, query=None, keys=None, return_indices=False):
        self._validate(
            tokens.shape,
            None if query is None else query.shape,
            None if keys is None else keys.shape,
        )
        for name, x in (("tokens", tokens), ("query", query), ("keys", keys)):
            if x is not None:
                check_dtype(x, name, "float")
        num_tokens = tokens.shape[1] - 1
        selects = self.selects(num_tokens)
        if not selects and not return_indices:
            # The identity, free: no scores are asked for.
            return tokens
        query = tokens[:, 0] if query is None else query
        if len(query.shape) == 2:
            query = query[:, None, :]
        scores = self.score(query, tokens if keys is None else keys)
        if not selects:
            # Every token kept, and the true scores, to look at without pruning.
            batch = ops.shape(tokens)[0]
            indices = ops.tile(ops.arange(num_tokens, dtype="int32")[None], (batch, 1))
            return tokens, indices, scores
        outputs, indices = self.select(tokens, scores)
        if return_indices:
            return outputs, indices, scores
        return outputs

    def compute_output_shape(self, tokens_shape, query_shape=None, keys_shape=None):
        self._validate(tokens_shape, query_shape, keys_shape)
        return (
            tokens_shape[0],
            self.output_length(tokens_shape[1] - 1),
            tokens_shape[2],
        )

    def compute_output_spec(self, tokens, query=None, keys=None, return_indices=False):
        shape = self.compute_output_shape(
            tokens.shape,
            None if query is None else query.shape,
            None if keys is None else keys.shape,
        )
        outputs = keras.KerasTensor(shape, dtype=tokens.dtype)
        if not return_indices:
            return outputs
        num_tokens = tokens.shape[1] - 1
        k = self.num_kept(num_tokens) if self.selects(num_tokens) else num_tokens
        indices = keras.KerasTensor((tokens.shape[0], k), dtype="int32")
        scores = keras.KerasTensor((tokens.shape[0], num_tokens), dtype="float32")
        return outputs, indices, scores

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "keep_rate": self.keep_rate,
                "num_heads": self.num_heads,
                "fuse_inattentive": self.fuse_inattentive,
            }
        )
        return config


def kept_count(num_tokens, keep_rate):
    """k = min(N, ceil(keep_rate * N)) of `num_tokens` = N image tokens."""
    # round() first so that 0.7 * 10 is 7, not ceil(7.000000000000001) = 8;
    # at least 1, as ceil(rate * N) is for any rate in (0, 1].
    return min(num_tokens, max(1, math.ceil(round(keep_rate * num_tokens, 6))))


def validate_keep_rate(keep_rate):
    """Returns `keep_rate` as a float, or raises if it is not in (0, 1]."""
    try:
        value = float(keep_rate)
    except (TypeError, ValueError):
        raise ValueError(
            f"`keep_rate` must be a number in (0, 1]. Received: {keep_rate!r}"
        ) from None
    # Written so that NaN fails too.
    if not 0.0 < value <= 1.0:
        raise ValueError(f"`keep_rate` must be in (0, 1]. Received: {keep_rate!r}")
    return value

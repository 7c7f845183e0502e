import weakref

import keras
from keras import ops

from keras_trips.layers.input_checks import check_batch_sizes, check_tensor
from keras_trips.layers.trips_patch_selection import (
    TRIPSPatchSelection,
    validate_keep_rate,
)

GUIDANCE_MODES = ("text", "image", "text+image", "random")


@keras.saving.register_keras_serializable(package="keras_trips")
def quick_gelu(x):
    """CLIP's GELU approximation, `x * sigmoid(1.702 x)`."""
    return x * ops.sigmoid(1.702 * x)


# MLP activations by name: Keras's own plus CLIP's.
ACTIVATIONS = {"quick_gelu": quick_gelu}


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSVisionBlock(keras.layers.Layer):
    """Pre-LN ViT block with an optional TRIPS patch-selection stage.

    Selection sits between the attention residual and the MLP (docs/method.md, as
    in EViT). Its guidance query is the text [CLS] passed through this
    block's own LayerNorm and query projection, so it adds no weights; the
    keys are the ones the block's attention already computed.

    The query, key and value projections are one `Dense`, `qkv_dense`, whose
    output is `[query | key | value]` (timm's `qkv` layout);
    `query_dense`, `key_dense` and `value_dense` project with its thirds.
    Files saved when they were three `Dense` layers load into it. The
    attention leaves the key bias out (the softmax cancels it) and adds the
    value bias after the output projection: the same function, fewer adds.

    Args:
        hidden_dim: int. Token width.
        num_heads: int. Attention heads.
        mlp_dim: int. Width of the MLP's hidden layer.
        keep_rate: float in (0, 1], or `None` for a block without selection.
        fuse_inattentive: bool. Whether the tokens not kept are fused into one.
        layer_norm_epsilon: float. LayerNorm epsilon.
        dropout: float. Dropout after the attention and the MLP.
        activation: str. The MLP activation: a Keras activation name
            (`"gelu"` is the exact, erf-based GELU of ViT) or `"quick_gelu"`
            (CLIP).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        tokens: `(B, T, hidden_dim)`, image [CLS] first.
        text_embedding: `(B, hidden_dim)` text [CLS], or `None`.
        guidance: one of `"text"`, `"image"`, `"text+image"`, `"random"`.
        keep_rate: overrides the block's keep rate for this call.
        training: bool.

    Returns:
        `(tokens, indices, scores)`: indices and scores are `None` when the
        block selects nothing.

    Example:
    ```python
    block = keras_trips.layers.TRIPSVisionBlock(128, 4, 512, keep_rate=0.5)
    tokens, indices, scores = block(
        keras.random.normal((2, 1 + 64, 128)),
        text_embedding=keras.random.normal((2, 128)),
    )
    tokens.shape  # (2, 1 + 32 + 1, 128)
    ```
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        mlp_dim,
        keep_rate=None,
        fuse_inattentive=True,
        layer_norm_epsilon=1e-6,
        dropout=0.0,
        activation="gelu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}."
            )

        # === Config ===
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.mlp_dim = mlp_dim
        self.keep_rate = keep_rate
        self.fuse_inattentive = fuse_inattentive
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.activation = activation

        # === Layers ===
        def dense(units, name, activation=None, layer_class=keras.layers.Dense):
            return layer_class(
                units,
                activation=activation,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                dtype=self.dtype_policy,
                name=name,
            )

        def layer_norm(name):
            return keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name=name
            )

        self.attention_norm = layer_norm("attention_norm")
        # One projection for query, key and value, as in timm: one matmul is
        # faster than three on every backend.
        self.qkv_dense = dense(3 * hidden_dim, "qkv", layer_class=_FusedProjection)
        self.query_dense, self.key_dense, self.value_dense = (
            _ProjectionPart(self.qkv_dense, index, dtype=self.dtype_policy, name=name)
            for index, name in enumerate(("query", "key", "value"))
        )
        self.output_dense = dense(hidden_dim, "attention_output")
        self.mlp_norm = layer_norm("mlp_norm")
        self.mlp_intermediate = dense(
            mlp_dim,
            "mlp_intermediate",
            activation=ACTIVATIONS.get(activation, activation),
        )
        self.mlp_output = dense(hidden_dim, "mlp_output")
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.selection = None
        if keep_rate is not None:
            self.selection = TRIPSPatchSelection(
                keep_rate,
                num_heads=num_heads,
                fuse_inattentive=fuse_inattentive,
                dtype=self.dtype_policy,
                name="selection",
            )
        self.seed_generator = keras.random.SeedGenerator()

    def build(self, tokens_shape=None, *args, **kwargs):
        token_shape = (None, None, self.hidden_dim)
        self.attention_norm.build(token_shape)
        self.qkv_dense.build(token_shape)
        self.output_dense.build(token_shape)
        self.mlp_norm.build(token_shape)
        self.mlp_intermediate.build(token_shape)
        self.mlp_output.build((None, None, self.mlp_dim))

    def _split_heads(self, x):
        return ops.reshape(x, (-1, x.shape[1], self.num_heads, self.head_dim))

    def guidance_query(self, query, text_embedding, guidance):
        """The selection query `(B, Q, D)` for a guidance mode."""
        if guidance not in GUIDANCE_MODES:
            raise ValueError(
                f"`guidance` must be one of {GUIDANCE_MODES}. Received: {guidance!r}"
            )
        if guidance == "random":
            # Random logits: the ablation baseline that ignores the content.
            return keras.random.normal(
                ops.shape(query[:, :1]), dtype=query.dtype, seed=self.seed_generator
            )
        image_query = query[:, :1]
        if guidance == "image" or text_embedding is None:
            return image_query
        text_query = self.query_dense(self.attention_norm(text_embedding))[:, None]
        if guidance == "text":
            return text_query
        return ops.concatenate([text_query, image_query], axis=1)

    def call(
        self,
        tokens,
        text_embedding=None,
        guidance="text",
        keep_rate=None,
        training=None,
    ):
        self._check_inputs(tokens, text_embedding, keep_rate)
        folds_biases = self._folds_biases()
        query, keys, values = self._project(self.attention_norm(tokens), folds_biases)
        attended = ops.dot_product_attention(
            self._split_heads(query),
            self._split_heads(keys),
            self._split_heads(values),
        )
        attended = ops.reshape(attended, (-1, tokens.shape[1], self.hidden_dim))
        attended = self._output_projection(attended, folds_biases)
        x = tokens + self._dropout(attended, training)
        # Free what the MLP does not need: on eager backends (torch) a lower
        # peak of live memory means fewer fresh, page-faulting allocations.
        del values, attended

        indices = scores = None
        keep_rate = self.keep_rate if keep_rate is None else keep_rate
        if self.selection is not None and self.selection.selects(
            x.shape[1] - 1, keep_rate
        ):
            guidance_query = self.guidance_query(query, text_embedding, guidance)
            scores = self.selection.score(guidance_query, keys)
            x, indices = self.selection.select(x, scores, keep_rate)
        del query, keys

        hidden = self.mlp_output(self.mlp_intermediate(self.mlp_norm(x)))
        return x + self._dropout(hidden, training), indices, scores

    def _folds_biases(self):
        # Quantized projections keep their own calls, which add the biases.
        return not (
            self.qkv_dense.quantization_mode or self.output_dense.quantization_mode
        )

    def _project(self, normed, folds_biases):
        """The attention's query, keys and values, `(B, T, hidden_dim)` each.

        With `folds_biases`, only the query gets its bias. The key bias adds
        `q . b_k` to every logit of a query alike, which the softmax (of the
        attention and of the selection scores) cancels. The value bias adds
        `b_v` to every attention output row, since attention weights sum to
        one; `_output_projection` adds it, projected, with its own bias. Each
        add skipped saves a pass over a token-sized tensor and its buffer
        (Keras' `Dense` adds its bias apart from the matmul).
        """
        if not folds_biases:
            return ops.split(self.qkv_dense(normed), 3, axis=-1)
        width = self.hidden_dim
        projected = ops.matmul(normed, self.qkv_dense.kernel)
        query = projected[..., :width] + self.qkv_dense.bias[:width]
        return query, projected[..., width : 2 * width], projected[..., 2 * width :]

    def _output_projection(self, attended, folds_biases):
        if not folds_biases:
            return self.output_dense(attended)
        kernel = self.output_dense.kernel
        value_bias = self.qkv_dense.bias[2 * self.hidden_dim :]
        bias = ops.matmul(value_bias, kernel) + self.output_dense.bias
        return ops.matmul(attended, kernel) + bias

    def _dropout(self, x, training):
        # At rate 0 the Dropout layer is the identity; skipping its call saves
        # Keras' per-call overhead (noticeable on eager torch).
        if not self.dropout:
            return x
        return self.dropout_layer(x, training=training)

    def _check_inputs(self, tokens, text_embedding, keep_rate):
        check_tensor(tokens, "tokens", ("batch", "length", self.hidden_dim), "float")
        if text_embedding is not None:
            check_tensor(
                text_embedding, "text_embedding", ("batch", self.hidden_dim), "float"
            )
            check_batch_sizes(tokens=tokens.shape, text_embedding=text_embedding.shape)
        if keep_rate is not None:
            validate_keep_rate(keep_rate)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "keep_rate": self.keep_rate,
                "fuse_inattentive": self.fuse_inattentive,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "dropout": self.dropout,
                "activation": self.activation,
            }
        )
        return config


class _FusedProjection(keras.layers.Dense):
    """A block's query, key and value projections as one `Dense`.

    Files saved before the projections were fused hold nothing under its
    name: there the block's `_ProjectionPart`s load it (see there).
    """

    def quantize(self, mode=None, type_check=True, config=None):
        # Keras' type check quantizes `Dense` itself, not its subclasses; this
        # one computes what a `Dense` does.
        super().quantize(mode, type_check=False, config=config)

    def load_own_variables(self, store):
        if len(store.keys()):
            super().load_own_variables(store)


class _ProjectionPart(keras.layers.Layer):
    """The query, key or value third of a block's `_FusedProjection`.

    Calling it projects with that third: `block.query_dense(x)` is the query
    projection. It holds no weights. Files saved before the projections were
    fused hold them apart, as `Dense` layers under the block's `query_dense`,
    `key_dense` and `value_dense`; each part loads its third of the fused
    kernel and bias from there.

    Args:
        projection: the `_FusedProjection` whose third this is.
        index: int. 0 for the query, 1 for the key, 2 for the value.
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(self, projection, index, **kwargs):
        super().__init__(**kwargs)
        # Held weakly: a tracked reference would make Keras save the fused
        # weights under this layer's path too.
        self._projection = weakref.ref(projection)
        self.index = index
        self.built = True

    def call(self, inputs):
        # The whole projection, sliced: right for quantized kernels too. Only
        # the guidance's text token goes through here, so the two wasted
        # thirds cost next to nothing.
        projected = self._projection()(inputs)
        width = projected.shape[-1] // 3
        return projected[..., self.index * width : (self.index + 1) * width]

    def save_own_variables(self, store):
        # The fused projection saves the weights.
        pass

    def load_own_variables(self, store):
        if not len(store.keys()):
            return  # a file with the fused layout
        projection = self._projection()
        if len(store.keys()) != 2:
            raise ValueError(
                f"Layer '{self.name}' of a file saved before the fused query, key "
                "and value projection must hold a kernel and a bias. Received "
                f"{len(store.keys())} variables."
            )
        width = projection.units // 3
        start = self.index * width
        for variable, value, origin in (
            (projection.kernel, store["0"], (0, start)),
            (projection.bias, store["1"], (start,)),
        ):
            value = ops.cast(value, variable.dtype)
            variable.assign(
                ops.slice_update(ops.convert_to_tensor(variable), origin, value)
            )

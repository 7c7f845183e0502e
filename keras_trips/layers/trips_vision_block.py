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
        def dense(units, name, activation=None):
            return keras.layers.Dense(
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
        self.query_dense = dense(hidden_dim, "query")
        self.key_dense = dense(hidden_dim, "key")
        self.value_dense = dense(hidden_dim, "value")
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
        for layer in (self.query_dense, self.key_dense, self.value_dense):
            layer.build(token_shape)
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
        normed = self.attention_norm(tokens)
        query = self.query_dense(normed)
        keys = self.key_dense(normed)
        values = self.value_dense(normed)
        attended = ops.dot_product_attention(
            self._split_heads(query),
            self._split_heads(keys),
            self._split_heads(values),
        )
        attended = ops.reshape(attended, (-1, tokens.shape[1], self.hidden_dim))
        x = tokens + self.dropout_layer(self.output_dense(attended), training=training)

        indices = scores = None
        keep_rate = self.keep_rate if keep_rate is None else keep_rate
        if self.selection is not None and self.selection.selects(
            x.shape[1] - 1, keep_rate
        ):
            guidance_query = self.guidance_query(query, text_embedding, guidance)
            scores = self.selection.score(guidance_query, keys)
            x, indices = self.selection.select(x, scores, keep_rate)

        hidden = self.mlp_intermediate(self.mlp_norm(x))
        x = x + self.dropout_layer(self.mlp_output(hidden), training=training)
        return x, indices, scores

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

import keras
import keras_hub
import numpy as np

from keras_trips.layers.input_checks import check_dtype


def validate_token_ids(token_ids, vocabulary_size):
    """Raise a `ValueError` if concrete token ids fall outside the vocabulary.

    Args:
        token_ids: array-like of integer token ids (numpy array, list, or an
            eager backend tensor).
        vocabulary_size: int. Valid ids are `0 <= id < vocabulary_size`.
    """
    values = np.asarray(keras.ops.convert_to_numpy(token_ids))
    if values.size == 0:
        return
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocabulary_size:
        raise ValueError(
            f"`token_ids` must lie in [0, {vocabulary_size}) (the vocabulary "
            f"size), but received ids in [{low}, {high}]."
        )


def check_padding_mask(padding_mask, sequence_shape, mask_name, sequence_name):
    """Raise a `ValueError` if a padding mask does not fit its sequence.

    The mask must be `(batch_size, sequence_length)`, matching the first two
    axes of `sequence_shape` wherever both sizes are statically known.
    """
    if padding_mask is None:
        return
    check_dtype(padding_mask, mask_name, "mask")
    mask_shape = tuple(padding_mask.shape)
    expected = tuple(sequence_shape[:2])
    if len(mask_shape) != 2 or any(
        m is not None and s is not None and m != s
        for m, s in zip(mask_shape, expected, strict=True)
    ):
        raise ValueError(
            f"`{mask_name}` must have shape (batch_size, sequence_length) = "
            f"{expected}, matching `{sequence_name}`, but received shape "
            f"{mask_shape}."
        )


def bert_kernel_initializer():
    """BERT's initializer for all kernels and embeddings."""
    return keras.initializers.TruncatedNormal(stddev=0.02)


def bert_layer(layer_class, intermediate_dim, num_heads, dropout, dtype, name):
    """A keras-hub `TransformerEncoder` or `TransformerDecoder`
    (`layer_class`) with BERT's settings: post-LN, exact GELU, LayerNorm
    epsilon 1e-12 and BERT's kernel initializer."""
    return layer_class(
        intermediate_dim=intermediate_dim,
        num_heads=num_heads,
        dropout=dropout,
        activation="gelu",
        layer_norm_epsilon=1e-12,
        kernel_initializer=bert_kernel_initializer(),
        normalize_first=False,
        dtype=dtype,
        name=name,
    )


def _concrete_values(x):
    """The values of `x` as numpy, or `None` when `x` is symbolic.

    Inside compiled graphs (XLA/`tf.function` tracing, Keras symbolic shape
    inference) the conversion fails, and values are unknown until run time.
    """
    try:
        return keras.ops.convert_to_numpy(x)
    except Exception:
        return None


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSTextEncoder(keras.layers.Layer):
    """BERT-style (post-LN) text encoder: the text-only half of the TRIPS text
    tower.

    Token embeddings plus learned position embeddings, an embedding
    LayerNorm and dropout, then `num_layers` post-LN transformer encoder
    layers with exact GELU (as BERT). BERT's segment embedding is not a
    separate weight: the segment id is always 0 here, so the converter folds
    `token_type_embeddings[0]` into the position embedding.

    The output is the full sequence `(batch_size, sequence_length,
    hidden_dim)`; the text [CLS] state (`t_cls`, which guides patch selection)
    is `sequence[:, 0]`. `token_embedding` is a
    `keras_hub.layers.ReversibleEmbedding`, so a masked-LM head can tie to it.

    When `token_ids` are concrete (eager) values, `call()` checks that they lie
    in the vocabulary; inside compiled graphs only static checks run (integer
    dtype, rank, sequence length, padding-mask shape).

    Args:
        vocabulary_size: int. The size of the token vocabulary.
        num_layers: int. The number of transformer encoder layers.
        num_heads: int. The number of attention heads; must divide
            `hidden_dim`.
        hidden_dim: int. The width of the token representations.
        intermediate_dim: int. The width of the feedforward hidden layer.
        max_sequence_length: int. The longest sequence the position
            embedding covers.
        dropout: float. Dropout rate for the embeddings and the transformer
            layers.
        dtype: string or `keras.DTypePolicy`. The dtype policy of the layer
            and all its sublayers.
        **kwargs: other `keras.layers.Layer` arguments, e.g. `name`.

    Example:

    ```python
    encoder = keras_trips.layers.TRIPSTextEncoder(
        vocabulary_size=1000,
        num_layers=2,
        num_heads=4,
        hidden_dim=64,
        intermediate_dim=128,
        max_sequence_length=32,
    )
    token_ids = np.array([[101, 7, 8, 102, 0, 0]])
    padding_mask = token_ids != 0
    sequence = encoder(token_ids, padding_mask=padding_mask)  # (1, 6, 64)
    t_cls = sequence[:, 0]
    ```
    """

    def __init__(
        self,
        vocabulary_size=30522,
        num_layers=6,
        num_heads=12,
        hidden_dim=768,
        intermediate_dim=3072,
        max_sequence_length=512,
        dropout=0.1,
        dtype=None,
        **kwargs,
    ):
        if hidden_dim % num_heads != 0:
            raise ValueError(
                f"`hidden_dim` ({hidden_dim}) must be divisible by "
                f"`num_heads` ({num_heads})."
            )
        super().__init__(dtype=dtype, **kwargs)

        # === Layers ===
        self.token_embedding = keras_hub.layers.ReversibleEmbedding(
            input_dim=vocabulary_size,
            output_dim=hidden_dim,
            embeddings_initializer=bert_kernel_initializer(),
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length=max_sequence_length,
            initializer=bert_kernel_initializer(),
            dtype=self.dtype_policy,
            name="position_embedding",
        )
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            epsilon=1e-12,
            dtype=self.dtype_policy,
            name="embeddings_layer_norm",
        )
        self.embeddings_dropout = keras.layers.Dropout(
            dropout,
            dtype=self.dtype_policy,
            name="embeddings_dropout",
        )
        self.transformer_layers = [
            bert_layer(
                keras_hub.layers.TransformerEncoder,
                intermediate_dim,
                num_heads,
                dropout,
                self.dtype_policy,
                f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.dropout = dropout

    def build(self, token_ids_shape):
        token_ids_shape = tuple(token_ids_shape)
        self.token_embedding.build(token_ids_shape)
        sequence_shape = (*token_ids_shape, self.hidden_dim)
        self.position_embedding.build(sequence_shape)
        self.embeddings_layer_norm.build(sequence_shape)
        for transformer_layer in self.transformer_layers:
            transformer_layer.build(sequence_shape)
        self.built = True

    def call(self, token_ids, padding_mask=None, training=None):
        self._check_inputs(token_ids, padding_mask)
        x = self.token_embedding(token_ids)
        x = x + self.position_embedding(x)
        x = self.embeddings_layer_norm(x)
        x = self.embeddings_dropout(x, training=training)
        for transformer_layer in self.transformer_layers:
            x = transformer_layer(x, padding_mask=padding_mask, training=training)
        return x

    def _check_inputs(self, token_ids, padding_mask):
        shape = tuple(token_ids.shape)
        if len(shape) != 2:
            raise ValueError(
                "`token_ids` must have shape (batch_size, sequence_length), "
                f"but received shape {shape}."
            )
        if "int" not in keras.backend.standardize_dtype(token_ids.dtype):
            raise ValueError(
                f"`token_ids` must be integers, but received dtype {token_ids.dtype}."
            )
        if shape[1] is not None and shape[1] > self.max_sequence_length:
            raise ValueError(
                f"`token_ids` has sequence length {shape[1]}, longer than "
                f"`max_sequence_length` ({self.max_sequence_length})."
            )
        if shape[1] == 0:
            raise ValueError("`token_ids` must hold at least one token ([CLS]).")
        check_padding_mask(padding_mask, shape, "padding_mask", "token_ids")
        values = _concrete_values(token_ids)
        if values is not None:
            validate_token_ids(values, self.vocabulary_size)

    def compute_output_shape(self, token_ids_shape):
        return (*token_ids_shape, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "max_sequence_length": self.max_sequence_length,
                "dropout": self.dropout,
            }
        )
        return config

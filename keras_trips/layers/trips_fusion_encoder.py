import keras
import keras_hub

from keras_trips.layers.input_checks import check_batch_sizes, check_dtype
from keras_trips.layers.trips_text_encoder import (
    bert_layer,
    check_padding_mask,
)


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSFusionEncoder(keras.layers.Layer):
    """ALBEF-style fusion encoder: text layers that cross-attend to the image.

    `num_layers` post-LN transformer layers (the upper half of BERT in ALBEF):
    bidirectional self-attention over the text (no causal mask, text padding
    masked), cross-attention from the text to the image tokens, then the
    feedforward block; exact GELU and LayerNorm epsilon 1e-12, as BERT. The
    image tokens may be narrower or wider than the text: the cross-attention
    key and value projections map them to the text width.

    Args:
        num_layers: int. The number of fusion layers.
        num_heads: int. The number of attention heads (self- and
            cross-attention); must divide `hidden_dim`.
        hidden_dim: int. The width of the text sequence.
        image_dim: int or `None`. The width of the image tokens; `None` means
            `hidden_dim`.
        intermediate_dim: int. The width of the feedforward hidden layer.
        dropout: float. Dropout rate inside the transformer layers.
        dtype: string or `keras.DTypePolicy`. The dtype policy of the layer
            and all its sublayers.
        **kwargs: other `keras.layers.Layer` arguments, e.g. `name`.

    Example:

    ```python
    fusion = keras_trips.layers.TRIPSFusionEncoder(
        num_layers=2, num_heads=4, hidden_dim=64, intermediate_dim=128
    )
    text_sequence = np.random.normal(size=(2, 8, 64)).astype("float32")
    image_tokens = np.random.normal(size=(2, 50, 64)).astype("float32")
    padding_mask = np.ones((2, 8), dtype=bool)
    fused = fusion(text_sequence, image_tokens, padding_mask=padding_mask)
    fused_cls = fused[:, 0]  # (2, 64), e.g. for the ITM head
    ```
    """

    def __init__(
        self,
        num_layers=6,
        num_heads=12,
        hidden_dim=768,
        intermediate_dim=3072,
        dropout=0.1,
        image_dim=None,
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
        self.transformer_layers = [
            bert_layer(
                keras_hub.layers.TransformerDecoder,
                intermediate_dim,
                num_heads,
                dropout,
                self.dtype_policy,
                f"fusion_layer_{i}",
            )
            for i in range(num_layers)
        ]

        # === Config ===
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.image_dim = hidden_dim if image_dim is None else image_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout

    def build(self, text_sequence_shape, image_tokens_shape):
        self._check_widths(text_sequence_shape, image_tokens_shape)
        for transformer_layer in self.transformer_layers:
            transformer_layer.build(
                tuple(text_sequence_shape), tuple(image_tokens_shape)
            )
        self.built = True

    def call(
        self,
        text_sequence,
        image_tokens,
        padding_mask=None,
        image_padding_mask=None,
        training=None,
    ):
        self._check_widths(text_sequence.shape, image_tokens.shape)
        check_dtype(text_sequence, "text_sequence", "float")
        check_dtype(image_tokens, "image_tokens", "float")
        check_batch_sizes(
            text_sequence=text_sequence.shape, image_tokens=image_tokens.shape
        )
        check_padding_mask(
            padding_mask, text_sequence.shape, "padding_mask", "text_sequence"
        )
        check_padding_mask(
            image_padding_mask,
            image_tokens.shape,
            "image_padding_mask",
            "image_tokens",
        )
        x = text_sequence
        for transformer_layer in self.transformer_layers:
            x = transformer_layer(
                x,
                image_tokens,
                decoder_padding_mask=padding_mask,
                encoder_padding_mask=image_padding_mask,
                use_causal_mask=False,
                training=training,
            )
        return x

    def _check_widths(self, text_sequence_shape, image_tokens_shape):
        for name, shape in (
            ("text_sequence", text_sequence_shape),
            ("image_tokens", image_tokens_shape),
        ):
            if len(shape) != 3:
                raise ValueError(
                    f"`{name}` must have shape (batch_size, length, "
                    f"width), but received shape {tuple(shape)}."
                )
        if text_sequence_shape[-1] != self.hidden_dim:
            raise ValueError(
                f"`text_sequence` width ({text_sequence_shape[-1]}) must equal "
                f"`hidden_dim` ({self.hidden_dim})."
            )
        if image_tokens_shape[-1] != self.image_dim:
            raise ValueError(
                f"`image_tokens` width ({image_tokens_shape[-1]}) must equal "
                f"`image_dim` ({self.image_dim})."
            )

    def compute_output_shape(self, text_sequence_shape, image_tokens_shape):
        return tuple(text_sequence_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "image_dim": self.image_dim,
            }
        )
        return config

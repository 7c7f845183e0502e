import keras
from keras import ops

from keras_trips.layers.input_checks import (
    check_batch_sizes,
    check_dtype,
    check_keys,
)
from keras_trips.layers.trips_patch_embedding import TRIPSPatchEmbedding
from keras_trips.layers.trips_vision_block import TRIPSVisionBlock
from keras_trips.models.selection_provenance import initial_provenance
from keras_trips.models.trips_selection_stages import (
    TRIPSSelectionStages,
    validate_selection,
)
from keras_trips.utils.saving import dtype_policy_config


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSVisionEncoder(TRIPSSelectionStages, keras.Model):
    """A ViT whose blocks select text-relevant patches (TRIPS, docs/method.md).

    A pre-LN ViT with a [CLS] token and learned position embeddings. In the
    blocks listed in `selection_layers` the tokens that the guidance query
    attends to most are kept and the rest fused into one token, so later
    blocks run on fewer tokens. With `keep_rate=1.0` everywhere it is the
    plain ViT.

    Called on `{"images": (B, H, W, C), "text_embedding": (B, hidden_dim)}`
    (the text [CLS] state); without `"text_embedding"`, or on a bare image
    tensor, guidance falls back to `"image"` (EViT). Returns the normalised
    token sequence `(B, T, hidden_dim)`, T = 1 + the tokens left after the
    last stage. With `return_provenance=True` it also returns a
    `(B, T, num_patches)` map: row t holds the weight with which each original
    patch makes up output token t (one-hot for a kept patch, the fusion
    weights for a fused token, zeros for the [CLS]). With
    `return_scores=True` it also returns (after the map, when both are asked
    for) a list with each selecting stage's scores `(B, num_patches)`
    spread onto the original patches, from the same pass (so a loss can
    train them). `guidance` overrides the encoder's guidance mode for one
    call (to compare modes on one model).

    Args:
        image_shape: `(height, width, channels)`.
        patch_size: int. Side of the square patches.
        num_layers: int. Number of ViT blocks.
        num_heads: int. Attention heads per block.
        hidden_dim: int. Token width.
        mlp_dim: int. Width of the MLP's hidden layer.
        selection_layers: 0-based indices of the blocks that select patches.
        keep_rate: float in (0, 1], or one per selection layer.
        fuse_inattentive: bool. Fuse the tokens not kept into one token.
        guidance: `"text"` (TRIPS), `"image"` (EViT), `"text+image"` (mean of
            the two score distributions) or `"random"` (ablation).
        layer_norm_epsilon: float. Epsilon of every LayerNorm (ViT: 1e-6 or
            1e-12, CLIP: 1e-5).
        dropout: float. Dropout after the attention and the MLP.
        activation: str. The MLP activation, `"gelu"` (exact, ViT) or
            `"quick_gelu"` (CLIP).
        pre_norm: bool. Whether a LayerNorm follows the embeddings (CLIP's
            `pre_layrnorm`).
        patch_bias: bool. Whether the patch projection has a bias (CLIP's
            has none).
        stem: `"patch"` (the ViT's linear patch projection) or `"conv"` (a
            convolutional stem, for training from scratch on small data; see
            `TRIPSPatchEmbedding`).
        dtype: dtype policy, e.g. `"mixed_bfloat16"`.

    Example:
    ```python
    encoder = keras_trips.models.TRIPSVisionEncoder(
        image_shape=(64, 64, 3), patch_size=8, num_layers=4, num_heads=4,
        hidden_dim=128, mlp_dim=512, selection_layers=(1, 3), keep_rate=0.5,
    )
    tokens = encoder({
        "images": keras.random.uniform((2, 64, 64, 3)),
        "text_embedding": keras.random.normal((2, 128)),
    })
    tokens.shape  # (2, 1 + 17 + 1, 128): 64 patches -> 32 + 1 -> 17 + 1
    ```
    """

    def __init__(
        self,
        image_shape=(224, 224, 3),
        patch_size=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        mlp_dim=3072,
        selection_layers=(4, 9),
        keep_rate=0.7,
        fuse_inattentive=True,
        guidance="text",
        layer_norm_epsilon=1e-6,
        dropout=0.0,
        activation="gelu",
        pre_norm=False,
        patch_bias=True,
        stem="patch",
        dtype=None,
        **kwargs,
    ):
        super().__init__(dtype=dtype, **kwargs)
        selection_layers = validate_selection(selection_layers, num_layers, guidance)

        # === Config ===
        self.image_shape = tuple(image_shape)
        self.patch_size = patch_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.mlp_dim = mlp_dim
        self.selection_layers = selection_layers
        self.keep_rate = self.stage_rates(keep_rate)
        self.fuse_inattentive = fuse_inattentive
        self.guidance = guidance
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.activation = activation
        self.pre_norm = pre_norm
        self.patch_bias = patch_bias
        self.stem = stem

        # === Layers ===
        self.patch_embedding = TRIPSPatchEmbedding(
            image_shape,
            patch_size,
            hidden_dim,
            use_bias=patch_bias,
            stem=stem,
            dtype=self.dtype_policy,
            name="patch_embedding",
        )
        self.embedding_norm = None
        if pre_norm:
            self.embedding_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon,
                dtype=self.dtype_policy,
                name="embedding_norm",
            )
        rates = dict(zip(self.selection_layers, self.keep_rate))
        self.blocks = [
            TRIPSVisionBlock(
                hidden_dim,
                num_heads,
                mlp_dim,
                keep_rate=rates.get(i),
                fuse_inattentive=fuse_inattentive,
                layer_norm_epsilon=layer_norm_epsilon,
                dropout=dropout,
                activation=activation,
                dtype=self.dtype_policy,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        self.output_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="output_norm"
        )
        self.build()

    def build(self, input_shape=None):
        # The patch embedding builds itself: its shapes come from its config.
        if self.embedding_norm is not None:
            self.embedding_norm.build((None, None, self.hidden_dim))
        for block in self.blocks:
            block.build()
        self.output_norm.build((None, None, self.hidden_dim))
        self.built = True

    @property
    def num_patches(self):
        return self.patch_embedding.num_patches

    def sequence_lengths(self, keep_rate=None):
        """Tokens (with [CLS]) entering each block and leaving the last one."""
        rates = self.keep_rate if keep_rate is None else self.stage_rates(keep_rate)
        rates = dict(zip(self.selection_layers, rates))
        lengths = [1 + self.num_patches]
        for i, block in enumerate(self.blocks):
            length = lengths[-1]
            if i in rates:
                length = block.selection.output_length(length - 1, rates[i])
            lengths.append(length)
        return lengths

    def _validate(self, images, text_embedding):
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                "Expected `images` of shape "
                f"(batch, {', '.join(map(str, self.image_shape))}). "
                f"Received shape: {tuple(images.shape)}"
            )
        check_dtype(images, "images", "float")
        if text_embedding is None:
            return
        if (
            len(text_embedding.shape) != 2
            or text_embedding.shape[-1] != self.hidden_dim
        ):
            raise ValueError(
                f"`text_embedding` must have shape (batch, {self.hidden_dim}): the "
                "text [CLS] width must equal the vision width (hidden_dim). "
                f"Received shape: {tuple(text_embedding.shape)}"
            )
        check_dtype(text_embedding, "text_embedding", "float")
        check_batch_sizes(images=images.shape, text_embedding=text_embedding.shape)

    def _encode(self, inputs, keep_rate, guidance, track, training):
        """Returns `(tokens, provenance, stages)`; the last two only with
        `track` (else `None` and `[]`)."""
        if isinstance(inputs, dict):
            check_keys(inputs, "inputs", ("images",), ("text_embedding",))
            images, text_embedding = inputs["images"], inputs.get("text_embedding")
        else:
            images, text_embedding = inputs, None
        self._validate(images, text_embedding)
        rates = self.keep_rate if keep_rate is None else self.stage_rates(keep_rate)
        rates = dict(zip(self.selection_layers, rates))

        tokens = self.patch_embedding(images)
        if self.embedding_norm is not None:
            tokens = self.embedding_norm(tokens)
        provenance = None
        stages = []
        if track:
            provenance = initial_provenance(ops.shape(tokens)[0], 1, self.num_patches)
        for i, block in enumerate(self.blocks):
            tokens, indices, scores = block(
                tokens,
                text_embedding=text_embedding,
                guidance=guidance,
                keep_rate=rates.get(i),
                training=training,
            )
            if track and indices is not None:
                # The same keep-and-fuse applied to the provenance rows.
                selected, _ = block.selection.select(provenance, scores, rates[i])
                provenance = self._traced(
                    stages, i, rates[i], scores, provenance, selected, num_prefix=1
                )
        return self.output_norm(tokens), provenance, stages

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_shape": self.image_shape,
                "patch_size": self.patch_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "mlp_dim": self.mlp_dim,
                "selection_layers": self.selection_layers,
                "keep_rate": self.keep_rate,
                "fuse_inattentive": self.fuse_inattentive,
                "guidance": self.guidance,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "dropout": self.dropout,
                "activation": self.activation,
                "pre_norm": self.pre_norm,
                "patch_bias": self.patch_bias,
                "stem": self.stem,
                "dtype": dtype_policy_config(self),
            }
        )
        return config

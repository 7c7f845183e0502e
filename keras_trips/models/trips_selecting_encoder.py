import warnings

import keras
from keras import ops

from keras_trips.layers.trips_patch_selection import TRIPSPatchSelection
from keras_trips.models.keras_hub_layouts import layout_of
from keras_trips.models.selection_provenance import initial_provenance
from keras_trips.models.trips_selection_stages import (
    TRIPSSelectionStages,
    validate_selection,
)


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSSelectingEncoder(TRIPSSelectionStages, keras.Model):
    """A keras-hub vision encoder run with TRIPS patch selection.

    Runs the layers of `encoder` (the same layer objects: weights are shared,
    not copied, and training this model trains them) and, in the blocks listed
    in `selection_layers`, selects patches between the attention residual and
    the MLP (docs/method.md): `TRIPSPatchSelection` scores the patch tokens with the
    block's own LayerNorm and query and key projections, keeps the top
    `ceil(keep_rate * N)` and fuses the rest into one token appended last.
    Only the keys are needed, not the attention matrix, so the attention runs
    as the encoder's `MultiHeadAttention` runs it (flash attention included).
    With every keep rate at 1.0 the outputs are the encoder's own (to float
    precision). `encoder` itself is not changed.

    Supported: keras-hub `ViTBackbone`, `CLIPVisionEncoder`,
    `SigLIPVisionEncoder` and `DINOV2Backbone`. Tokens before the patches
    are never scored or pruned: the [CLS] token (ViT, CLIP, DINOv2) and
    DINOv2's register tokens. SigLIP has no [CLS]: every token is a
    candidate, the fused token is an ordinary last token (nothing takes it
    for a [CLS]), and image guidance uses the mean of the block's queries.

    Called like `encoder` (`{"images": ...}` or the image tensor) with an
    optional `"text_embedding"` `(B, text_width)` in the dict: the guidance
    query. Without one, guidance falls back to `"image"` (EViT). Returns what
    `encoder` returns, over fewer tokens; with `return_provenance=True` also
    the `(B, T, N)` map from the T tokens after the last block to the N
    original patches (see `TRIPSVisionEncoder`; for SigLIP, whose output is
    pooled, the map of the tokens its head pooled); with
    `return_scores=True` also each stage's scores on the patches (as
    `TRIPSVisionEncoder`).

    Build one with `keras_trips.models.with_patch_selection`.

    Args:
        encoder: a keras-hub vision encoder (see above).
        selection_layers: 0-based indices of the blocks that select patches.
        keep_rate: float in (0, 1], or one per selection layer.
        guidance: `"text"` (TRIPS), `"image"` (EViT), `"text+image"` or
            `"random"` (ablation).
        query_projection: `None` when the text embedding has the encoder's
            width, else a layer mapping the text embedding to that width
            (e.g. a `keras.layers.Dense`; its weights are part of this model).
        fuse_inattentive: bool. Fuse the tokens not kept into one token.
        **kwargs: standard `keras.Model` arguments (`name`).

    Example:
    ```python
    clip = keras_hub.models.CLIPVisionEncoder(
        patch_size=16, hidden_dim=64, num_layers=4, num_heads=4,
        intermediate_dim=128, image_shape=(64, 64, 3),
    )
    selecting = keras_trips.models.with_patch_selection(clip, (1, 3), 0.5)
    tokens = selecting({
        "images": np.random.uniform(size=(2, 64, 64, 3)),
        "text_embedding": np.random.normal(size=(2, 64)),
    })
    tokens.shape  # (2, 1 + 5 + 1, 64): 16 patches -> 8 + 1 -> 5 + 1
    ```
    """

    def __init__(
        self,
        encoder,
        selection_layers,
        keep_rate=0.7,
        guidance="text",
        query_projection=None,
        fuse_inattentive=True,
        **kwargs,
    ):
        layout = layout_of(encoder)
        super().__init__(dtype=encoder.dtype_policy, **kwargs)
        num_blocks = len(layout.blocks(encoder))
        selection_layers = validate_selection(selection_layers, num_blocks, guidance)

        # === Config ===
        self.layout = layout
        self.selection_layers = selection_layers
        self.keep_rate = self.stage_rates(keep_rate)
        self.guidance = guidance
        self.fuse_inattentive = bool(fuse_inattentive)
        self.num_prefix_tokens = layout.num_prefix_tokens(encoder)
        self.image_shape = layout.image_shape(encoder)
        self.grid_shape = layout.patch_grid(encoder)
        self.num_patches = self.grid_shape[0] * self.grid_shape[1]
        self.hidden_dim = encoder.hidden_dim

        # === Layers ===
        self.encoder = encoder
        self.query_projection = query_projection
        self.selections = {
            index: TRIPSPatchSelection(
                rate,
                num_heads=layout.attention(layout.blocks(encoder)[index]).num_heads,
                fuse_inattentive=fuse_inattentive,
                dtype=self.dtype_policy,
                name=f"selection_{index}",
            )
            for index, rate in zip(selection_layers, self.keep_rate)
        }
        self.seed_generator = keras.random.SeedGenerator()
        self.built = True

    @property
    def blocks(self):
        return self.layout.blocks(self.encoder)

    def sequence_lengths(self, keep_rate=None):
        """Tokens entering each block and leaving the last one."""
        rates = self.keep_rate if keep_rate is None else self.stage_rates(keep_rate)
        rates = dict(zip(self.selection_layers, rates))
        lengths = [self.num_prefix_tokens + self.num_patches]
        for index in range(len(self.blocks)):
            length = lengths[-1]
            if index in rates:
                # `output_length` counts one leading token that is not scored.
                candidates = length - self.num_prefix_tokens
                selection = self.selections[index]
                length = self.num_prefix_tokens - 1
                length += selection.output_length(candidates, rates[index])
            lengths.append(length)
        return lengths

    def _unpack(self, inputs):
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - {"images", "text_embedding"})
            if unknown or "images" not in inputs:
                raise ValueError(
                    "Inputs must be the images, or a dict with 'images' and an "
                    f"optional 'text_embedding'. Received keys: {sorted(inputs)}"
                )
            images, text_embedding = inputs["images"], inputs.get("text_embedding")
        else:
            images, text_embedding = inputs, None
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"Expected images of shape (batch, {', '.join(map(str, self.image_shape))}). "
                f"Received shape: {tuple(images.shape)}"
            )
        if text_embedding is not None:
            if self.query_projection is not None:
                text_embedding = self.query_projection(text_embedding)
            if (
                len(text_embedding.shape) != 2
                or text_embedding.shape[-1] != self.hidden_dim
            ):
                raise ValueError(
                    f"`text_embedding` must have shape (batch, {self.hidden_dim}), "
                    "the encoder's width, after `query_projection` if there is "
                    "one; pass `query_projection` to `with_patch_selection` for "
                    f"another width. Received shape: {tuple(text_embedding.shape)}"
                )
        return images, text_embedding

    def _anchored(self, sequence):
        """`sequence` arranged as `TRIPSPatchSelection` expects it: one
        leading token it leaves alone, then the candidates. That token is the
        last prefix token, or a zero placeholder when there is none."""
        if self.num_prefix_tokens == 0:
            return ops.concatenate([ops.zeros_like(sequence[:, :1]), sequence], 1)
        return sequence[:, self.num_prefix_tokens - 1 :]

    def _select(self, selection, sequence, scores, keep_rate):
        """Keeps and fuses the candidates of `sequence`, prefix untouched."""
        selected, indices = selection.select(
            self._anchored(sequence), scores, keep_rate
        )
        if self.num_prefix_tokens == 0:
            return selected[:, 1:], indices
        if self.num_prefix_tokens == 1:
            return selected, indices
        prefix = sequence[:, : self.num_prefix_tokens - 1]
        return ops.concatenate([prefix, selected], axis=1), indices

    def _guidance_query(self, block, queries, text_embedding, guidance):
        """The selection query `(B, Q, D)` of a block for a guidance mode."""
        if guidance == "random":
            # Random logits: the ablation baseline that ignores the content.
            return keras.random.normal(
                ops.shape(queries[:, :1]),
                dtype=queries.dtype,
                seed=self.seed_generator,
            )
        if self.num_prefix_tokens:
            image_query = queries[:, :1]
        else:
            # No [CLS]: the query of the mean normalised token.
            image_query = ops.mean(queries, axis=1, keepdims=True)
        if guidance == "image" or text_embedding is None:
            return image_query
        attention = self.layout.attention(block)
        text = self.layout.attention_norm(block)(text_embedding[:, None, :])
        text_query = ops.reshape(attention.query_dense(text), (-1, 1, self.hidden_dim))
        if guidance == "text":
            return text_query
        return ops.concatenate([text_query, image_query], axis=1)

    def _split_block(
        self, index, block, tokens, text_embedding, guidance, keep_rate, training
    ):
        """A selection layer's block, run in two halves with selection (when
        `keep_rate` selects anything) after the attention residual.

        Returns `(tokens, indices, scores)` as `TRIPSVisionBlock` does:
        `None` indices and scores when nothing was selected.
        """
        layout = self.layout
        attention = layout.attention(block)
        normed = layout.attention_norm(block)(tokens)
        queries = attention.query_dense(normed)
        keys = attention.key_dense(normed)
        values = attention.value_dense(normed)
        # `_compute_attention` is the layer's documented override point: the
        # attention runs exactly as in the encoder (flash, dropout), and the
        # keys it used score the patches.
        attended, _ = attention._compute_attention(
            queries, keys, values, attention_mask=None, training=training
        )
        attended = attention.output_dense(attended)
        tokens = tokens + layout.attention_branch(block, attended, training)

        indices = scores = None
        selection = self.selections[index]
        length = tokens.shape[1]
        if selection.selects(length - self.num_prefix_tokens, keep_rate):
            queries = ops.reshape(queries, (-1, length, self.hidden_dim))
            keys = ops.reshape(keys, (-1, length, self.hidden_dim))
            query = self._guidance_query(block, queries, text_embedding, guidance)
            scores = selection.score(query, self._anchored(keys))
            tokens, indices = self._select(selection, tokens, scores, keep_rate)
        tokens = tokens + layout.mlp_branch(block, tokens, training)
        return tokens, indices, scores

    def _encode(self, inputs, keep_rate, guidance, track, training):
        """Returns `(outputs, provenance, stages)`; the last two only with
        `track` (else `None` and `[]`)."""
        images, text_embedding = self._unpack(inputs)
        rates = self.keep_rate if keep_rate is None else self.stage_rates(keep_rate)
        rates = dict(zip(self.selection_layers, rates))
        tokens = self.layout.embed(self.encoder, images, training)
        provenance = None
        stages = []
        if track:
            provenance = initial_provenance(
                ops.shape(tokens)[0], self.num_prefix_tokens, self.num_patches
            )
        intermediate_block = self.layout.intermediate_block(self.encoder)
        intermediate = None
        for index, block in enumerate(self.blocks):
            if index not in rates:
                tokens = block(tokens, training=training)
            else:
                tokens, _, scores = self._split_block(
                    index,
                    block,
                    tokens,
                    text_embedding,
                    guidance,
                    rates[index],
                    training,
                )
                if track and scores is not None:
                    selected, _ = self._select(
                        self.selections[index], provenance, scores, rates[index]
                    )
                    provenance = self._traced(
                        stages,
                        index,
                        rates[index],
                        scores,
                        provenance,
                        selected,
                        num_prefix=self.num_prefix_tokens,
                    )
            if index == intermediate_block:
                intermediate = tokens
        outputs = self.layout.head(self.encoder, tokens, training, intermediate)
        return outputs, provenance, stages

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "selection_layers": self.selection_layers,
                "keep_rate": self.keep_rate,
                "guidance": self.guidance,
                "query_projection": (
                    None
                    if self.query_projection is None
                    else keras.saving.serialize_keras_object(self.query_projection)
                ),
                "fuse_inattentive": self.fuse_inattentive,
            }
        )
        config.pop("dtype", None)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        if config.get("query_projection") is not None:
            config["query_projection"] = keras.saving.deserialize_keras_object(
                config["query_projection"]
            )
        return cls(**config)


def with_patch_selection(
    encoder,
    selection_layers,
    keep_rate,
    guidance="text",
    query_projection=None,
    fuse_inattentive=True,
    name=None,
):
    """TRIPS patch selection inside a keras-hub vision encoder.

    Returns a `TRIPSSelectingEncoder` that runs `encoder`'s own layers (its
    weights shared, not copied; `encoder` is left as it was and still works)
    and selects patches after the attention residual of the blocks in
    `selection_layers`, scored with each block's LayerNorm and query and key
    projections.

    Args:
        encoder: a keras-hub `ViTBackbone`, `CLIPVisionEncoder`,
            `SigLIPVisionEncoder` or `DINOV2Backbone`.
        selection_layers: 0-based indices of the blocks that select; the
            paper's are `(4, 9)` of 12.
        keep_rate: float in (0, 1], or one per selection layer; 0.7 in the
            paper. Calls may override it (`keep_rate=`).
        guidance: `"text"` (TRIPS: the `"text_embedding"` input guides;
            without one, the image does), `"image"` (EViT), `"text+image"`
            or `"random"`.
        query_projection: how the text embedding reaches the encoder's width:
            `None` (it has that width already), an int (the text width: a new
            trainable `Dense(text_width -> width)` is created, and a warning
            says so, since it must be trained), or a layer the caller owns,
            e.g. a trained `keras.layers.Dense`.
        fuse_inattentive: bool. Fuse the tokens not kept into one token.
        name: the model's name; default `"<encoder name>_trips"`.

    Returns:
        A `TRIPSSelectingEncoder`.

    Example:
    ```python
    clip = keras_hub.models.CLIPBackbone.from_preset("clip_vit_base_patch16")
    vision = keras_trips.models.with_patch_selection(
        clip.vision_encoder, selection_layers=(4, 9), keep_rate=0.7,
        query_projection=clip.text_encoder.hidden_dim,
    )
    ```
    """
    if isinstance(query_projection, bool) or not (
        query_projection is None
        or isinstance(query_projection, (int, keras.layers.Layer))
    ):
        raise ValueError(
            "`query_projection` must be None, the text width (int) or a layer. "
            f"Received: {query_projection!r}"
        )
    if isinstance(query_projection, int):
        text_width = query_projection
        if text_width < 1:
            raise ValueError(
                f"`query_projection` must be a positive width. Received: {text_width}"
            )
        query_projection = keras.layers.Dense(
            encoder.hidden_dim, dtype=encoder.dtype_policy, name="query_projection"
        )
        query_projection.build((None, text_width))
        warnings.warn(
            f"with_patch_selection: created a new Dense({text_width} -> "
            f"{encoder.hidden_dim}) `query_projection` (randomly initialised, "
            "trainable, part of the returned model) to map the text embedding "
            "to the encoder's width; train it, or pass a trained layer.",
            stacklevel=2,
        )
    return TRIPSSelectingEncoder(
        encoder,
        selection_layers,
        keep_rate=keep_rate,
        guidance=guidance,
        query_projection=query_projection,
        fuse_inattentive=fuse_inattentive,
        name=name or f"{encoder.name}_trips",
    )

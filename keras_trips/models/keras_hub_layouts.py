"""Where the parts of a keras-hub vision encoder are, for `with_patch_selection`.

Patch selection sits between a block's attention residual and its MLP, so a
block must be run in two halves. A layout names, for one keras-hub
architecture, the layers that make up the embedding, each half of a block
and the head; `TRIPSSelectingEncoder` runs them in order. Layouts hold no
state and no weights: every layer they return belongs to the encoder.
"""

import keras_hub


class VisionEncoderLayout:
    """The layout of one keras-hub vision encoder class.

    Attributes:
        encoder_class: the keras-hub class the layout describes.
    """

    encoder_class = None

    def num_prefix_tokens(self, encoder):
        """Tokens before the patches that are never scored or pruned."""
        raise NotImplementedError

    def embed(self, encoder, images, training=None):
        """The token sequence `(B, num_prefix_tokens + N, D)` the blocks see."""
        raise NotImplementedError

    def blocks(self, encoder):
        raise NotImplementedError

    def attention_norm(self, block):
        """The LayerNorm in front of the block's attention."""
        raise NotImplementedError

    def attention(self, block):
        """The block's `keras.layers.MultiHeadAttention`."""
        raise NotImplementedError

    def attention_branch(self, block, attended, training=None):
        """What the block applies to the attention output before the residual
        add (dropout, layer scale, drop path)."""
        return attended

    def mlp_branch(self, block, tokens, training=None):
        """The block's second residual branch, MLP with its norm."""
        raise NotImplementedError

    def head(self, encoder, tokens, training=None, intermediate=None):
        """The model's outputs from the last block's tokens."""
        raise NotImplementedError

    def image_shape(self, encoder):
        return tuple(encoder.image_shape)

    def patch_grid(self, encoder):
        """`(rows, columns)` of patches, in the order the tokens list them."""
        raise NotImplementedError

    def intermediate_block(self, encoder):
        """Index of a block whose output is also returned, or `None`."""
        return None


def _grid(image_shape, data_format, patch_size):
    height, width = (
        image_shape[:2] if data_format == "channels_last" else image_shape[1:]
    )
    patch_height, patch_width = (
        (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    )
    return height // patch_height, width // patch_width


class ViTLayout(VisionEncoderLayout):
    encoder_class = keras_hub.models.ViTBackbone

    def num_prefix_tokens(self, encoder):
        return int(encoder.use_class_token)

    def embed(self, encoder, images, training=None):
        tokens = encoder.get_layer("vit_patching_and_embedding")(images)
        return encoder.get_layer("vit_encoder").dropout(tokens, training=training)

    def blocks(self, encoder):
        return encoder.get_layer("vit_encoder").encoder_layers

    def attention_norm(self, block):
        return block.layer_norm_1

    def attention(self, block):
        return block.mha

    def attention_branch(self, block, attended, training=None):
        return block.dropout(attended, training=training)

    def mlp_branch(self, block, tokens, training=None):
        return block.mlp(block.layer_norm_2(tokens), training=training)

    def head(self, encoder, tokens, training=None, intermediate=None):
        return encoder.get_layer("vit_encoder").layer_norm(tokens)

    def patch_grid(self, encoder):
        return _grid(encoder.image_shape, encoder.data_format, encoder.patch_size)


class CLIPLayout(VisionEncoderLayout):
    encoder_class = keras_hub.models.CLIPVisionEncoder

    def num_prefix_tokens(self, encoder):
        return 1

    def embed(self, encoder, images, training=None):
        return encoder.pre_layer_norm(encoder.embedding(images, training=training))

    def blocks(self, encoder):
        return encoder.encoder_layers

    def attention_norm(self, block):
        return block.layer_norm_1

    def attention(self, block):
        return block.attention

    def mlp_branch(self, block, tokens, training=None):
        hidden = block.activation(block.dense_1(block.layer_norm_2(tokens)))
        return block.dense_2(hidden)

    def head(self, encoder, tokens, training=None, intermediate=None):
        sequence = encoder.layer_norm(tokens)
        if encoder.intermediate_output_index is None:
            return sequence
        return {"sequence_output": sequence, "intermediate_output": intermediate}

    def patch_grid(self, encoder):
        return _grid(
            encoder.image_shape, encoder.embedding.data_format, encoder.patch_size
        )

    def intermediate_block(self, encoder):
        return encoder.intermediate_output_index


class SigLIPLayout(VisionEncoderLayout):
    encoder_class = keras_hub.models.SigLIPVisionEncoder

    def num_prefix_tokens(self, encoder):
        return 0

    def embed(self, encoder, images, training=None):
        return encoder.embedding(images, training=training)

    def blocks(self, encoder):
        return encoder.encoder_layers

    def attention_norm(self, block):
        return block.layer_norm1

    def attention(self, block):
        return block.self_attn

    def mlp_branch(self, block, tokens, training=None):
        return block.mlp(block.layer_norm2(tokens), training=training)

    def head(self, encoder, tokens, training=None, intermediate=None):
        # The attention-pooling head attends over whatever tokens are left.
        return encoder.head(encoder.post_layer_norm(tokens), training=training)

    def patch_grid(self, encoder):
        return _grid(
            encoder.image_shape, encoder.embedding.data_format, encoder.patch_size
        )


class DINOV2Layout(VisionEncoderLayout):
    encoder_class = keras_hub.models.DINOV2Backbone

    def num_prefix_tokens(self, encoder):
        # [CLS] then the register tokens.
        return 1 + encoder.num_register_tokens

    def embed(self, encoder, images, training=None):
        return encoder.embeddings(images, training=training)

    def blocks(self, encoder):
        return encoder.encoder.layers

    def attention_norm(self, block):
        return block.norm1

    def attention(self, block):
        return block.attention.attention

    def attention_branch(self, block, attended, training=None):
        attended = block.attention.dropout(attended, training=training)
        attended = block.layer_scale1(attended, training=training)
        return block.drop_path(attended, training=training)

    def mlp_branch(self, block, tokens, training=None):
        hidden = block.mlp(block.norm2(tokens, training=training), training=training)
        hidden = block.layer_scale2(hidden, training=training)
        return block.drop_path(hidden, training=training)

    def head(self, encoder, tokens, training=None, intermediate=None):
        return encoder.layernorm(tokens)

    def patch_grid(self, encoder):
        return _grid(
            encoder.image_shape, encoder.embeddings.data_format, encoder.patch_size
        )


LAYOUTS = (ViTLayout(), CLIPLayout(), SigLIPLayout(), DINOV2Layout())


def layout_of(encoder):
    """The layout of a supported keras-hub vision encoder, or a ValueError."""
    for layout in LAYOUTS:
        if isinstance(encoder, layout.encoder_class):
            return layout
    supported = ", ".join(layout.encoder_class.__name__ for layout in LAYOUTS)
    hint = ""
    if hasattr(encoder, "vision_encoder"):
        hint = " For a two-tower model pass its `.vision_encoder`."
    raise ValueError(
        f"`encoder` must be a keras-hub {supported}. Received: "
        f"{type(encoder).__name__}.{hint}"
    )

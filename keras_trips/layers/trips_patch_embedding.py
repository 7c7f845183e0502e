import math

import keras
from keras import ops

from keras_trips.layers.input_checks import check_tensor

STEMS = ("patch", "conv")


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSPatchEmbedding(keras.layers.Layer):
    """ViT patch embedding: patches, a [CLS] token and learned positions.

    The patches are embedded by one strided convolution (`stem="patch"`, the
    ViT's linear patch projection, which imported weights use) or by a
    convolutional stem (`stem="conv"`: 3x3 stride-2 convolutions, each
    followed by LayerNorm and GELU, halving the resolution until one cell is
    a patch, then a 1x1 projection; Xiao et al., "Early Convolutions Help
    Transformers See Better", 2021). The stem adds a little compute and makes
    a ViT trained from scratch on small data learn far faster.

    Position embeddings saved for another grid size (weights trained at
    224 px loaded into a 384 px encoder) are bicubically interpolated on load,
    the [CLS] position kept as is.

    Args:
        image_shape: `(height, width, channels)` of the input images.
        patch_size: int. Side of the square patches.
        hidden_dim: int. Width of the embeddings.
        use_bias: bool. Whether the patch projection has a bias (CLIP's has
            none).
        stem: `"patch"` or `"conv"`. How the patches are embedded (above).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    embedding = keras_trips.layers.TRIPSPatchEmbedding((64, 64, 3), 8, 128)
    embedding(keras.random.uniform((2, 64, 64, 3))).shape  # (2, 1 + 64, 128)
    ```
    """

    def __init__(
        self, image_shape, patch_size, hidden_dim, use_bias=True, stem="patch", **kwargs
    ):
        super().__init__(**kwargs)
        image_shape = tuple(image_shape)
        if len(image_shape) != 3:
            raise ValueError(
                "`image_shape` must be (height, width, channels). "
                f"Received: {image_shape}"
            )
        height, width, _ = image_shape
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"The image size {height}x{width} is not divisible by "
                f"patch_size={patch_size}."
            )
        if stem not in STEMS:
            raise ValueError(f"`stem` must be one of {STEMS}. Received: {stem!r}")
        num_halvings = round(math.log2(patch_size))
        if stem == "conv" and 2**num_halvings != patch_size:
            raise ValueError(
                "The convolutional stem halves the resolution per layer, so "
                f"`patch_size` must be a power of 2. Received: {patch_size}"
            )

        # === Config ===
        self.image_shape = image_shape
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.use_bias = use_bias
        self.stem = stem
        self.grid_shape = (height // patch_size, width // patch_size)
        self.num_patches = self.grid_shape[0] * self.grid_shape[1]

        # === Layers ===
        self.stem_layers = []
        if stem == "conv":
            # Channels double per halving and end at hidden_dim / 2 before the
            # 1x1 projection (Xiao et al.).
            for i in range(num_halvings):
                channels = max(16, hidden_dim // 2 ** (num_halvings - i))
                self.stem_layers += [
                    keras.layers.Conv2D(
                        channels,
                        kernel_size=3,
                        strides=2,
                        padding="same",
                        dtype=self.dtype_policy,
                        name=f"stem_conv_{i}",
                    ),
                    keras.layers.LayerNormalization(
                        epsilon=1e-6, dtype=self.dtype_policy, name=f"stem_norm_{i}"
                    ),
                    keras.layers.Activation(
                        "gelu", dtype=self.dtype_policy, name=f"stem_gelu_{i}"
                    ),
                ]
        projection_size = 1 if stem == "conv" else patch_size
        self.projection = keras.layers.Conv2D(
            hidden_dim,
            kernel_size=projection_size,
            strides=projection_size,
            use_bias=use_bias,
            dtype=self.dtype_policy,
            name="projection",
        )
        self.build()

    def build(self, input_shape=None):
        shape = (None, *self.image_shape)
        for layer in self.stem_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.projection.build(shape)
        self.class_token = self.add_weight(
            shape=(self.hidden_dim,),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="class_token",
        )
        self.position_embedding = self.add_weight(
            shape=(1 + self.num_patches, self.hidden_dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="position_embedding",
        )

    def call(self, images):
        check_tensor(images, "images", ("batch", *self.image_shape), "float")
        for layer in self.stem_layers:
            images = layer(images)
        patches = self.projection(images)
        patches = ops.reshape(patches, (-1, self.num_patches, self.hidden_dim))
        batch = ops.shape(patches)[0]
        class_token = ops.broadcast_to(
            ops.cast(self.class_token, patches.dtype), (batch, 1, self.hidden_dim)
        )
        tokens = ops.concatenate([class_token, patches], axis=1)
        return tokens + ops.cast(self.position_embedding, patches.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1 + self.num_patches, self.hidden_dim)

    def load_own_variables(self, store):
        # Keras saves this layer's own weights in creation order.
        class_token, positions = store["0"], store["1"]
        positions = interpolate_position_embedding(positions, self.grid_shape)
        self.class_token.assign(class_token)
        self.position_embedding.assign(positions)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_shape": self.image_shape,
                "patch_size": self.patch_size,
                "hidden_dim": self.hidden_dim,
                "use_bias": self.use_bias,
                "stem": self.stem,
            }
        )
        return config


def interpolate_position_embedding(positions, grid_shape):
    """Resizes `(1 + H0 * W0, D)` ViT positions to `(1 + H * W, D)`, bicubic.

    The source grid must be square; the [CLS] position is kept as is.
    """
    positions = ops.convert_to_tensor(positions)
    num_source, width = positions.shape
    target = 1 + grid_shape[0] * grid_shape[1]
    if num_source == target:
        return positions
    source_side = math.isqrt(num_source - 1)
    if source_side * source_side != num_source - 1:
        raise ValueError(
            "Cannot interpolate position embeddings: the source has "
            f"{num_source - 1} patch positions, not a square grid "
            f"(shape {tuple(positions.shape)}, target grid {grid_shape})."
        )
    grid = ops.reshape(positions[1:], (1, source_side, source_side, width))
    grid = ops.image.resize(grid, grid_shape, interpolation="bicubic")
    grid = ops.reshape(ops.cast(grid, positions.dtype), (-1, width))
    return ops.concatenate([positions[:1], grid], axis=0)


def patch_centers(grid_shape):
    """`(rows * columns, 2)` normalised `(x, y)` centres of a patch grid, in
    the row-major order of the patch tokens."""
    rows, columns = grid_shape
    y, x = ops.meshgrid(
        (ops.arange(rows, dtype="float32") + 0.5) / rows,
        (ops.arange(columns, dtype="float32") + 0.5) / columns,
        indexing="ij",
    )
    return ops.stack([ops.reshape(x, (-1,)), ops.reshape(y, (-1,))], axis=-1)

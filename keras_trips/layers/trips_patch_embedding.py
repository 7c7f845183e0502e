import math

import keras
from keras import ops

from keras_trips.layers.input_checks import check_tensor


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSPatchEmbedding(keras.layers.Layer):
    """ViT patch embedding: patches, a [CLS] token and learned positions.

    Position embeddings saved for another grid size (weights trained at
    224 px loaded into a 384 px encoder) are bicubically interpolated on load,
    the [CLS] position kept as is.

    Args:
        image_shape: `(height, width, channels)` of the input images.
        patch_size: int. Side of the square patches.
        hidden_dim: int. Width of the embeddings.
        use_bias: bool. Whether the patch projection has a bias (CLIP's has
            none).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    embedding = keras_trips.layers.TRIPSPatchEmbedding((64, 64, 3), 8, 128)
    embedding(keras.random.uniform((2, 64, 64, 3))).shape  # (2, 1 + 64, 128)
    ```
    """

    def __init__(self, image_shape, patch_size, hidden_dim, use_bias=True, **kwargs):
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

        # === Config ===
        self.image_shape = image_shape
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.use_bias = use_bias
        self.grid_shape = (height // patch_size, width // patch_size)
        self.num_patches = self.grid_shape[0] * self.grid_shape[1]

        # === Layers ===
        self.projection = keras.layers.Conv2D(
            hidden_dim,
            kernel_size=patch_size,
            strides=patch_size,
            use_bias=use_bias,
            dtype=self.dtype_policy,
            name="projection",
        )
        self.build()

    def build(self, input_shape=None):
        self.projection.build((None, *self.image_shape))
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

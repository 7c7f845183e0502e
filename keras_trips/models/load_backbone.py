import keras

from keras_trips.layers.trips_patch_embedding import interpolate_position_embedding
from keras_trips.models import preset_directory


def load_backbone(path, image_size=None):
    """The `TRIPSBackbone` of a saved `.keras` backbone or of any saved model
    that holds one (`.backbone`: a pretrainer, a task model).

    With `image_size` other than the saved one (fine-tuning at a higher
    resolution than pre-training), the backbone is rebuilt for
    `image_size`-square images and every weight copied over, the ViT's
    position embeddings bicubically interpolated to the new patch grid (the
    [CLS] position kept). At keep rate 1.0 the result is the plain ViT with
    those interpolated positions.

    Args:
        path: str. A `.keras` file or a preset directory (`save_to_preset`).
        image_size: int or `None` (keep the saved size).

    Example:
    ```python
    backbone = load_backbone("runs/pretrain/pretrainer.keras", image_size=96)
    backbone.vision_encoder.image_shape  # (96, 96, 3)
    ```
    """
    if preset_directory.is_preset_directory(path):
        loaded = preset_directory.load_preset_backbone(path)
    else:
        loaded = keras.saving.load_model(path, compile=False)
    backbone = getattr(loaded, "backbone", loaded)
    if not hasattr(backbone, "vision_encoder"):
        raise ValueError(
            f"{path} holds a {type(loaded).__name__}, neither a TRIPS backbone "
            "nor a model with one (`.backbone`)."
        )
    image_shape = tuple(backbone.vision_encoder.image_shape)
    if image_size is None or image_shape[:2] == (image_size, image_size):
        return backbone
    patch_size = backbone.vision_encoder.patch_size
    if image_size % patch_size:
        raise ValueError(
            f"`image_size` ({image_size}) must be a multiple of the patch size "
            f"({patch_size})."
        )
    config = backbone.get_config()
    config["image_shape"] = (image_size, image_size, image_shape[2])
    resized = type(backbone).from_config(config)
    grid = resized.vision_encoder.patch_embedding.grid_shape
    for source, target in zip(backbone.weights, resized.weights, strict=True):
        if source.path != target.path:
            raise ValueError(
                f"The weights of {path} do not line up with the rebuilt backbone "
                f"({source.path} vs {target.path})."
            )
        value = source.value
        if tuple(source.shape) != tuple(target.shape):
            value = interpolate_position_embedding(value, grid)
        target.assign(value)
    return resized

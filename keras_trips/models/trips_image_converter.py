import keras
import keras_hub

from keras_trips.data.image_ops import CLIP_MEAN, CLIP_STD
from keras_trips.models.trips_backbone import TRIPSBackbone


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSImageConverter(keras_hub.layers.ImageConverter):
    """Raw 0-255 pixels to a `TRIPSBackbone`'s images: resize, then CLIP
    normalisation.

    keras-hub's `ImageConverter` with the settings of the training input
    (`keras_trips.data`): a bilinear, antialiased resize of the whole image
    (no crop to the aspect ratio), then `(x / 255 - CLIP_MEAN) / CLIP_STD`
    per channel. It runs on any backend and inside `tf.data`. Preset
    directories hold one (`image_converter.json`), so
    `TRIPSImageConverter.from_preset(path)`, and keras-hub's own
    `keras_hub.layers.ImageConverter.from_preset(path)`, give the converter
    of a saved model.

    Args:
        image_size: `(height, width)` of the model's images.
        **kwargs: other `keras_hub.layers.ImageConverter` arguments.

    Example:
    ```python
    converter = keras_trips.models.TRIPSImageConverter(image_size=(64, 64))
    pixels = np.random.randint(0, 256, (2, 480, 640, 3)).astype("uint8")
    images = converter(pixels)  # (2, 64, 64, 3) float32, CLIP-normalised
    ```
    """

    backbone_cls = TRIPSBackbone

    def __init__(self, image_size=(224, 224), **kwargs):
        kwargs.setdefault("scale", [1.0 / (255.0 * std) for std in CLIP_STD])
        kwargs.setdefault(
            "offset", [-mean / std for mean, std in zip(CLIP_MEAN, CLIP_STD)]
        )
        kwargs.setdefault("crop_to_aspect_ratio", False)
        kwargs.setdefault("antialias", True)
        super().__init__(image_size=image_size, **kwargs)

import gzip
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from keras_trips.datasets.scenes import catalog

# The only size at which the Noto Color Emoji bitmap font loads.
_EMOJI_FONT_SIZE = 109
# Fashion-MNIST photos have a black background; darker pixels are background.
_FASHION_THRESHOLD = 16


class SpriteBank:
    """Draws object sprites as RGBA arrays with a binary alpha and a tight box.

    Every sprite returned has alpha in {0, 255} and at least one opaque pixel
    on each border row and column, so an object's box is exactly the sprite's
    placement rectangle. Emoji and shape sprites are cached per size; emoji
    glyphs are rendered once.

    Args:
        fashion_split: str. `"train"` or `"t10k"`: which Fashion-MNIST photos
            to draw from (the generator keeps test photos for the test split).

    Example:
    ```python
    bank = SpriteBank()
    sprite = bank.sprite(SceneCategory("circle", "circles", "shape", "circle"),
                         size=16, color="red")
    sprite.shape  # (16, 16, 4)
    ```
    """

    def __init__(self, fashion_split="train"):
        self.fashion_split = fashion_split
        self._cache = {}
        self._emoji_font = None
        self._fashion = None

    def sprite(self, category, size, color=None, variant=0):
        """The RGBA sprite of `category` whose longer side is `size` pixels.

        `color` names the fill of a shape; `variant` picks a Fashion-MNIST
        photo of the class (any int; wrapped to the number available).
        """
        if category.kind == "fashion":
            photos = self._fashion_photos(category.source)
            return _fit(_fashion_rgba(photos[variant % len(photos)]), size)
        key = (category.kind, category.source, size, color)
        if key not in self._cache:
            if category.kind == "shape":
                self._cache[key] = _shape_sprite(category.source, size, color)
            else:
                self._cache[key] = _fit(self._emoji_rgba(category.source), size)
        return self._cache[key]

    def _emoji_rgba(self, character):
        key = ("emoji-base", character)
        if key not in self._cache:
            if self._emoji_font is None:
                self._emoji_font = ImageFont.truetype(
                    catalog.EMOJI_FONT_PATH, _EMOJI_FONT_SIZE
                )
            canvas = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text(
                (20, 20), character, font=self._emoji_font, embedded_color=True
            )
            self._cache[key] = canvas.crop(canvas.getchannel("A").getbbox())
        return self._cache[key]

    def _fashion_photos(self, class_index):
        if self._fashion is None:
            prefix = os.path.join(catalog.FASHION_MNIST_DIR, self.fashion_split)
            with gzip.open(f"{prefix}-images-idx3-ubyte.gz") as file:
                images = np.frombuffer(file.read(), np.uint8, offset=16)
            with gzip.open(f"{prefix}-labels-idx1-ubyte.gz") as file:
                labels = np.frombuffer(file.read(), np.uint8, offset=8)
            images = images.reshape(-1, 28, 28)
            self._fashion = {c: images[labels == c] for c in catalog.FASHION}
        return self._fashion[class_index]


def _fashion_rgba(photo):
    alpha = np.where(photo > _FASHION_THRESHOLD, 255, 0).astype(np.uint8)
    rgba = np.stack([photo, photo, photo, alpha], axis=-1)
    image = Image.fromarray(rgba, "RGBA")
    return image.crop(image.getchannel("A").getbbox())


def _fit(image, size):
    """Resize so the longer side is `size`, binarise alpha, crop tight."""
    scale = size / max(image.size)
    width = max(1, round(image.width * scale))
    height = max(1, round(image.height * scale))
    rgba = np.array(image.resize((width, height), Image.LANCZOS))
    opaque = rgba[..., 3] >= 128
    if not opaque.any():
        opaque = rgba[..., 3] > 0
    rgba[..., 3] = np.where(opaque, 255, 0)
    return _crop_to_alpha(rgba)


def _crop_to_alpha(rgba):
    opaque = rgba[..., 3] > 0
    rows = np.flatnonzero(opaque.any(axis=1))
    cols = np.flatnonzero(opaque.any(axis=0))
    return rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _shape_sprite(shape, size, color):
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    fill = (*catalog.COLORS[color], 255)
    last = size - 1
    if shape == "circle":
        draw.ellipse((0, 0, last, last), fill=fill)
    elif shape == "square":
        draw.rectangle((0, 0, last, last), fill=fill)
    else:
        draw.polygon([(last / 2, 0), (last, last), (0, last)], fill=fill)
    rgba = np.array(image)
    rgba[..., 3] = np.where(rgba[..., 3] > 0, 255, 0)
    return _crop_to_alpha(rgba)

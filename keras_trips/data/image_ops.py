"""Image operations for the tf.data input pipelines.

Per-example random operations take an explicit `seed` (a shape-(2,) int
tensor) and use stateless ops, so augmentation is reproducible whatever the
map parallelism. Boxes are normalised `(x1, y1, x2, y2)` in [0, 1] with
shape `(..., 4)`, and they move with the image.
"""

import numbers

import tensorflow as tf

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# A token no caption contains, used to swap two words in three replacements.
_SWAP_PLACEHOLDER = "<trips-swap>"


def decode_image(contents):
    """Decode JPEG/PNG/GIF/BMP bytes to a uint8 `(H, W, 3)` tensor."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize(image, image_size):
    """Resize to `(image_size, image_size)`, or `(height, width)` given a
    pair (bilinear, antialiased), float32 in the input's value range."""
    if isinstance(image_size, numbers.Integral):
        image_size = (image_size, image_size)
    return tf.image.resize(image, image_size, antialias=True)


def random_resized_crop(
    image, image_size, seed, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), boxes=None
):
    """Crop a random window (area fraction in `scale`, aspect in `ratio`)
    and resize it to `image_size`; boxes, if given, stay inside the crop
    and are re-expressed in its coordinates.

    Returns `(image, boxes)`; `boxes` is None when none were given.
    """
    if boxes is None:
        covered_boxes = tf.zeros((1, 0, 4))
        min_object_covered = 0.0
    else:
        # The crop must contain the boxes whole, so a grounding target is
        # never cut; sample_distorted_bounding_box wants (y1, x1, y2, x2).
        covered_boxes = tf.reshape(tf.gather(boxes, [1, 0, 3, 2], axis=-1), (1, -1, 4))
        min_object_covered = 1.0
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=covered_boxes,
        seed=seed,
        min_object_covered=min_object_covered,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    cropped = tf.slice(image, begin, size)
    if boxes is not None:
        boxes = crop_boxes(boxes, tf.shape(image)[:2], begin[:2], size[:2])
    return resize(cropped, image_size), boxes


def crop_boxes(boxes, image_shape, crop_offset, crop_shape):
    """Re-express normalised boxes in the coordinates of a pixel crop window
    `(offset_y, offset_x)`, `(height, width)` of an image of `image_shape`."""
    height, width = tf.unstack(tf.cast(image_shape, tf.float32))
    offset_y, offset_x = tf.unstack(tf.cast(crop_offset, tf.float32))
    crop_height, crop_width = tf.unstack(tf.cast(crop_shape, tf.float32))
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    new_boxes = tf.stack(
        [
            (x1 * width - offset_x) / crop_width,
            (y1 * height - offset_y) / crop_height,
            (x2 * width - offset_x) / crop_width,
            (y2 * height - offset_y) / crop_height,
        ],
        axis=-1,
    )
    return tf.clip_by_value(new_boxes, 0.0, 1.0)


def flip_boxes(boxes):
    """Mirror normalised xyxy boxes horizontally."""
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack([1.0 - x2, y1, 1.0 - x1, y2], axis=-1)


def swap_left_right(text):
    """Swap the whole words "left" and "right" (any case) in a string tensor."""
    text = tf.strings.regex_replace(text, r"(?i)\bleft\b", _SWAP_PLACEHOLDER)
    text = tf.strings.regex_replace(text, r"(?i)\bright\b", "left")
    return tf.strings.regex_replace(text, _SWAP_PLACEHOLDER, "right")


def random_flip(image, text, seed, boxes=None):
    """With probability 1/2 mirror the image, swap "left"/"right" in the text
    and mirror the boxes, all together (as ALBEF does). `text` and `boxes`
    may be None.

    Returns `(image, text, boxes)`.
    """
    flip = tf.random.stateless_uniform([], seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    if text is not None:
        text = tf.cond(flip, lambda: swap_left_right(text), lambda: text)
    if boxes is not None:
        boxes = tf.cond(flip, lambda: flip_boxes(boxes), lambda: boxes)
    return image, text, boxes


def normalize_images(images):
    """Map 0-255 pixel values to CLIP-normalised float32."""
    images = tf.cast(images, tf.float32) / 255.0
    return (images - tf.constant(CLIP_MEAN)) / tf.constant(CLIP_STD)

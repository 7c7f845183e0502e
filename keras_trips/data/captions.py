"""Image-caption readers: ALBEF-style JSON lists and COCO captions.

Both yield `features` dicts only (pre-training and retrieval have no
separate targets):

- `"images"`: float32 `(B, image_size, image_size, 3)`, CLIP-normalised;
- `"token_ids"`: int32 `(B, L)`; `"padding_mask"`: int32 `(B, L)`;
- with MLM masking (`mask_rate > 0`, the default for pre-training), also
  `"masked_token_ids"` int32 `(B, L)` (the masked text; `"token_ids"` stays
  unmasked), `"mask_positions"` int32 `(B, P)`, `"mask_ids"` int32 `(B, P)`
  and `"mask_weights"` float32 `(B, P)`.
"""

import os

from keras_trips.data.pipeline import build_dataset
from keras_trips.data.trips_text_preprocessor import TRIPSTextPreprocessor
from keras_trips.data.validation import (
    SkipLog,
    default_image_root,
    keep_rows_with_good_images,
    read_json,
    require_list,
)

CAPTION_MODES = ("random", "all")


def albef_json_dataset(
    annotation_file,
    image_root=None,
    preprocessor=None,
    batch_size=32,
    image_size=64,
    training=True,
    captions="random",
    validate_images="header",
    **kwargs,
):
    """Read an ALBEF-style JSON list of `{"image": path, "caption": str or
    [str, ...]}` into batched pre-training features.

    Args:
        annotation_file: path of the JSON list.
        image_root: folder the image paths are relative to; defaults to the
            annotation file's folder.
        preprocessor: a `TRIPSTextPreprocessor`; defaults to one with MLM
            masking (`mask_rate=0.15`, `sequence_length=30`).
        batch_size: int. image_size: int.
        training: bool. Shuffle and augment (random resized crop with scale
            (0.5, 1), flip with "left"/"right" swapped in the caption).
        captions: `"random"` (one example per image, a caption drawn anew
            each time, as ALBEF pre-training does) or `"all"` (one example
            per caption).
        validate_images: `"header"`, `"full"` or None (see
            `validation.image_problem`).
        **kwargs: `shuffle`, `seed`, `deterministic`, `cache_images`, `shard`,
            `drop_remainder` of `pipeline.build_dataset`.
    """
    rows = read_albef_json(annotation_file, image_root, validate_images)
    return _caption_dataset(
        rows, preprocessor, batch_size, image_size, training, captions, **kwargs
    )


def read_albef_json(annotation_file, image_root=None, validate_images="header"):
    """Parse and validate an ALBEF-style JSON list; returns rows
    `{"row_id", "image" (absolute path), "captions" (list)}`, broken ones
    skipped and reported."""
    data = require_list(read_json(annotation_file), annotation_file)
    image_root = default_image_root(annotation_file, image_root)
    skips = SkipLog(annotation_file)
    rows = []
    for index, item in enumerate(data):
        caption = item.get("caption") if isinstance(item, dict) else None
        image = item.get("image") if isinstance(item, dict) else None
        caption_list = [caption] if isinstance(caption, str) else caption
        if (
            not isinstance(image, str)
            or not isinstance(caption_list, list)
            or not caption_list
            or not all(isinstance(c, str) and c.strip() for c in caption_list)
        ):
            skips.add(f"row {index}", "malformed row: needs 'image' and 'caption'")
            continue
        rows.append(
            {
                "row_id": f"row {index}",
                "image": os.path.join(image_root, image),
                "captions": caption_list,
            }
        )
    return _keep_valid(rows, skips, len(data), validate_images)


def coco_captions_dataset(
    annotation_file,
    image_root=None,
    preprocessor=None,
    batch_size=32,
    image_size=64,
    training=True,
    captions="random",
    validate_images="header",
    **kwargs,
):
    """Read a COCO captions file (`{"images": [{"id", "file_name"}],
    "annotations": [{"image_id", "caption"}]}`) into batched features.

    Arguments as in `albef_json_dataset`; rows are images, with all their
    captions.
    """
    rows = read_coco_captions(annotation_file, image_root, validate_images)
    return _caption_dataset(
        rows, preprocessor, batch_size, image_size, training, captions, **kwargs
    )


def read_coco_captions(annotation_file, image_root=None, validate_images="header"):
    """Parse and validate a COCO captions file; returns rows (one per image)
    as `read_albef_json`'s, broken ones skipped and reported."""
    data = read_json(annotation_file)
    images = require_list(data, annotation_file, "images")
    annotations = require_list(data, annotation_file, "annotations")
    image_root = default_image_root(annotation_file, image_root)
    skips = SkipLog(annotation_file)
    captions_by_image = {}
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or not isinstance(
            annotation.get("caption"), str
        ):
            skips.add(
                f"annotation {index}", "malformed row: needs 'image_id', 'caption'"
            )
            continue
        captions_by_image.setdefault(annotation.get("image_id"), []).append(
            annotation["caption"]
        )
    rows = []
    for index, image in enumerate(images):
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
            skips.add(f"image {index}", "malformed row: needs 'id' and 'file_name'")
        elif image.get("id") not in captions_by_image:
            skips.add(f"image {index}", "malformed row: image without captions")
        else:
            rows.append(
                {
                    "row_id": f"image {image['id']}",
                    "image": os.path.join(image_root, image["file_name"]),
                    "captions": captions_by_image[image["id"]],
                }
            )
    return _keep_valid(rows, skips, len(images), validate_images)


def _keep_valid(rows, skips, total, validate_images):
    rows = keep_rows_with_good_images(rows, skips, validate_images)
    skips.report(total)
    return rows


def _caption_dataset(
    rows, preprocessor, batch_size, image_size, training, captions, **kwargs
):
    if captions not in CAPTION_MODES:
        raise ValueError(f"captions must be one of {CAPTION_MODES}, got {captions!r}")
    if captions == "all":
        columns = {
            "image": [row["image"] for row in rows for _ in row["captions"]],
            "text": [caption for row in rows for caption in row["captions"]],
        }
    else:
        columns = {
            "image": [row["image"] for row in rows],
            "text": [row["captions"] for row in rows],
        }
    if preprocessor is None:
        preprocessor = TRIPSTextPreprocessor(mask_rate=0.15)
    return build_dataset(
        columns,
        preprocessor,
        batch_size,
        image_size,
        random_crop_scale=(0.5, 1.0) if training else None,
        random_flip=training,
        shuffle=kwargs.pop("shuffle", training),
        **kwargs,
    )

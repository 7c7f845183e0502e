"""Referring-expression reader (RefCOCO style): one phrase, one box.

Yields `(features, boxes)`: the features of `captions.py` (the phrase as
text, no MLM masking by default) and float32 `(B, 4)` boxes, normalised
`(x1, y1, x2, y2)` in [0, 1] of the output image, transformed with it (random
resized crop keeps the box whole; flip mirrors it and swaps "left"/"right"
in the phrase).
"""

import math
import os

from keras_trips.data.pipeline import build_dataset
from keras_trips.data.trips_text_preprocessor import TRIPSTextPreprocessor
from keras_trips.data.validation import (
    MalformedRow,
    SkipLog,
    default_image_root,
    image_sizes,
    keep_rows_with_good_images,
    parse_rows,
    read_json,
    require_list,
    text_field,
    texts_field,
)

BOX_FORMATS = ("xywh", "xyxy")


def refcoco_dataset(
    annotation_file,
    image_root=None,
    box_format="xywh",
    preprocessor=None,
    batch_size=32,
    image_size=64,
    training=True,
    validate_images="full",
    **kwargs,
):
    """Read a JSON list of `{"image": path, "text": str, "bbox": [4 numbers]}`
    (pixels; optional `"width"`, `"height"`, else read from the image header)
    into batched `(features, boxes)`.

    Args:
        annotation_file: path of the JSON list. A row may give `"sentences"`
            (a list) instead of `"text"`; one is drawn each time.
        image_root: defaults to the annotation file's folder.
        box_format: `"xywh"` (COCO) or `"xyxy"`, in pixels.
        training: bool. Shuffle, random resized crop (scale (0.5, 1), box
            kept whole) and flip.
        preprocessor, batch_size, image_size, validate_images, **kwargs: as
            in `albef_json_dataset`.
    """
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format must be one of {BOX_FORMATS}, got {box_format!r}")
    data = require_list(read_json(annotation_file), annotation_file)
    image_root = default_image_root(annotation_file, image_root)

    def parse(item):
        texts = texts_field(item, "sentences" if "sentences" in item else "text")
        box = item["bbox"]
        if not isinstance(box, list) or len(box) != 4:
            raise MalformedRow(f"'bbox' must be 4 numbers, got {box!r:.60}")
        box = [_number(v, "bbox") for v in box]
        if box_format == "xywh":
            box = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
        size = (item.get("width"), item.get("height"))
        if None not in size:
            size = tuple(_number(v, "width and height") for v in size)
        return {
            "image": os.path.join(image_root, text_field(item, "image")),
            "texts": texts,
            "box": box,
            "size": size,
        }

    skips = SkipLog(annotation_file)
    rows = parse_rows(data, parse, skips)
    rows = keep_rows_with_good_images(rows, skips, validate_images)
    missing_sizes = image_sizes([r["image"] for r in rows if None in r["size"]])
    columns = {"image": [], "text": [], "boxes": []}
    for row in rows:
        width, height = missing_sizes.get(row["image"], row["size"])
        x1, y1, x2, y2 = row["box"]
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            skips.add(
                row["row_id"], f"malformed row: box {row['box']} outside the image"
            )
            continue
        columns["image"].append(row["image"])
        columns["text"].append(
            row["texts"] if len(row["texts"]) > 1 else row["texts"][0]
        )
        columns["boxes"].append([x1 / width, y1 / height, x2 / width, y2 / height])
    skips.report(len(data), kept=len(columns["image"]))
    if any(not isinstance(t, str) for t in columns["text"]):
        columns["text"] = [[t] if isinstance(t, str) else t for t in columns["text"]]
    return build_dataset(
        columns,
        preprocessor or TRIPSTextPreprocessor(),
        batch_size,
        image_size,
        target_key="boxes",
        random_crop_scale=(0.5, 1.0) if training else None,
        random_flip=training,
        shuffle=kwargs.pop("shuffle", training),
        source=annotation_file,
        **kwargs,
    )


def _number(value, name):
    """`value` as a finite float, else `MalformedRow`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedRow(f"'{name}' must be numbers, got {value!r:.40}")
    if not math.isfinite(value):
        raise MalformedRow(f"'{name}' must be finite, got {value!r}")
    return float(value)

"""NLVR2 reader: one statement about two images, true or false.

Yields `(features, label)`: features as in `captions.py` but with
`"images"` float32 `(B, 2, H, W, 3)` (left image first), and int32 `(B,)`
labels (1 = true). No flip: it would swap "left" and "right" in statements
that mean the left and the right image.
"""

import os

from keras_trips.data.pipeline import build_dataset
from keras_trips.data.trips_text_preprocessor import TRIPSTextPreprocessor
from keras_trips.data.validation import (
    MalformedRow,
    SkipLog,
    default_image_root,
    keep_rows_with_good_images,
    parse_rows,
    read_json_lines,
    text_field,
)

_LABELS = {"true": 1, "false": 0}


def nlvr2_dataset(
    annotation_file,
    image_root=None,
    preprocessor=None,
    batch_size=32,
    image_size=64,
    training=True,
    validate_images="full",
    **kwargs,
):
    """Read NLVR2 JSON lines into batched `(features, label)`.

    Each line is either ALBEF-style `{"images": [left, right], "sentence",
    "label"}` or official NLVR2 `{"identifier": "train-10171-0-0",
    "directory": 3, "sentence", "label": "True"}`, whose images are
    `[train/<directory>/]<identifier minus its last part>-img0.png` and
    `-img1.png`. Labels may be bools, 0/1 or "True"/"False".

    Args:
        annotation_file: path of the JSON-lines file.
        image_root: defaults to the annotation file's folder.
        training: bool. Shuffle (no augmentation of image pairs).
        preprocessor, batch_size, image_size, validate_images, **kwargs: as
            in `albef_json_dataset`.
    """
    data = read_json_lines(annotation_file)
    image_root = default_image_root(annotation_file, image_root)

    def parse(item):
        if item is None:
            raise MalformedRow("not valid JSON")
        images = item.get("images") or _official_image_paths(item)
        if (
            not isinstance(images, list)
            or len(images) != 2
            or not all(isinstance(p, str) and p for p in images)
        ):
            raise MalformedRow(f"'images' must be two paths, got {images!r:.60}")
        label = item["label"]
        label = _LABELS.get(label.lower()) if isinstance(label, str) else label
        if label not in (0, 1):
            raise MalformedRow(f"'label' must be true or false, got {item['label']!r}")
        return {
            "image": [os.path.join(image_root, p) for p in images],
            "sentence": text_field(item, "sentence"),
            "label": int(label),
        }

    skips = SkipLog(annotation_file)
    rows = parse_rows(data, parse, skips, "line", first_index=1)
    rows = keep_rows_with_good_images(rows, skips, validate_images)
    skips.report(len(data), kept=len(rows))
    columns = {
        "image": [row["image"] for row in rows],
        "text": [row["sentence"] for row in rows],
        "label": [row["label"] for row in rows],
    }
    return build_dataset(
        columns,
        preprocessor or TRIPSTextPreprocessor(),
        batch_size,
        image_size,
        target_key="label",
        shuffle=kwargs.pop("shuffle", training),
        source=annotation_file,
        **kwargs,
    )


def _official_image_paths(item):
    stem = text_field(item, "identifier").rsplit("-", 1)[0]
    split = stem.split("-")[0]
    folder = (
        os.path.join(split, str(item["directory"])) if "directory" in item else split
    )
    return [os.path.join(folder, f"{stem}-img{i}.png") for i in (0, 1)]

"""Selection quality: does text guidance keep the patches of what it names?"""

import os

import numpy as np
from keras import ops

from keras_trips.layers.trips_patch_embedding import patch_centers
from keras_trips.utils.compiled_function import CompiledFunction

GUIDANCES = ("text", "image", "random")


class SelectionEvaluator:
    """Measures whether patch selection keeps the object a phrase names.

    For phrases that name one object whose box is known (referring
    expressions such as "the red circle"), the backbone's vision encoder
    selects patches under each guidance mode and keep rate. A patch counts as
    kept when it leaves the last stage as a token of its own (a fused token
    does not count). Per guidance and keep rate:

    - `object_recall`: the share of the named object's patches that is kept;
    - `object_precision`: among the kept patches that lie on any object, the
      share that lies on the named object. Its chance level,
      `chance_precision`, is the named object's share of all object
      patches: what a selection blind to the phrase keeps on average.

    Both are means over the phrases. Text guidance that works keeps the
    named object before the others, so its precision rises above image
    guidance (EViT's image [CLS], which keeps what is salient) and random
    guidance, the more so the fewer patches are kept.

    Args:
        backbone: a `TRIPSBackbone`; its text tower encodes the phrases.
        keep_rates: keep rates to evaluate at, each a float or one per
            selection stage. Defaults to the backbone's own and 0.5.
        guidances: guidance modes to compare, from `"text"`, `"image"`,
            `"random"`.
        batch_size: int. Phrases per vision pass.

    Example:
    ```python
    data = selection_eval_data("test_refs.json", image_size=64, patch_size=8)
    evaluator = SelectionEvaluator(backbone)
    report = evaluator.evaluate(**data)
    report["results"][0]  # {"guidance": "text", "keep_rate": 0.7, ...}
    ```
    """

    def __init__(self, backbone, keep_rates=None, guidances=GUIDANCES, batch_size=64):
        unknown = sorted(set(guidances) - set(GUIDANCES))
        if unknown:
            raise ValueError(
                f"Unknown guidance modes {unknown}; choose from {GUIDANCES}."
            )
        if keep_rates is None:
            keep_rates = [backbone.keep_rate, 0.5]
        stage_rates = backbone.vision_encoder.stage_rates
        self.backbone = backbone
        self.keep_rates = list(dict.fromkeys(stage_rates(rate) for rate in keep_rates))
        self.guidances = tuple(guidances)
        self.batch_size = batch_size

    def kept_patches(self, images, token_ids, padding_mask, guidance, keep_rate):
        """`(M, num_patches)` bool: the patches each phrase's pass keeps."""

        def largest_weights(backbone, inputs):
            text_embedding = None
            if guidance == "text":
                states = backbone.encode_text(
                    inputs["token_ids"], inputs["padding_mask"]
                )
                text_embedding = states[:, 0]
            _, provenance = backbone.encode_image(
                inputs["images"],
                text_embedding,
                keep_rate=keep_rate,
                guidance=guidance,
                return_provenance=True,
            )
            return ops.max(provenance, axis=1)

        compiled = CompiledFunction(self.backbone, largest_weights)
        weights = compiled.predict_in_batches(
            {"images": images, "token_ids": token_ids, "padding_mask": padding_mask},
            self.batch_size,
        )
        # A kept patch's row is one-hot; a fused token's weights are at most
        # 1/2 (the top-scored patches are the kept ones).
        return weights > 0.999

    def evaluate(self, images, token_ids, padding_mask, target_patches, object_patches):
        """Selection quality of every guidance mode at every keep rate.

        Args:
            images: `(M, H, W, 3)` normalised images, one per phrase.
            token_ids, padding_mask: `(M, L)` the phrases.
            target_patches: `(M, num_patches)` bool, the named object's
                patches (`box_patch_mask`).
            object_patches: `(M, num_patches)` bool, the patches of every
                object in the image, the named one included.

        Returns:
            dict: `"chance_precision"` and `"results"`, a list of dicts with
            `"guidance"`, `"keep_rate"`, `"kept_fraction"` (of all patches),
            `"object_recall"` and `"object_precision"`.
        """
        target = np.asarray(target_patches, bool)
        objects = np.asarray(object_patches, bool)
        # Checked before the union, which would broadcast mismatched shapes.
        expected = (len(images), self.backbone.vision_encoder.num_patches)
        if target.shape != expected or objects.shape != expected:
            raise ValueError(
                "`target_patches` and `object_patches` must both have shape "
                f"(num_phrases, num_patches) = {expected}. Received: "
                f"{target.shape}, {objects.shape}"
            )
        objects = objects | target
        if not target.any(axis=1).all():
            raise ValueError("Every phrase needs at least one target patch.")
        images, token_ids = np.asarray(images), np.asarray(token_ids)
        padding_mask = np.asarray(padding_mask)
        results = []
        for keep_rate in self.keep_rates:
            for guidance in self.guidances:
                kept = self.kept_patches(
                    images, token_ids, padding_mask, guidance, keep_rate
                )
                kept_objects = (kept & objects).sum(axis=1)
                precision = (kept & target).sum(axis=1) / np.maximum(kept_objects, 1)
                results.append(
                    {
                        "guidance": guidance,
                        "keep_rate": _label(keep_rate),
                        "kept_fraction": float(kept.mean()),
                        "object_recall": float(
                            np.mean((kept & target).sum(axis=1) / target.sum(axis=1))
                        ),
                        "object_precision": float(np.mean(precision[kept_objects > 0])),
                    }
                )
        chance = np.mean(target.sum(axis=1) / objects.sum(axis=1))
        return {"chance_precision": float(chance), "results": results}


def _label(keep_rate):
    rates = set(keep_rate)
    return keep_rate[0] if len(rates) == 1 else tuple(keep_rate)


def box_patch_mask(boxes, grid_shape):
    """Which patches of a `grid_shape` grid each box covers, `(..., H * W)`.

    A patch is covered when its centre lies inside the box; a box too small
    to hold a patch centre covers the patch holding its own centre.

    Args:
        boxes: `(..., 4)` normalised `(x1, y1, x2, y2)` in [0, 1].
        grid_shape: `(rows, columns)` of the patch grid.
    """
    boxes = np.asarray(boxes, "float32")
    rows, columns = grid_shape
    centre_x, centre_y = ops.convert_to_numpy(patch_centers(grid_shape)).T
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    inside = (centre_x >= x1) & (centre_x < x2) & (centre_y >= y1) & (centre_y < y2)
    own_row = np.clip(((y1 + y2) / 2 * rows).astype(int), 0, rows - 1)
    own_column = np.clip(((x1 + x2) / 2 * columns).astype(int), 0, columns - 1)
    own = np.arange(rows * columns) == own_row * columns + own_column
    empty = ~inside.any(axis=-1, keepdims=True)
    return inside | (own & empty)


def selection_eval_data(
    annotation_file, image_root=None, image_size=64, patch_size=8, sequence_length=16
):
    """Phrases with boxes for `SelectionEvaluator`, from a RefCOCO-style file.

    The file is a JSON list of `{"image": path, "text": phrase, "bbox":
    [x, y, w, h], "object_bboxes": [[x, y, w, h], ...]}` in pixels of the
    image (optional `"width"`, `"height"`; else read from the image), with
    `"object_bboxes"` the boxes of every object in the image. The built-in
    scenes write such a file per split (`"refs"`).

    Returns:
        dict of numpy arrays: `"images"` `(M, image_size, image_size, 3)`
        CLIP-normalised, `"token_ids"`, `"padding_mask"` `(M, L)`,
        `"target_patches"`, `"object_patches"` `(M, num_patches)`.
    """
    import tensorflow as tf

    from keras_trips.data import TRIPSTextPreprocessor, image_ops
    from keras_trips.data.validation import (
        default_image_root,
        read_json,
        require_list,
    )

    rows = require_list(read_json(annotation_file), annotation_file)
    image_root = default_image_root(annotation_file, image_root)
    missing = [i for i, row in enumerate(rows) if "object_bboxes" not in row]
    if missing:
        raise ValueError(
            f"{annotation_file}: rows {missing[:5]} have no 'object_bboxes' (the "
            "boxes of every object in the image), which selection quality needs."
        )
    grid = image_size // patch_size
    images, targets, objects = {}, [], []
    for row in rows:
        path = os.path.join(image_root, row["image"])
        if path not in images:
            image = image_ops.decode_image(tf.io.read_file(path))
            images[path] = (
                image_ops.normalize_images(image_ops.resize(image, image_size)).numpy(),
                image.shape[1],
                image.shape[0],
            )
        _, width, height = images[path]
        width, height = row.get("width", width), row.get("height", height)
        scale = np.array([width, height, width, height], "float32")

        def xyxy(box, scale=scale):
            x, y, w, h = (float(v) for v in box)
            return np.array([x, y, x + w, y + h], "float32") / scale

        targets.append(box_patch_mask(xyxy(row["bbox"]), (grid, grid)))
        objects.append(
            np.any(
                [
                    box_patch_mask(xyxy(box), (grid, grid))
                    for box in row["object_bboxes"]
                ],
                axis=0,
            )
        )
    preprocessor = TRIPSTextPreprocessor(sequence_length=sequence_length)
    text = preprocessor([row["text"] for row in rows])
    return {
        "images": np.stack(
            [images[os.path.join(image_root, r["image"])][0] for r in rows]
        ),
        "token_ids": np.asarray(text["token_ids"]),
        "padding_mask": np.asarray(text["padding_mask"]),
        "target_patches": np.stack(targets),
        "object_patches": np.stack(objects),
    }

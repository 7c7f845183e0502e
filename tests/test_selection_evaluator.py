import json

import numpy as np
import pytest
from backend_utils import backend_independent
from keras import ops
from PIL import Image
from pretraining_utils import MICRO, pretraining_batch

from keras_trips.data import CLIP_MEAN, CLIP_STD, TRIPSTextPreprocessor
from keras_trips.metrics import (
    SelectionEvaluator,
    box_patch_mask,
    selection_eval_data,
)
from keras_trips.models import TRIPSBackbone


def patch_mask(*indices, num_patches=16):
    mask = np.zeros(num_patches, bool)
    mask[list(indices)] = True
    return mask


def pixels(x1, y1, x2, y2, size=32):
    return np.array([x1, y1, x2, y2], "float32") / size


# A 32 px image of 8 px patches: a 4x4 grid, patch centres at 4, 12, 20, 28 px.
@backend_independent
@pytest.mark.parametrize(
    "box, expected",
    [
        # On cell boundaries: exactly columns 1-2 of row 1.
        (pixels(8, 8, 24, 16), [5, 6]),
        # Straddling cells: the cells whose centre it covers, columns 1-2
        # and rows 0-1, though it also overlaps columns 0 and 3 a little.
        (pixels(6, 2, 26, 14), [1, 2, 5, 6]),
        # Half-open: a centre on x1 / y1 is inside, one on x2 / y2 is not.
        (pixels(4, 4, 12, 12), [0]),
        (pixels(4, 4, 12.01, 12.01), [0, 1, 4, 5]),
        # Too small to hold a centre: the patch holding its own centre.
        (pixels(9, 9, 11, 11), [5]),
        (pixels(17, 1, 19, 3), [2]),
        # The whole image.
        (pixels(0, 0, 32, 32), list(range(16))),
    ],
)
def test_box_patch_mask_covers_the_patches_whose_centre_it_holds(box, expected):
    np.testing.assert_array_equal(box_patch_mask(box, (4, 4)), patch_mask(*expected))


@backend_independent
def test_box_patch_mask_batches_and_non_square_grids():
    boxes = np.array(
        [
            [pixels(8, 8, 24, 16), pixels(9, 9, 11, 11)],
            [pixels(0, 0, 32, 32), pixels(6, 2, 26, 14)],
        ]
    )
    masks = box_patch_mask(boxes, (4, 4))
    assert masks.shape == (2, 2, 16)
    for index in np.ndindex(2, 2):
        np.testing.assert_array_equal(
            masks[index], box_patch_mask(boxes[index], (4, 4))
        )
    # 2 rows x 4 columns, row centres at 0.25 and 0.75: the left half is
    # columns 0-1 of both rows; the top quarter holds no row centre, so
    # only the patch holding the box's centre (row 0, column 2).
    np.testing.assert_array_equal(
        box_patch_mask([0.0, 0.0, 0.5, 1.0], (2, 4)),
        patch_mask(0, 1, 4, 5, num_patches=8),
    )
    np.testing.assert_array_equal(
        box_patch_mask([0.5, 0.0, 0.75, 0.2], (2, 4)), patch_mask(2, num_patches=8)
    )


# Three phrases on the 4x4 grid: the named object's patches and those of
# every object in the image (the target is added to them).
TARGETS = np.stack(
    [patch_mask(5, 6), patch_mask(0, 1, 4, 5, 8, 9, 12, 13), patch_mask(5)]
)
OBJECTS = np.stack(
    [patch_mask(10, 11, 12, 14, 15), np.zeros(16, bool), patch_mask(0, 1, 2, 3)]
)
# The named object's share of all object patches: 2/7, 8/8 and 1/5.
CHANCE_PRECISION = (2 / 7 + 1 + 1 / 5) / 3


def phrases(batch_size=3):
    batch = pretraining_batch(batch_size=batch_size)
    return {
        "images": batch["images"],
        "token_ids": batch["token_ids"],
        "padding_mask": batch["padding_mask"],
        "target_patches": TARGETS,
        "object_patches": OBJECTS,
    }


def test_report_structure_kept_fraction_and_chance():
    backbone = TRIPSBackbone(**MICRO)
    evaluator = SelectionEvaluator(backbone, keep_rates=[0.5, 0.25, 1.0], batch_size=2)
    report = evaluator.evaluate(**phrases())
    assert report["chance_precision"] == pytest.approx(CHANCE_PRECISION)
    results = report["results"]
    assert [(r["keep_rate"], r["guidance"]) for r in results] == [
        (rate, guidance)
        for rate in (0.5, 0.25, 1.0)
        for guidance in ("text", "image", "random")
    ]
    for row in results:
        assert set(row) == {
            "guidance",
            "keep_rate",
            "kept_fraction",
            "object_recall",
            "object_precision",
        }
        # ceil(rate * 16) of the 16 patches leave as tokens of their own.
        assert row["kept_fraction"] == np.ceil(row["keep_rate"] * 16) / 16
        assert 0.0 <= row["object_recall"] <= 1.0
        assert 0.0 <= row["object_precision"] <= 1.0
        if row["keep_rate"] == 1.0:
            # Everything kept: all of the object, at the chance precision.
            assert row["object_recall"] == 1.0
            assert row["object_precision"] == pytest.approx(CHANCE_PRECISION)


def test_recall_and_precision_of_given_kept_patches():
    evaluator = SelectionEvaluator(TRIPSBackbone(**MICRO), keep_rates=[0.5])
    kept = np.stack([patch_mask(0, 1, 5, 10), patch_mask(0, 2, 3, 7), patch_mask(6, 7)])
    evaluator.kept_patches = lambda *args: kept
    report = evaluator.evaluate(**phrases())
    for row in report["results"]:
        assert row["kept_fraction"] == pytest.approx(10 / 48)
        # Recall: 1 of 2, 1 of 8 and 0 of 1 target patches.
        assert row["object_recall"] == pytest.approx((1 / 2 + 1 / 8 + 0) / 3)
        # Precision: 1 of the 2 kept object patches, 1 of 1; the third phrase
        # keeps no object patch and is left out of the mean.
        assert row["object_precision"] == pytest.approx((1 / 2 + 1) / 2)


@pytest.mark.parametrize("guidance", ["text", "image"])
def test_kept_patches_are_the_top_scored_ones(guidance):
    backbone = TRIPSBackbone(**MICRO)
    data = phrases()
    evaluator = SelectionEvaluator(backbone, batch_size=2)
    kept = evaluator.kept_patches(
        data["images"], data["token_ids"], data["padding_mask"], guidance, (0.5,)
    )
    inputs = {"images": data["images"]}
    if guidance == "text":
        text = backbone.encode_text(data["token_ids"], data["padding_mask"])
        inputs["text_embedding"] = text[:, 0]
    (stage,) = backbone.vision_encoder.selection_trace(inputs, 0.5, guidance)
    scores = ops.convert_to_numpy(stage["scores"])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :8]
    expected = np.zeros((3, 16), bool)
    np.put_along_axis(expected, top, True, axis=1)
    np.testing.assert_array_equal(kept, expected)


def test_default_keep_rates_are_the_models_and_a_half():
    assert SelectionEvaluator(TRIPSBackbone(**MICRO)).keep_rates == [(0.5,)]
    backbone = TRIPSBackbone(**{**MICRO, "keep_rate": 0.7})
    assert SelectionEvaluator(backbone).keep_rates == [(0.7,), (0.5,)]


def test_bad_arguments():
    backbone = TRIPSBackbone(**MICRO)
    with pytest.raises(ValueError, match=r"Unknown guidance modes \['text\+image'\]"):
        SelectionEvaluator(backbone, guidances=("text", "text+image"))
    evaluator = SelectionEvaluator(backbone)
    shape_error = r"must both have shape \(num_phrases, num_patches\) = \(3, 16\)"
    for wrong in (
        # Fewer rows, one row that numpy would broadcast, another grid.
        {"object_patches": OBJECTS[:2]},
        {"object_patches": OBJECTS[:1]},
        {"target_patches": TARGETS[:, :8], "object_patches": OBJECTS[:, :8]},
    ):
        with pytest.raises(ValueError, match=shape_error):
            evaluator.evaluate(**{**phrases(), **wrong})
    with pytest.raises(ValueError, match=r"\(4, 16\)\. Received: \(3, 16\)"):
        evaluator.evaluate(**phrases(batch_size=4))
    no_target = TARGETS.copy()
    no_target[1] = False
    with pytest.raises(ValueError, match="at least one target patch"):
        evaluator.evaluate(**{**phrases(), "target_patches": no_target})


def write_refs(tmp_path, rows):
    # A 64x64 red image and a 64-wide, 32-high blue one.
    Image.new("RGB", (64, 64), (255, 0, 0)).save(tmp_path / "red.png")
    Image.new("RGB", (64, 32), (0, 0, 255)).save(tmp_path / "blue.png")
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(rows))
    return str(path)


REF_ROWS = [
    # Boxes are x, y, w, h in pixels of the image. (0.25, 0.25, 0.75, 0.5)
    # of the image: patches 5, 6; the other object (0, 0.75, 0.25, 1): 12.
    {
        "image": "red.png",
        "text": "the red square",
        "bbox": [16, 16, 32, 16],
        "object_bboxes": [[16, 16, 32, 16], [0, 48, 16, 16]],
    },
    # The blue image is 64x32: (0, 0, 0.5, 0.5), patches 0, 1, 4, 5, and
    # (0.5, 0.5, 1, 1), patches 10, 11, 14, 15.
    {
        "image": "blue.png",
        "text": "a blue thing",
        "bbox": [0, 0, 32, 16],
        "object_bboxes": [[0, 0, 32, 16], [32, 16, 32, 16]],
    },
    # A stated size overrides the image's: (0.125, 0.125, 0.375, 0.25), the
    # centre of patch 0 only.
    {
        "image": "red.png",
        "text": "red",
        "bbox": [16, 16, 32, 16],
        "width": 128,
        "height": 128,
        "object_bboxes": [[16, 16, 32, 16]],
    },
]


@backend_independent
def test_selection_eval_data(tmp_path):
    path = write_refs(tmp_path, REF_ROWS)
    data = selection_eval_data(path, image_size=32, patch_size=8, sequence_length=16)
    assert data["images"].shape == (3, 32, 32, 3)
    red = (np.array([1.0, 0.0, 0.0]) - CLIP_MEAN) / CLIP_STD
    blue = (np.array([0.0, 0.0, 1.0]) - CLIP_MEAN) / CLIP_STD
    np.testing.assert_allclose(
        data["images"][0], np.broadcast_to(red, (32, 32, 3)), atol=1e-5
    )
    np.testing.assert_allclose(
        data["images"][1], np.broadcast_to(blue, (32, 32, 3)), atol=1e-5
    )
    np.testing.assert_array_equal(data["images"][2], data["images"][0])
    text = TRIPSTextPreprocessor(sequence_length=16)([row["text"] for row in REF_ROWS])
    assert data["token_ids"].shape == data["padding_mask"].shape == (3, 16)
    np.testing.assert_array_equal(data["token_ids"], np.asarray(text["token_ids"]))
    np.testing.assert_array_equal(
        data["padding_mask"], np.asarray(text["padding_mask"])
    )
    np.testing.assert_array_equal(
        data["target_patches"],
        np.stack([patch_mask(5, 6), patch_mask(0, 1, 4, 5), patch_mask(0)]),
    )
    np.testing.assert_array_equal(
        data["object_patches"],
        np.stack(
            [
                patch_mask(5, 6, 12),
                patch_mask(0, 1, 4, 5, 10, 11, 14, 15),
                patch_mask(0),
            ]
        ),
    )


@backend_independent
def test_selection_eval_data_needs_object_boxes(tmp_path):
    rows = [REF_ROWS[0], {k: v for k, v in REF_ROWS[1].items() if k != "object_bboxes"}]
    path = write_refs(tmp_path, rows)
    with pytest.raises(ValueError, match=r"rows \[1\] have no 'object_bboxes'"):
        selection_eval_data(path, image_size=32, patch_size=8)

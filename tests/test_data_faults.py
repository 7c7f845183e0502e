"""Fault tests of the input pipelines: broken images and rows are dropped
before the pipeline relies on positions, counted once by reason, and every
other failure is loud."""

import json
import warnings

import numpy as np
import pytest
import tensorflow as tf
from backend_utils import backend_independent
from PIL import Image

from keras_trips import data
from keras_trips.data import validation
from keras_trips.training.data import caption_eval_data

pytestmark = backend_independent

# Solid colours far apart, so that a misplaced image cannot pass for another.
COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (10, 250, 250)]
BAD_IMAGES = ("truncated.png", "truncated.jpg", "empty.png", "missing.jpg")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Image verdicts go to a cache of this test's own."""
    monkeypatch.setenv("KERAS_TRIPS_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def image_dir(tmp_path):
    """Good solid-colour images (PNG and JPEG alternately), a truncated PNG,
    a truncated JPEG and an empty file; `missing.jpg` does not exist."""
    for i, colour in enumerate(COLOURS):
        image = Image.new("RGB", (24 + 4 * i, 20), colour)
        image.save(tmp_path / good_name(i))
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    for extension, image_format in (("png", "PNG"), ("jpg", "JPEG")):
        path = tmp_path / f"truncated.{extension}"
        noise.save(path, format=image_format)
        content = path.read_bytes()
        path.write_bytes(content[: len(content) * 2 // 3])
    (tmp_path / "empty.png").write_bytes(b"")
    return tmp_path


def good_name(i):
    return f"good{i}.{'png' if i % 2 else 'jpg'}"


def write_json(path, content):
    path.write_text(json.dumps(content))
    return path


def read_quietly(reader, *args, **kwargs):
    """Call a reader; return `(result, [warning messages])`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = reader(*args, **kwargs)
    return result, [str(w.message) for w in caught]


def mixed_rows():
    """Good and bad images interleaved: a drop shifts everything behind it."""
    rows = []
    for i in range(len(COLOURS)):
        rows.append({"image": good_name(i), "caption": [f"good {i} first", "again"]})
        if i < len(BAD_IMAGES):
            rows.append({"image": BAD_IMAGES[i], "caption": f"bad {i}"})
    return rows


PREPROCESSOR = data.TRIPSTextPreprocessor(sequence_length=12)
READ = dict(batch_size=1, image_size=8, training=False, preprocessor=PREPROCESSOR)


def test_truncated_empty_and_missing_images_are_counted_exactly(image_dir):
    path = write_json(image_dir / "ann.json", mixed_rows())
    dataset, messages = read_quietly(data.albef_json_dataset, path, **READ)
    assert len(messages) == 1
    assert messages[0].startswith("Skipped 4 of 9 rows")
    assert "3 corrupt image, 1 missing image" in messages[0]
    # Nothing more is dropped inside the pipeline: 5 good rows, 5 batches.
    assert sum(1 for _ in dataset) == len(COLOURS)


def test_verdicts_are_cached_per_file_and_rechecked_when_it_changes(
    image_dir, monkeypatch
):
    paths = [str(image_dir / good_name(i)) for i in range(3)]
    paths.append(str(image_dir / "truncated.png"))
    checked = []
    check = validation.image_problem

    def counting_check(path, mode):
        checked.append(path)
        return check(path, mode)

    monkeypatch.setattr(validation, "image_problem", counting_check)
    first = validation.image_problems(paths)
    assert sorted(checked) == sorted(paths)
    assert [first[p] is None for p in paths] == [True, True, True, False]

    checked.clear()
    assert validation.image_problems(paths) == first
    assert checked == []  # a second run decodes nothing

    # The truncated file is repaired: new size and time, checked again.
    Image.new("RGB", (8, 8)).save(paths[3], format="PNG")
    assert validation.image_problems(paths)[paths[3]] is None
    assert checked == [paths[3]]


def test_an_unwritable_cache_only_costs_the_decoding(image_dir, monkeypatch):
    blocker = image_dir / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("KERAS_TRIPS_CACHE", str(blocker))
    path = str(image_dir / "truncated.jpg")
    assert validation.image_problems([path])[path].startswith("corrupt image")


def test_errors_inside_the_pipeline_are_loud_not_skipped(image_dir):
    rows = [{"image": good_name(0), "caption": "x"}] * 2
    rows.insert(1, {"image": "truncated.png", "caption": "x"})
    path = write_json(image_dir / "ann.json", rows)
    # Header checks miss truncation; the pipeline must not drop the row.
    dataset = data.albef_json_dataset(path, validate_images="header", **READ)
    with pytest.raises(tf.errors.InvalidArgumentError, match="PNG"):
        list(dataset)


@pytest.mark.parametrize("name", ["image_size", "batch_size"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_bad_sizes_are_rejected_by_name(image_dir, name, value):
    path = write_json(image_dir / "ann.json", [{"image": good_name(0), "caption": "x"}])
    with pytest.raises(ValueError, match=f"`{name}` must be a positive int"):
        data.albef_json_dataset(path, **{**READ, name: value})


def test_fewer_rows_than_one_batch_is_an_error(image_dir):
    rows = [{"image": good_name(i), "caption": "x"} for i in range(3)]
    path = write_json(image_dir / "ann.json", rows)
    with pytest.raises(ValueError, match=r"ann\.json has 3 usable examples.*=4"):
        data.albef_json_dataset(path, **{**READ, "batch_size": 4})
    with pytest.raises(ValueError, match=r"has 1 usable examples \(worker 1 of 2\)"):
        data.albef_json_dataset(path, shard=(2, 1), **{**READ, "batch_size": 2})
    dataset = data.albef_json_dataset(
        path, drop_remainder=False, **{**READ, "batch_size": 4}
    )
    assert [len(b["images"]) for b in dataset] == [3]


@pytest.mark.parametrize(
    "encode, cause",
    [
        (lambda text: text.encode("utf-16"), "UTF-16 text"),
        (lambda text: text.encode("utf-16-le"), "NUL bytes"),
        (lambda text: text.encode("utf-32"), "UTF-32 text"),
        (lambda text: text.encode("latin-1"), "not UTF-8 text: byte 0xe9"),
    ],
)
def test_annotation_files_in_other_encodings_name_file_and_cause(
    image_dir, encode, cause
):
    path = image_dir / "ann.json"
    content = json.dumps(
        [{"image": good_name(0), "caption": "café"}], ensure_ascii=False
    )
    path.write_bytes(encode(content))
    with pytest.raises(ValueError, match=rf"ann\.json (is|holds) {cause}"):
        data.albef_json_dataset(path, **READ)


def test_utf8_with_byte_order_mark_reads(image_dir):
    path = image_dir / "ann.json"
    content = json.dumps(
        [{"image": good_name(0), "caption": "café"}], ensure_ascii=False
    )
    path.write_bytes(content.encode("utf-8-sig"))
    assert sum(1 for _ in data.albef_json_dataset(path, **READ)) == 1


# Per reader: rows that are malformed in every way the format allows, after
# one good row. Each must be skipped and counted as malformed, none raise.
MALFORMED = {
    "albef": [
        "a string",
        None,
        [1, 2],
        {"image": 3, "caption": "x"},
        {"image": "good0.jpg"},
        {"image": "good0.jpg", "caption": ["ok", 4]},
        {"image": "good0.jpg", "caption": "   "},
        {"image": ["good0.jpg"], "caption": "x"},
        {"caption": "x"},
    ],
    "refcoco": [
        "a string",
        {"image": "good0.jpg", "text": "x"},
        {"image": "good0.jpg", "text": "x", "bbox": [1, 2, 3]},
        {"image": "good0.jpg", "text": "x", "bbox": [1, 2, 3, "4"]},
        {"image": "good0.jpg", "text": "x", "bbox": [1, 2, float("nan"), 4]},
        {"image": "good0.jpg", "text": "x", "bbox": {"x": 1}},
        {"image": "good0.jpg", "sentences": [], "bbox": [1, 1, 2, 2]},
        {"image": 5, "text": "x", "bbox": [1, 1, 2, 2]},
        {
            "image": "good0.jpg",
            "text": "x",
            "bbox": [1, 1, 2, 2],
            "width": "24",
            "height": 20,
        },
        {"image": "good0.jpg", "text": "x", "bbox": [1, 1, 30, 2]},  # outside
    ],
    "nlvr2": [
        "a string",
        [1],
        {"images": ["good0.jpg"], "sentence": "x", "label": True},
        {"images": "ab", "sentence": "x", "label": True},
        {"images": ["good0.jpg", 7], "sentence": "x", "label": True},
        {"images": ["good0.jpg", "good1.png"], "sentence": 3, "label": True},
        {"images": ["good0.jpg", "good1.png"], "sentence": "x", "label": "maybe"},
        {"images": ["good0.jpg", "good1.png"], "sentence": "x", "label": [1]},
        {"images": ["good0.jpg", "good1.png"], "sentence": "x"},
        {"identifier": 12, "sentence": "x", "label": True},
    ],
    "vqa": [
        "a string",
        {"question_id": 1, "image": "good0.jpg"},
        {"question_id": 2, "image": 9, "question": "q?"},
        {"question_id": 3, "question": "q?"},  # no image, no image_id
        {"question_id": 4, "image_id": "x", "question": "q?"},
        {"question_id": [5], "image": "good0.jpg", "question": "q?"},
        {"question_id": 6, "image": "good0.jpg", "question": "q?"},  # bad answers
        {"question_id": 7, "image": "good0.jpg", "question": "q?"},  # none
    ],
    "coco": [
        "a string",
        {"id": 1},
        {"id": [2], "file_name": "good0.jpg"},
        {"id": 3, "file_name": 3},
        {"id": 4, "file_name": "good0.jpg"},  # no caption
    ],
}


def read_with_malformed_rows(reader, image_dir):
    rows = MALFORMED[reader]
    if reader == "albef":
        path = write_json(
            image_dir / "a.json", [{"image": "good0.jpg", "caption": "x"}, *rows]
        )
        return data.albef_json_dataset(path, **READ)
    if reader == "refcoco":
        good = {"image": "good0.jpg", "text": "x", "bbox": [1, 1, 2, 2]}
        path = write_json(image_dir / "r.json", [good, *rows])
        return data.refcoco_dataset(path, **READ)
    if reader == "nlvr2":
        good = {"images": ["good0.jpg", "good1.png"], "sentence": "x", "label": 1}
        path = image_dir / "n.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in [good, *rows]) + "\n{oops")
        return data.nlvr2_dataset(path, **READ)
    if reader == "vqa":
        good = {"question_id": 0, "image": "good0.jpg", "question": "q?"}
        annotations = [
            {"question_id": 0, "answers": [{"answer": "yes"}]},
            {"question_id": 6, "answers": [{"answer": 3}]},
            {"question_id": [5], "answers": "x"},
            "junk",
        ]
        questions = write_json(image_dir / "q.json", {"questions": [good, *rows]})
        answers = write_json(image_dir / "v.json", {"annotations": annotations})
        return data.vqa_dataset(questions, answers, answer_vocabulary=["yes"], **READ)
    coco = {
        "images": [{"id": 0, "file_name": "good0.jpg"}, *rows],
        "annotations": [
            {"image_id": 0, "caption": "x"},
            {"image_id": 0},
            {"image_id": {"a": 1}, "caption": "x"},
            "junk",
        ],
    }
    return data.coco_captions_dataset(write_json(image_dir / "c.json", coco), **READ)


@pytest.mark.parametrize("reader", sorted(MALFORMED))
def test_every_reader_skips_and_counts_malformed_rows(image_dir, reader):
    dataset, messages = read_quietly(read_with_malformed_rows, reader, image_dir)
    malformed = len(MALFORMED[reader]) + {"nlvr2": 1, "coco": 3}.get(reader, 0)
    assert len(messages) == 1, messages
    assert f"({malformed} malformed row)" in messages[0], messages[0]
    assert sum(1 for _ in dataset) == 1


def test_gallery_pairs_every_caption_with_its_own_image(image_dir):
    path = write_json(image_dir / "gallery.json", mixed_rows())
    with pytest.warns(UserWarning, match="Skipped 4 of 9 rows"):
        gallery = caption_eval_data(path, None, sequence_length=12, image_size=8)

    good_rows = [row for row in mixed_rows() if row["image"].startswith("good")]
    captions = [(i, c) for i, row in enumerate(good_rows) for c in row["caption"]]
    assert len(gallery["images"]) == len(COLOURS)
    assert len(gallery["token_ids"]) == len(gallery["text_to_image"]) == 10
    expected_tokens = PREPROCESSOR(tf.constant([c for _, c in captions]))["token_ids"]
    np.testing.assert_array_equal(gallery["token_ids"], expected_tokens)
    for caption_index, (row_index, _) in enumerate(captions):
        image = gallery["images"][gallery["text_to_image"][caption_index]]
        colour = np.array(COLOURS[row_index]) / 255.0
        expected = (colour - data.CLIP_MEAN) / data.CLIP_STD
        # JPEG moves a solid colour by a level or two; the colours are far apart.
        np.testing.assert_allclose(
            image.reshape(-1, 3).mean(axis=0), expected, atol=0.05
        )

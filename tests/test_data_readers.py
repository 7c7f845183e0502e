import importlib.util
import json
import os

import numpy as np
import pytest
from backend_utils import backend_independent
from PIL import Image

from keras_trips import data

pytestmark = backend_independent

READ = dict(batch_size=1, image_size=16, training=False)


@pytest.fixture(scope="module", autouse=True)
def unmasked_text():
    """Read with an MLM-free preprocessor: tracing the masking takes seconds."""
    READ["preprocessor"] = data.TRIPSTextPreprocessor()
    yield
    READ.pop("preprocessor")


@pytest.fixture
def image_dir(tmp_path):
    """Six good images (PNG and JPEG, varied sizes), one file that is not an
    image, one truncated PNG."""
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.{'png' if i % 2 else 'jpg'}")
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    good = (tmp_path / "1.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    return tmp_path


def good_images():
    return [f"{i}.{'png' if i % 2 else 'jpg'}" for i in range(6)]


def count_examples(dataset):
    return sum(1 for _ in dataset)


def write_json(path, content):
    path.write_text(json.dumps(content))
    return path


def test_albef_json_skips_and_reports_broken_rows(image_dir):
    rows = [{"image": name, "caption": ["a dog", "a cat"]} for name in good_images()]
    rows += [
        {"image": "garbage.png", "caption": "x"},
        {"image": "missing.png", "caption": "x"},
        {"image": "0.jpg"},
        {"image": "0.jpg", "caption": ""},
        "not a row",
    ]
    path = write_json(image_dir / "ann.json", rows)
    with pytest.warns(UserWarning, match=r"Skipped 5 of 11 rows .*missing\.png"):
        dataset = data.albef_json_dataset(path, **READ)
    assert count_examples(dataset) == 6
    with pytest.warns(UserWarning, match="Skipped 5"):
        dataset = data.albef_json_dataset(path, captions="all", **READ)
    assert count_examples(dataset) == 12


def test_full_validation_catches_truncated_images(image_dir):
    rows = [{"image": n, "caption": "a dog"} for n in [*good_images(), "truncated.png"]]
    path = write_json(image_dir / "ann.json", rows)
    with pytest.warns(UserWarning, match="1 corrupt image"):
        data.albef_json_dataset(path, validate_images="full", **READ)


def test_pretraining_batch_format(image_dir):
    rows = [{"image": n, "caption": "a dog left of a cat"} for n in good_images()]
    path = write_json(image_dir / "ann.json", rows)
    dataset = data.albef_json_dataset(path, batch_size=4, image_size=16, seed=0)
    batches = list(dataset)
    assert len(batches) == 1  # drop_remainder: static batch shapes
    batch = batches[0]
    assert set(batch) == {
        "images",
        "token_ids",
        "padding_mask",
        "masked_token_ids",
        "mask_positions",
        "mask_ids",
        "mask_weights",
    }
    assert (
        batch["images"].shape == (4, 16, 16, 3) and batch["images"].dtype == "float32"
    )
    assert batch["token_ids"].shape == (4, 30) and batch["token_ids"].dtype == "int32"
    assert batch["padding_mask"].dtype == "int32"
    assert batch["masked_token_ids"].shape == (4, 30)
    assert batch["mask_positions"].shape[1] == batch["mask_ids"].shape[1]


def test_shards_are_disjoint(image_dir):
    rows = [
        {"image": n, "caption": f"caption {i}"} for i, n in enumerate(good_images())
    ]
    path = write_json(image_dir / "ann.json", rows)
    seen = []
    for index in range(2):
        dataset = data.albef_json_dataset(path, shard=(2, index), **READ)
        seen.append({tuple(b["token_ids"].numpy()[0]) for b in dataset})
    assert len(seen[0]) == len(seen[1]) == 3 and not seen[0] & seen[1]


def test_coco_captions(image_dir):
    coco = {
        "images": [{"id": i, "file_name": n} for i, n in enumerate(good_images())]
        + [{"id": 99, "file_name": "missing.png"}],
        "annotations": [{"image_id": i, "caption": f"image {i}"} for i in range(6)]
        + [{"image_id": 0, "caption": "another"}, {"image_id": 99, "caption": "x"}],
    }
    path = write_json(image_dir / "coco.json", coco)
    with pytest.warns(UserWarning, match="Skipped 1 of 15"):
        dataset = data.coco_captions_dataset(path, captions="all", **READ)
    assert count_examples(dataset) == 7


@pytest.mark.parametrize(
    "content, error",
    [
        (None, FileNotFoundError),
        ("", ValueError),
        ("{not json", ValueError),
        ("[]", ValueError),
    ],
)
def test_bad_annotation_files_raise_naming_the_file(tmp_path, content, error):
    path = tmp_path / "ann.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=r"ann\.json"):
        data.albef_json_dataset(path, **READ)


def test_vqa_soft_scores_follow_official_formula():
    scores = data.vqa_soft_scores(["yes"] * 3 + ["no"] * 6 + ["Two"])
    assert scores["yes"] == pytest.approx(0.9)  # (3*2/3 + 7*1) / 10
    assert scores["no"] == pytest.approx(1.0)
    assert scores["2"] == pytest.approx(0.3)  # (1*0 + 9*1/3) / 10
    assert data.vqa_soft_scores(["a dog."]) == {"dog": 1.0}


def test_vqa_reader(image_dir):
    names = good_images()
    questions = [
        {"question_id": i, "image_id": i, "image": names[i], "question": f"q{i}?"}
        for i in range(6)
    ]
    questions += [
        {"question_id": 6, "image_id": 6, "image": "missing.png", "question": "x"},
        {"question_id": 7, "image": names[0]},
    ]
    answers = [["yes"] * 10, ["no"] * 10, ["yes"] * 5 + ["no"] * 5] + [["2"] * 10] * 2
    answers += [["purple"] * 10, ["yes"] * 10]
    annotations = [
        {
            "question_id": i,
            "multiple_choice_answer": a[0],
            "answers": [{"answer": x} for x in a],
        }
        for i, a in enumerate(answers)
    ]
    q_path = write_json(image_dir / "q.json", {"questions": questions})
    a_path = write_json(image_dir / "a.json", {"annotations": annotations})
    vocabulary = data.vqa_answer_vocabulary(a_path, num_answers=3)
    assert vocabulary == ["yes", "2", "no"]
    with pytest.warns(
        UserWarning, match="Skipped 3 of 8"
    ):  # missing, malformed, purple
        dataset = data.vqa_dataset(
            q_path, a_path, num_answers=3, skip_unanswerable=True, **READ
        )
    targets = [scores.numpy()[0] for _, scores in dataset]
    np.testing.assert_allclose(
        targets, [[1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 0]]
    )


def test_vqa_caption_rows_pair_questions_with_their_most_frequent_answer():
    records = [
        {
            "image": "a.png",
            "question": "what color?",
            "answers": ["Red"] * 6 + ["blue"] * 4,
        },
        {"image": "b.png", "question": "is it red?", "answers": ["yes"] * 10},
        {"image": "a.png", "question": "what shape?", "answers": ["a circle"]},
        {"image": "b.png", "question": "how many?", "answers": ["two", "2", "3"]},
        {"image": "c.png", "question": "is it there?", "answers": ["no", "No"]},
        {"image": "d.png", "question": "unanswered", "answers": None},
    ]
    assert data.vqa_caption_rows(records) == [
        {"image": "a.png", "caption": ["what color? red", "what shape? circle"]},
        {"image": "b.png", "caption": ["how many? 2"]},
    ]


def test_the_vqa_captions_tool_writes_easy_vqa_training_captions(tmp_path):
    path = os.path.join(os.path.dirname(__file__), "..", "tools", "vqa_captions.py")
    spec = importlib.util.spec_from_file_location("vqa_captions", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    output = tmp_path / "captions" / "easy_vqa.json"
    tool.main([str(output)])
    rows = json.loads(output.read_text())
    # 4,000 training images, 10,168 of their 38,575 questions not yes/no.
    assert (len(rows), sum(len(row["caption"]) for row in rows)) == (3816, 10168)
    assert rows[0]["caption"] == [
        "what is the blue shape? rectangle",
        "what color is the shape? blue",
    ]
    with pytest.raises(SystemExit):
        tool.main([str(output), "--data", "vqa-v2"])


def test_easy_vqa_reads_through_vqa_path():
    dataset = data.easy_vqa_dataset(
        "test", batch_size=4, image_size=32, preprocessor=READ["preprocessor"]
    )
    features, scores = next(iter(dataset))
    assert features["images"].shape == (4, 32, 32, 3)
    assert scores.shape == (4, 13)
    np.testing.assert_array_equal(scores.numpy().sum(axis=1), 1.0)


def test_easy_vqa_training_images_are_whole_unless_a_crop_is_asked_for():
    # One shape per image: a crop could cut off what the answer is about.
    def first_images(**options):
        dataset = data.easy_vqa_dataset(
            "test",
            batch_size=4,
            image_size=32,
            preprocessor=READ["preprocessor"],
            shuffle=False,
            **options,
        )
        return next(iter(dataset))[0]["images"].numpy()

    whole = first_images(training=False)
    np.testing.assert_array_equal(first_images(training=True), whole)
    cropped = first_images(training=True, random_crop_scale=(0.3, 0.5))
    assert not np.allclose(cropped, whole)


def test_nlvr2_reader(image_dir):
    names = good_images()
    lines = [
        json.dumps({"images": [names[0], names[1]], "sentence": "a", "label": True}),
        json.dumps({"images": [names[2], names[3]], "sentence": "b", "label": "False"}),
        json.dumps({"images": [names[4], "missing.png"], "sentence": "c", "label": 1}),
        "{broken json",
        json.dumps({"identifier": "dev-1-0-0", "sentence": "d", "label": "True"}),
    ]
    (image_dir / "dev").mkdir()
    for i in range(2):
        Image.new("RGB", (10, 12)).save(image_dir / "dev" / f"dev-1-0-img{i}.png")
    path = image_dir / "nlvr.jsonl"
    path.write_text("\n".join(lines))
    with pytest.warns(UserWarning, match="Skipped 2 of 5"):
        dataset = data.nlvr2_dataset(path, **READ)
    batches = list(dataset)
    assert [int(label.numpy()[0]) for _, label in batches] == [1, 0, 1]
    assert batches[0][0]["images"].shape == (1, 2, 16, 16, 3)


def test_refcoco_boxes_normalised(image_dir):
    rows = [
        {"image": "0.jpg", "text": "the left dog", "bbox": [3, 2, 12, 10]},
        {"image": "1.png", "text": "x", "bbox": [0, 0, 40, 10]},  # outside
        {"image": "1.png", "sentences": ["a", "b"], "bbox": [0, 0, 30, 21]},
        {"image": "3.png", "text": "x"},
    ]
    path = write_json(image_dir / "refs.json", rows)
    with pytest.warns(UserWarning, match="Skipped 2 of 4"):
        dataset = data.refcoco_dataset(path, **READ)
    boxes = np.concatenate([b.numpy() for _, b in dataset])
    np.testing.assert_allclose(
        boxes, [[3 / 30, 2 / 20, 15 / 30, 12 / 20], [0, 0, 1, 1]], rtol=1e-6
    )


def test_tfrecords_round_trip(image_dir):
    rows = [
        {"image": n, "caption": [f"caption {i}"]} for i, n in enumerate(good_images())
    ]
    rows.append({"image": "truncated.png", "caption": "x"})
    path = write_json(image_dir / "ann.json", rows)
    with pytest.warns(UserWarning, match="1 corrupt image"):
        shards = data.write_tfrecords(
            path, image_dir / "records" / "train", num_shards=3
        )
    assert len(shards) == 3
    dataset = data.tfrecord_dataset(str(image_dir / "records" / "train-*"), **READ)
    assert count_examples(dataset) == 6

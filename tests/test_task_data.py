"""The task readers' handling of bad rows, and the recipes' task datasets."""

import json

import numpy as np
import pytest
import tensorflow as tf
from backend_utils import backend_independent
from PIL import Image

from keras_trips import data
from keras_trips.tasks import task_datasets
from keras_trips.tasks.task_evaluation import in_memory

pytestmark = backend_independent


@pytest.fixture
def images(tmp_path):
    for i in range(4):
        Image.new("RGB", (20, 10), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
    return tmp_path


def read(**kwargs):
    return dict(
        batch_size=1,
        image_size=16,
        training=False,
        preprocessor=data.TRIPSTextPreprocessor(),
        **kwargs,
    )


def test_an_nlvr2_row_with_one_image_is_skipped_and_counted(images):
    rows = [
        {"images": ["0.png", "1.png"], "sentence": "two", "label": True},
        {"images": ["2.png"], "sentence": "one image", "label": False},
        {"images": ["2.png", "3.png"], "sentence": "a statement", "label": "false"},
    ]
    path = images / "nlvr.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    with pytest.warns(UserWarning, match="Skipped 1 of 3.*line 2"):
        dataset = data.nlvr2_dataset(path, **read())
    assert [int(label[0]) for _, label in dataset.as_numpy_iterator()] == [1, 0]


def test_an_empty_caption_is_skipped_and_counted(images):
    rows = [
        {"image": "0.png", "caption": "a red square"},
        {"image": "1.png", "caption": "  "},
        {"image": "2.png", "caption": ["fine", ""]},
    ]
    path = images / "captions.json"
    path.write_text(json.dumps(rows))
    with pytest.warns(UserWarning, match="Skipped 2 of 3"):
        dataset = data.albef_json_dataset(path, captions="all", **read())
    assert sum(1 for _ in dataset) == 1


def test_an_answer_outside_the_vocabulary(images):
    questions = {
        "questions": [
            {"question_id": i, "image_id": i, "image": f"{i}.png", "question": "q?"}
            for i in range(2)
        ]
    }
    annotations = {
        "annotations": [
            {"question_id": 0, "answers": [{"answer": "yes"}] * 10},
            {"question_id": 1, "answers": [{"answer": "purple"}] * 10},
        ]
    }
    (images / "q.json").write_text(json.dumps(questions))
    (images / "a.json").write_text(json.dumps(annotations))
    arguments = (images / "q.json", images / "a.json")
    # Training skips it (and says so); evaluation keeps it at score 0, as
    # the official evaluation counts it.
    with pytest.warns(UserWarning, match="Skipped 1 of 2.*no answer in the vocabulary"):
        train = data.vqa_dataset(
            *arguments, answer_vocabulary=["yes", "no"], **read(skip_unanswerable=True)
        )
    assert sum(1 for _ in train) == 1
    evaluation = data.vqa_dataset(
        *arguments, answer_vocabulary=["yes", "no"], **read(skip_unanswerable=False)
    )
    scores = np.concatenate([s for _, s in evaluation.as_numpy_iterator()])
    np.testing.assert_array_equal(scores, [[1, 0], [0, 0]])


@pytest.mark.parametrize(
    "task, data_format, message",
    [
        ("vqa", "nlvr2", "vqa reads"),
        ("nlvr2", "nlvr2", "needs the train files"),
        ("dance", "scenes", "task must be one of"),
    ],
)
def test_task_datasets_reject_bad_requests(task, data_format, message):
    with pytest.raises(ValueError, match=message):
        task_datasets(task, data_format)


def test_in_memory_replays_the_batches_with_their_length():
    features = {"images": np.arange(10, dtype="float32")}
    labels = np.arange(10) % 2
    batches = tf.data.Dataset.from_tensor_slices((features, labels)).batch(4)
    replay, count = in_memory(batches)
    assert count == 10
    # A known length: Keras counts the steps instead of running out of data.
    assert int(replay.cardinality()) == 3
    for (x, y), (x_replayed, y_replayed) in zip(batches, replay, strict=True):
        np.testing.assert_array_equal(x_replayed["images"], x["images"])
        np.testing.assert_array_equal(y_replayed, y)
    with pytest.raises(ValueError, match="no complete batch"):
        in_memory(batches.take(0))

import itertools
import json

import numpy as np
import pytest
from backend_utils import backend_independent
from PIL import Image

from keras_trips.datasets import scenes
from keras_trips.datasets.scenes import catalog

pytestmark = backend_independent

COUNTS = dict(num_train=40, num_val=10, num_test=20)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return scenes.make_scenes(tmp_path_factory.mktemp("scenes"), seed=3, **COUNTS)


def load(path):
    with open(path) as file:
        return json.load(file)


def scene_graphs(files, split):
    return load(files[split]["scenes"])


def test_generation_is_deterministic(generated, tmp_path):
    again = scenes.make_scenes(tmp_path / "again", seed=3, **COUNTS)
    other = scenes.make_scenes(tmp_path / "other", seed=4, **COUNTS)
    for split in ("train", "test"):
        for name in ("captions", "vqa_annotations", "refs", "scenes"):
            with open(generated[split][name]) as a, open(again[split][name]) as b:
                assert a.read() == b.read()
        first = load(generated[split]["scenes"])[0]["image"]
        root = generated["metadata"].rsplit("/", 1)[0]
        again_root = again["metadata"].rsplit("/", 1)[0]
        np.testing.assert_array_equal(
            np.array(Image.open(f"{root}/{first}")),
            np.array(Image.open(f"{again_root}/{first}")),
        )
    assert load(generated["train"]["scenes"]) != load(other["train"]["scenes"])


def test_boxes_are_exact_sprite_extents(generated):
    root = generated["metadata"].rsplit("/", 1)[0]
    by_name = {c.name: c for c in catalog.available_categories()}
    for split, fashion_split in (("train", "train"), ("test", "t10k")):
        bank = scenes.SpriteBank(fashion_split)
        for scene in scene_graphs(generated, split)[:15]:
            image = np.array(Image.open(f"{root}/{scene['image']}"))
            assert 3 <= len(scene["objects"]) <= 6
            for obj in scene["objects"]:
                x1, y1, x2, y2 = obj["box"]
                sprite = bank.sprite(
                    by_name[obj["category"]],
                    obj["size"],
                    obj["color"],
                    obj["variant"] or 0,
                )
                assert sprite.shape[:2] == (y2 - y1, x2 - x1)
                opaque = sprite[..., 3] > 0
                # Tight: every border row and column has an opaque pixel.
                assert opaque[0].any() and opaque[-1].any()
                assert opaque[:, 0].any() and opaque[:, -1].any()
                region = image[y1:y2, x1:x2]
                np.testing.assert_array_equal(region[opaque], sprite[..., :3][opaque])


def test_test_split_holds_out_category_pairs(generated):
    held_out = {tuple(p) for p in load(generated["metadata"])["held_out_pairs"]}
    assert held_out

    def pairs(scene):
        names = sorted({o["category"] for o in scene["objects"]})
        return set(itertools.combinations(names, 2))

    for split in ("train", "val"):
        for scene in scene_graphs(generated, split):
            assert not pairs(scene) & held_out
    test_scenes = scene_graphs(generated, "test")
    captions = load(generated["test"]["captions"])
    for scene, row in zip(test_scenes, captions, strict=True):
        shared = pairs(scene) & held_out
        assert shared
        assert any(a in row["caption"][0] and b in row["caption"][0] for a, b in shared)


def test_text_is_consistent_with_scenes(generated):
    graphs = scene_graphs(generated, "train")
    answers = load(generated["metadata"])["answers"]
    questions = load(generated["train"]["vqa_questions"])["questions"]
    annotations = load(generated["train"]["vqa_annotations"])["annotations"]
    for question, annotation in zip(questions, annotations, strict=True):
        assert annotation["multiple_choice_answer"] in answers
        text = question["question"]
        if text.startswith("how many"):
            scene = graphs[question["image_id"]]
            plural = text.split()[2]
            count = sum(
                catalog.plural(o["category"]) == plural for o in scene["objects"]
            )
            assert annotation["multiple_choice_answer"] == str(count)
    by_image = {g["image"]: g for g in graphs}
    for ref in load(generated["train"]["refs"]):
        x, y, w, h = ref["bbox"]
        boxes = [o["box"] for o in by_image[ref["image"]]["objects"]]
        assert [x, y, x + w, y + h] in boxes
    with open(generated["train"]["nlvr"]) as file:
        labels = [json.loads(line)["label"] for line in file]
    assert labels.count(True) == labels.count(False) == len(labels) // 2


def test_scenes_dataset_uses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_TRIPS_CACHE", str(tmp_path))
    first = scenes.load_scenes(
        num_train=8, num_val=2, num_test=2, image_size=32, seed=0
    )
    assert first["train"]["captions"].startswith(str(tmp_path / "scenes"))
    again = scenes.load_scenes(
        num_train=8, num_val=2, num_test=2, image_size=32, seed=0
    )
    assert again == first
    dataset = scenes.scenes_dataset(
        "test",
        task="vqa",
        batch_size=2,
        image_size=32,
        num_train=8,
        num_val=2,
        num_test=2,
    )
    features, scores = next(iter(dataset))
    assert features["images"].shape == (2, 32, 32, 3)
    assert scores.shape == (2, len(load(first["metadata"])["answers"]))

import json
import re

import pytest
from backend_utils import backend_independent
from pretraining_utils import MICRO

from keras_trips.datasets import scenes
from keras_trips.models import TRIPSBackbone, TRIPSPretrainer
from keras_trips.training import (
    evaluate_pretraining,
    format_evaluation,
    format_training_outcome,
    retrieval_chance,
)

# 4 images with 1, 2, 1 and 1 captions: M = 5 texts.
TEXT_IMAGES = [0, 1, 1, 2, 3]


@backend_independent
@pytest.mark.parametrize(
    "k, expected",
    [
        # Text -> image: k of the 4 images. Image -> text: an image with c
        # captions misses at k=1 with chance (5 - c) / 5, 4/5 or 3/5; the
        # mean miss is (3 * 4/5 + 3/5) / 4 = 3/4.
        (1, (1 / 4, 1 / 4)),
        # k=2: misses C(4,2)/C(5,2) = 6/10 with 1 caption, C(3,2)/C(5,2) =
        # 3/10 with 2: 1 - (3 * 0.6 + 0.3) / 4 = 0.475.
        (2, (0.475, 1 / 2)),
        # k >= M ranks every text, k >= N every image.
        (5, (1.0, 1.0)),
        (10, (1.0, 1.0)),
    ],
)
def test_retrieval_chance(k, expected):
    assert retrieval_chance(4, TEXT_IMAGES, k) == pytest.approx(expected)


@backend_independent
def test_retrieval_chance_of_an_image_without_captions():
    # Image 2 has no caption, so it never hits: at k=1 the misses are
    # 1/3, 2/3 and 1; at k=10 (past all 3 texts) 0, 0 and 1.
    assert retrieval_chance(3, [0, 0, 1], 1) == pytest.approx((1 / 3, 1 / 3))
    assert retrieval_chance(3, [0, 0, 1], 10) == pytest.approx((2 / 3, 1.0))


@backend_independent
def test_format_training_outcome():
    lines = format_training_outcome({"itc_loss": 2.5, "itm_accuracy": 0.7}, 32)
    assert lines == [
        "  itc_loss 2.5000 (chance ln(32) = 3.4657)",
        "  itm_accuracy 0.7000 (prior, always 'no match': 0.6667)",
    ]
    assert format_training_outcome({"itc_loss": 2.5}, 4) == [
        "  itc_loss 2.5000 (chance ln(4) = 1.3863)"
    ]
    assert format_training_outcome({"loss": 1.0}, 32) == []


def hand_results(selection=True):
    """Figures of `evaluate_pretraining`, each cell its own number: ITC
    recalls 0.1x, re-ranked 0.2x; text->image x = 1, 2, 3, image->text
    x = 4, 5, 6 for R@1, R@5, R@10; chance 0.0y likewise."""
    retrieval, chance = {}, {}
    for offset, direction in ((1, "text_to_image"), (4, "image_to_text")):
        for i, k in enumerate((1, 5, 10)):
            retrieval[f"itc_{direction}_r{k}"] = 0.11 + (offset + i - 1) * 0.01
            retrieval[f"{direction}_r{k}"] = 0.21 + (offset + i - 1) * 0.01
            chance[f"{direction}_r{k}"] = 0.01 * (offset + i)
    results = {
        "retrieval": retrieval,
        "retrieval_chance": chance,
        "num_images": 4,
        "num_texts": 5,
    }
    if selection:
        results["num_phrases"] = 12
        results["selection"] = {
            "chance_precision": 2 / 7,
            "results": [
                {
                    "guidance": "text",
                    "keep_rate": 0.5,
                    "kept_fraction": 0.5,
                    "object_recall": 0.75,
                    "object_precision": 0.4,
                },
                {
                    "guidance": "random",
                    "keep_rate": (0.7, 0.5),
                    "kept_fraction": 0.375,
                    "object_recall": 0.125,
                    "object_precision": 1.0,
                },
            ],
        }
    return results


def cells(line):
    """The `(figure, chance)` percentages of a retrieval line."""
    return re.findall(r"(\d+\.\d)% \( ?(\d+\.\d)%\)", line)


@backend_independent
def test_format_evaluation():
    lines = format_evaluation(hand_results())
    assert lines[0] == (
        "Retrieval on 4 unseen test images and 5 captions (chance in brackets):"
    )
    assert lines[1].split() == ["R@1", "R@5", "R@10"]
    rows = {
        "text->image ITC": [("11.0", "1.0"), ("12.0", "2.0"), ("13.0", "3.0")],
        "text->image ITC + ITM re-rank": [
            ("21.0", "1.0"),
            ("22.0", "2.0"),
            ("23.0", "3.0"),
        ],
        "image->text ITC": [("14.0", "4.0"), ("15.0", "5.0"), ("16.0", "6.0")],
        "image->text ITC + ITM re-rank": [
            ("24.0", "4.0"),
            ("25.0", "5.0"),
            ("26.0", "6.0"),
        ],
    }
    for line, (name, expected) in zip(lines[2:6], rows.items(), strict=True):
        assert line[2:].startswith(name + "  ")
        assert cells(line) == expected
    assert "(12 referring expressions" in lines[6]
    assert "(chance 28.6%)" in lines[8]
    assert lines[9].split() == [
        "guidance",
        "keep",
        "rate",
        "kept",
        "recall",
        "precision",
    ]
    assert lines[10].split() == ["text", "0.5", "50.0%", "75.0%", "40.0%"]
    assert lines[11].split() == ["random", "(0.7,", "0.5)", "37.5%", "12.5%", "100.0%"]
    assert len(lines) == 12
    # Without a selection evaluation: the retrieval table alone.
    assert format_evaluation(hand_results(selection=False)) == lines[:6]


@pytest.fixture(scope="module")
def test_split(scenes_cache):
    """6 unseen 32 px scenes with 3 captions each."""
    return scenes.load_scenes(num_train=2, num_val=2, num_test=6, image_size=32)["test"]


def test_evaluate_pretraining(test_split):
    # The scenes' captions are WordPiece ids of the full vocabulary.
    backbone = TRIPSBackbone(**{**MICRO, "vocabulary_size": 30522})
    pretrainer = TRIPSPretrainer(backbone, embedding_dim=16)
    results = evaluate_pretraining(
        pretrainer,
        test_split["captions"],
        test_split["refs"],
        sequence_length=8,
        k_test=2,
        max_phrases=5,
    )
    with open(test_split["captions"]) as file:
        rows = json.load(file)
    assert (results["num_images"], results["num_texts"]) == (6, 18)
    assert [len(row["caption"]) for row in rows] == [3] * 6

    retrieval = results["retrieval"]
    names = [
        f"{direction}_r{k}"
        for direction in ("image_to_text", "text_to_image")
        for k in (1, 5, 10)
    ] + ["mean_recall"]
    assert set(retrieval) == set(names) | {f"itc_{name}" for name in names}
    assert all(0.0 <= value <= 1.0 for value in retrieval.values())
    # R@10 of 6 images ranks them all.
    assert retrieval["text_to_image_r10"] == retrieval["itc_text_to_image_r10"] == 1.0
    # Text -> image: k of 6. Image -> text, 3 of 18 texts its own: a miss at
    # k is C(15, k) / C(18, k): 15/18 at k=1, (13 * 12 * 11) / (18 * 17 * 16)
    # = 1716/4896 at k=5, C(15, 10) / C(18, 10) = 3003/43758 at k=10.
    assert results["retrieval_chance"] == pytest.approx(
        {
            "text_to_image_r1": 1 / 6,
            "text_to_image_r5": 5 / 6,
            "text_to_image_r10": 1.0,
            "image_to_text_r1": 1 / 6,
            "image_to_text_r5": 1 - 1716 / 4896,
            "image_to_text_r10": 1 - 3003 / 43758,
        }
    )

    # The first 5 phrases, at the model's keep rate (and 0.5, the same).
    assert results["num_phrases"] == 5
    selection = results["selection"]
    assert 0.0 < selection["chance_precision"] <= 1.0
    assert [(r["guidance"], r["keep_rate"]) for r in selection["results"]] == [
        ("text", 0.5),
        ("image", 0.5),
        ("random", 0.5),
    ]
    for row in selection["results"]:
        assert row["kept_fraction"] == 0.5
        assert 0.0 <= row["object_recall"] <= 1.0
        assert 0.0 <= row["object_precision"] <= 1.0
    lines = format_evaluation(results)
    assert any("Selection of the named object (5 referring" in line for line in lines)

    without_refs = evaluate_pretraining(
        pretrainer, test_split["captions"], sequence_length=8, k_test=2
    )
    assert "selection" not in without_refs and "num_phrases" not in without_refs
    assert without_refs["retrieval"] == pytest.approx(retrieval)

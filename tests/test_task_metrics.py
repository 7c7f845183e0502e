import itertools
import math

import keras
import numpy as np
import pytest

from keras_trips.data import normalize_answer, vqa_soft_scores
from keras_trips.losses import BoxRegressionLoss
from keras_trips.metrics import (
    IoUAccuracy,
    VQAAccuracy,
    box_iou,
    caption_tokens,
    corpus_bleu,
    corpus_cider,
    generalized_box_iou,
)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def official_vqa_accuracy(prediction, human_answers):
    """The official evaluation, literally: the mean over the 10 subsets of 9
    annotators of min(1, matches / 3), answers normalised."""
    prediction = normalize_answer(prediction)
    answers = [normalize_answer(a) for a in human_answers]
    subsets = itertools.combinations(range(len(answers)), len(answers) - 1)
    return np.mean(
        [min(1.0, sum(answers[i] == prediction for i in s) / 3) for s in subsets]
    )


def test_vqa_accuracy_is_the_official_leave_one_out_score_after_normalisation():
    # "two", "2" and "Two." are one answer; "a dog" and "dog" another.
    humans = ["two", "2", "Two.", "three"] + ["a dog"] * 4 + ["dog", "cat"]
    vocabulary = ["2", "3", "dog", "cat", "bird"]
    scores = vqa_soft_scores(humans)
    targets = np.array([[scores.get(a, 0.0) for a in vocabulary]], "float32")
    expected = {
        # 3 of 10 said it: 3 subsets with 2 matches, 7 with 3.
        "2": (3 * 2 / 3 + 7 * 1.0) / 10,
        # 1 of 10: 9 subsets with 1 match, 1 with none.
        "3": 9 * (1 / 3) / 10,
        "dog": 1.0,  # 5 of 10
        "cat": 0.3,
        "bird": 0.0,
    }
    for index, answer in enumerate(vocabulary):
        assert official_vqa_accuracy(answer, humans) == pytest.approx(expected[answer])
        logits = np.full((1, len(vocabulary)), -1.0, "float32")
        logits[0, index] = 1.0
        metric = VQAAccuracy()
        metric.update_state(targets, logits)
        assert float(metric.result()) == pytest.approx(expected[answer], abs=1e-6)


def test_vqa_accuracy_averages_over_questions():
    metric = VQAAccuracy()
    targets = np.array([[1.0, 0.0, 0.0], [0.0, 0.3, 0.6], [0.0, 0.0, 0.0]])
    logits = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    metric.update_state(targets, logits)
    assert float(metric.result()) == pytest.approx((1.0 + 0.3 + 0.0) / 3)


def test_caption_tokens_drop_case_and_punctuation():
    assert caption_tokens("A dog, left of a Cat.") == [
        "a",
        "dog",
        "left",
        "of",
        "a",
        "cat",
    ]


def test_bleu_on_hand_computed_pairs():
    # Same length; clipped matches 5/6, 3/5, 2/4, 1/3 for n = 1..4.
    bleu = corpus_bleu(["the cat sat on a mat"], [["the cat sat on the mat"]])
    expected = [5 / 6, (5 / 6 * 3 / 5) ** 0.5, (5 / 6 * 3 / 5 * 2 / 4) ** (1 / 3)]
    expected.append((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    np.testing.assert_allclose(bleu, expected, rtol=1e-6)
    # Exact match with the closest of two references: no brevity penalty.
    perfect = corpus_bleu(["a red circle"], [["a red circle", "a big red circle"]])
    np.testing.assert_allclose(perfect[:3], 1.0, rtol=1e-6)
    # 2 words against a 6-word reference: brevity penalty exp(1 - 6/2).
    short = corpus_bleu(["the cat"], [["the cat sat on the mat"]], max_order=2)
    np.testing.assert_allclose(short, [math.exp(-2)] * 2, rtol=1e-6)
    # Clipping: "the the the" matches "the" at most twice.
    clipped = corpus_bleu(["the the the"], [["the cat the"]], max_order=1)
    assert clipped[0] == pytest.approx(2 / 3)
    # No 4-gram match at all: about 0, not a division by zero.
    assert corpus_bleu(["a b c d"], [["a b c e"]])[3] < 1e-3


def test_cider_d_on_a_hand_computed_corpus():
    # Every n-gram is in one image's references (or none): idf = log 2 for
    # all. Image 1 per order: 3/4, 2/3, 1/2, 0; image 2 exact: 1 each.
    score, per_image = corpus_cider(["a b c e", "w x y z"], [["a b c d"], ["w x y z"]])
    first = 10 * (3 / 4 + 2 / 3 + 1 / 2 + 0) / 4
    np.testing.assert_allclose(per_image, [first, 10.0], rtol=1e-9)
    assert score == pytest.approx((first + 10) / 2)
    # "a" is in every image's references: it weighs nothing (idf 0); every
    # other n-gram log 2. One word more: length penalty exp(-1 / 72).
    _, per_image = corpus_cider(["a b c d e", "a w x y"], [["a b c d"], ["a w x y"]])
    # Per order, candidate n-grams (weighted) against the reference's:
    # b c d e / b c d, ab bc cd de / ab bc cd, abc bcd cde / abc bcd, ...
    orders = [3 / (2 * math.sqrt(3)), 3 / (2 * math.sqrt(3))]
    orders += [2 / (math.sqrt(3) * math.sqrt(2)), 1 / math.sqrt(2)]
    expected = 10 * np.mean(orders) * math.exp(-1 / 72)
    assert per_image[0] == pytest.approx(expected)


@pytest.mark.parametrize(
    "candidates, references, message",
    [
        (["a dog"], [], "one generated caption per image"),
        (["a dog"], [[]], "non-empty list"),
        (["a dog"], [["a cat", " "]], "empty or non-string"),
        ([None], [["a cat"]], "must be a string"),
    ],
)
def test_caption_metrics_reject_bad_inputs(candidates, references, message):
    for metric in (corpus_bleu, corpus_cider):
        with pytest.raises(ValueError, match=message):
            metric(candidates, references)


def test_an_empty_candidate_scores_zero():
    assert corpus_bleu([""], [["a dog"]])[0] < 1e-6
    assert corpus_cider(["", "a cat"], [["a dog"], ["a cat"]])[1][0] == 0.0


def test_iou_and_giou_on_hand_computed_boxes():
    a = np.array([[0.0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1]], "float32")
    b = np.array([[1.0, 1, 3, 3], [2, 2, 3, 3], [0, 0, 1, 1]], "float32")
    # Overlap 1 of union 7; disjoint; identical.
    np.testing.assert_allclose(numpy(box_iou(a, b)), [1 / 7, 0, 1], rtol=1e-6)
    # Enclosing boxes: 3x3 (area 9) for the first two.
    np.testing.assert_allclose(
        numpy(generalized_box_iou(a, b)),
        [1 / 7 - 2 / 9, 0 - 7 / 9, 1],
        rtol=1e-6,
        atol=1e-7,
    )


def test_iou_accuracy_counts_predictions_at_iou_half_or_more():
    true = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1]], "float32")
    # IoU 0.5 exactly, 0.25, 1.
    predicted = np.array([[0, 0, 2, 1], [0, 0, 1, 1], [0, 0, 1, 1]], "float32")
    metric = IoUAccuracy()
    metric.update_state(true, predicted)
    assert float(metric.result()) == pytest.approx(2 / 3)
    strict = IoUAccuracy.from_config(IoUAccuracy(threshold=0.75).get_config())
    strict.update_state(true, predicted)
    assert float(strict.result()) == pytest.approx(1 / 3)


def test_box_regression_loss_is_l1_plus_giou():
    true = np.array([[0.0, 0.0, 0.5, 0.5]], "float32")
    predicted = np.array([[0.25, 0.25, 0.75, 0.75]], "float32")
    # L1: mean of 0.25 x 4; IoU 1/7, enclosing 0.75^2, union 7/16.
    giou = 1 / 7 - (0.5625 - 0.4375) / 0.5625
    expected = 0.25 + 2.0 * (1 - giou)
    loss = BoxRegressionLoss(l1_weight=1.0, giou_weight=2.0)
    assert float(loss(true, predicted)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(true, true)) == pytest.approx(0.0, abs=1e-6)

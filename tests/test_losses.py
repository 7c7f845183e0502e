"""keras_trips.losses against numpy references of ALBEF's objectives."""

import keras
import numpy as np
import pytest
from backend_utils import gradient
from keras import ops

from keras_trips.losses import (
    hard_negative_triples,
    image_text_contrastive_loss,
    image_text_matching_loss,
    masked_lm_loss,
    patch_relevance,
    sample_hard_negatives,
    sample_random_negatives,
    selection_distillation_loss,
)


def numpy(x):
    return ops.convert_to_numpy(x)


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def unit_rows(rng, shape):
    rows = rng.normal(size=shape).astype("float32")
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_contrastive_loss_is_symmetric_infonce():
    rng = np.random.default_rng(0)
    image, text = unit_rows(rng, (3, 4)), unit_rows(rng, (3, 4))
    loss, sim_i2t, sim_t2i = image_text_contrastive_loss(
        image, text, image, text, np.arange(3), 0.5
    )
    logits = image @ text.T / 0.5
    expected = -(np.diag(log_softmax(logits)) + np.diag(log_softmax(logits.T))) / 2
    np.testing.assert_allclose(numpy(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(numpy(sim_i2t), logits, rtol=1e-5)
    np.testing.assert_allclose(numpy(sim_t2i), logits.T, rtol=1e-5)


def test_contrastive_loss_with_queue_and_distillation():
    rng = np.random.default_rng(1)
    image, text = unit_rows(rng, (2, 4)), unit_rows(rng, (2, 4))
    image_m, text_m = unit_rows(rng, (2, 4)), unit_rows(rng, (2, 4))
    # Replica 1 of 2: its pairs are rows 2 and 3 of the global batch's keys,
    # which 3 queued keys follow.
    image_keys = unit_rows(rng, (7, 4))
    text_keys = unit_rows(rng, (7, 4))
    positives = np.array([2, 3])
    alpha, temperature = 0.4, 0.1
    loss, sim_i2t, _ = image_text_contrastive_loss(
        image,
        text,
        image_keys,
        text_keys,
        positives,
        temperature,
        momentum_embeddings=(image_m, text_m),
        distillation_alpha=alpha,
    )

    def direction(queries, momentum, keys):
        one_hot = np.eye(7)[positives]
        soft = np.exp(log_softmax(momentum @ keys.T / temperature))
        targets = alpha * soft + (1 - alpha) * one_hot
        return -(log_softmax(queries @ keys.T / temperature) * targets).sum(-1)

    expected = (
        direction(image, image_m, text_keys) + direction(text, text_m, image_keys)
    ) / 2
    np.testing.assert_allclose(numpy(loss), expected, rtol=1e-5)
    assert sim_i2t.shape == (2, 7)


def test_hard_negatives_never_pick_the_positive():
    seed = keras.random.SeedGenerator(0)
    # The positive is by far the most similar: an unmasked sampler takes it.
    similarity = np.eye(6, dtype="float32") * 30.0
    for _ in range(20):
        texts, images = sample_hard_negatives(similarity, similarity, seed)
        assert not np.any(numpy(texts) == np.arange(6))
        assert not np.any(numpy(images) == np.arange(6))


def test_hard_negatives_follow_the_similarity():
    seed = keras.random.SeedGenerator(0)
    similarity = np.zeros((3, 3), "float32")
    similarity[0, 2] = 5.0  # for item 0, item 2 is the hard negative
    draws = [
        numpy(sample_hard_negatives(similarity, similarity, seed)[0])[0]
        for _ in range(30)
    ]
    # p(2) = e^5 / (e^5 + 1) = 0.993 for item 0.
    assert np.mean(np.array(draws) == 2) > 0.85


def test_random_negatives_are_uniform_over_the_other_rows():
    seed = keras.random.SeedGenerator(0)
    # A replica holding rows 4-7 of a global batch of 8.
    rows = np.arange(4, 8)
    draws = np.stack(
        [
            np.stack([numpy(n) for n in sample_random_negatives(rows, 8, seed)])
            for _ in range(200)
        ]
    )  # (200, 2, 4)
    assert draws.min() >= 0 and draws.max() < 8
    assert not np.any(draws == rows)
    # Each of the 7 other rows about 1/7 of the time (400 draws per row).
    for column, row in enumerate(rows):
        counts = np.bincount(draws[:, :, column].ravel(), minlength=8)
        assert counts[row] == 0
        others = np.delete(counts, row) / 400
        np.testing.assert_allclose(others, 1 / 7, atol=0.07)


def test_random_negatives_of_replicas_are_those_of_one_device():
    # Replicas share the seed: each one's rows get one device's draws.
    one_device = sample_random_negatives(np.arange(8), 8, 3)
    for rows in (np.arange(4), np.arange(4, 8)):
        replica = sample_random_negatives(rows, 8, 3)
        for expected, actual in zip(one_device, replica):
            np.testing.assert_array_equal(numpy(actual), numpy(expected)[rows])


def test_hard_negative_triples_pair_the_batch_with_its_negatives():
    # Text i is all i, image i all 10 + i; the global batch holds 4 pairs.
    states = np.arange(4, dtype="float32")[:, None, None] * np.ones((1, 3, 2))
    tokens = 10 + np.arange(4, dtype="float32")[:, None, None] * np.ones((1, 5, 2))
    masks = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], "int32")
    batch = {"text": states, "image": tokens, "padding_mask": masks}
    # This replica holds pairs 2 and 3.
    texts, images, padding_masks, labels = hard_negative_triples(
        states[2:], tokens[2:], masks[2:], batch, np.array([0, 1]), np.array([3, 2])
    )
    np.testing.assert_array_equal(numpy(texts)[:, 0, 0], [2, 3, 0, 1, 2, 3])
    np.testing.assert_array_equal(numpy(images)[:, 0, 0], [12, 13, 12, 13, 13, 12])
    np.testing.assert_array_equal(
        numpy(padding_masks), masks[[2, 3, 0, 1, 2, 3]].astype(bool)
    )
    np.testing.assert_array_equal(numpy(labels), [1, 1, 0, 0, 0, 0])


def test_matching_loss_is_cross_entropy_on_the_match_labels():
    logits = np.array([[0.0, 2.0], [1.0, -1.0], [0.5, 0.7]], "float32")
    labels = np.array([1, 0, 0], "int32")
    loss, correct = image_text_matching_loss(logits, labels)
    expected = -log_softmax(logits)[np.arange(3), labels]
    np.testing.assert_allclose(numpy(loss), expected, rtol=1e-5)
    np.testing.assert_array_equal(numpy(correct), [True, True, False])


@pytest.mark.parametrize("with_soft_targets", [False, True])
def test_masked_lm_loss_mixes_true_and_soft_targets(with_soft_targets):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 5)).astype("float32")
    mask_ids = np.array([[1, 4, 0], [2, 2, 3]], "int32")
    momentum_logits = rng.normal(size=(2, 3, 5)).astype("float32")
    alpha = 0.4
    loss, correct = masked_lm_loss(
        logits, mask_ids, momentum_logits if with_soft_targets else None, alpha
    )
    log_probs = log_softmax(logits)
    expected = -np.take_along_axis(log_probs, mask_ids[..., None], -1)[..., 0]
    if with_soft_targets:
        soft = np.exp(log_softmax(momentum_logits))
        expected = (1 - alpha) * expected - alpha * (soft * log_probs).sum(-1)
    np.testing.assert_allclose(numpy(loss), expected, rtol=1e-5)
    np.testing.assert_array_equal(numpy(correct), logits.argmax(-1) == mask_ids)


def test_selection_distillation_targets_the_most_relevant_patches():
    # Keep 0.5 of 4 patches: the target is uniform on the two of highest
    # relevance (patches 0 and 2).
    relevance = np.array([[3.0, 0.0, 2.0, 1.0], [0.0, 1.0, 2.0, 3.0]], "float32")
    scores = np.array([[0.5, 0.0, 0.5, 0.0], [0.4, 0.4, 0.1, 0.1]], "float32")
    loss = numpy(selection_distillation_loss(scores, relevance, 0.5))
    # Row 0 puts all its mass evenly on the target: the minimum, 0. Row 1:
    # -(log 0.1 + log 0.1) / 2 - log 2 = log(10 / 2).
    np.testing.assert_allclose(loss, [0.0, np.log(5.0)], atol=1e-5)
    # No gradient reaches the relevance, which only names the target.
    relevance_gradient = gradient(
        lambda r: ops.sum(selection_distillation_loss(scores, r, 0.5)), relevance
    )
    np.testing.assert_array_equal(numpy(relevance_gradient), 0.0)


def test_patch_relevance_is_the_text_embedding_against_each_patch():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(2, 3)).astype("float32")
    patches = rng.normal(size=(2, 5, 3)).astype("float32")
    expected = np.stack([patches[b] @ text[b] for b in range(2)])
    np.testing.assert_allclose(
        numpy(patch_relevance(text, patches)), expected, atol=1e-5
    )

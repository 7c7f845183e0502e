import numpy as np
import pytest
from pretraining_utils import MICRO

from keras_trips.metrics import RetrievalEvaluator, retrieval_recall
from keras_trips.models import TRIPSBackbone, TRIPSPretrainer


def test_recall_of_a_hand_made_similarity_matrix():
    # 3 images; texts 0, 1 show image 0, text 2 image 1, text 3 image 2.
    text_images = [0, 0, 1, 2]
    image_to_text = np.array(
        [
            [0.1, 0.9, 0.0, 0.2],  # image 0: its text 1 ranks first
            [0.8, 0.1, 0.7, 0.0],  # image 1: its text 2 ranks second
            [0.9, 0.8, 0.7, 0.1],  # image 2: its text 3 ranks last (fourth)
        ]
    )
    text_to_image = np.array(
        [
            [0.2, 0.9, 0.1],  # text 0: image 0 second
            [0.9, 0.0, 0.0],  # text 1: image 0 first
            [0.0, 0.5, 0.6],  # text 2: image 1 second
            [0.3, 0.2, 0.1],  # text 3: image 2 third
        ]
    )
    recall = retrieval_recall(image_to_text, text_to_image, text_images, ks=(1, 2, 3))
    assert recall == pytest.approx(
        {
            "image_to_text_r1": 1 / 3,
            "image_to_text_r2": 2 / 3,
            "image_to_text_r3": 2 / 3,
            "text_to_image_r1": 1 / 4,
            "text_to_image_r2": 3 / 4,
            "text_to_image_r3": 1.0,
            "mean_recall": (1 / 3 + 2 / 3 + 2 / 3 + 1 / 4 + 3 / 4 + 1) / 6,
        }
    )


def test_ties_rank_the_correct_candidate_last():
    # Constant scores carry no information: no credit below K = all others.
    scores = np.ones((3, 3))
    recall = retrieval_recall(scores, scores.T, [0, 1, 2], ks=(1, 2, 3))
    assert recall["image_to_text_r1"] == recall["text_to_image_r2"] == 0.0
    assert recall["image_to_text_r3"] == recall["text_to_image_r3"] == 1.0


def test_recall_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must have shape"):
        retrieval_recall(np.zeros((2, 3)), np.zeros((2, 3)), [0, 1, 1])


def test_evaluator_reranks_the_shortlist_by_itm_plus_itc():
    pretrainer = TRIPSPretrainer(TRIPSBackbone(**MICRO), embedding_dim=16)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    token_ids = rng.integers(5, 100, (6, 8)).astype("int32")
    token_ids[:, 0] = 1
    padding_mask = np.ones((6, 8), bool)
    text_images = np.array([0, 0, 1, 2, 3, 3])
    evaluator = RetrievalEvaluator(pretrainer, k_test=2, batch_size=5)

    similarity, text_states = evaluator.itc_similarity(images, token_ids, padding_mask)
    assert similarity.shape == (4, 6)
    recall = evaluator.evaluate(images, token_ids, padding_mask, text_images)
    # The same recall, computed here from the ITM scores of every pair.
    pairs = np.array([(i, t) for i in range(4) for t in range(6)])
    itm = evaluator.itm_scores(images, text_states, padding_mask, pairs).reshape(4, 6)
    # The ITM "match" logit of image 1 under text 4's guidance.
    tokens = pretrainer.backbone.encode_image(images[1:2], text_states[4:5, 0])
    _, logits = pretrainer.match_probability(
        text_states[4:5], tokens, padding_mask[4:5], return_logits=True
    )
    assert itm[1, 4] == pytest.approx(float(logits[0, 1]), abs=1e-5)
    # ALBEF's re-ranking score: ITM logit plus ITC similarity.
    itm = itm + similarity
    image_to_text = np.full((4, 6), -np.inf)
    text_to_image = np.full((6, 4), -np.inf)
    for i in range(4):
        for t in np.argsort(-similarity[i])[:2]:
            image_to_text[i, t] = itm[i, t]
    for t in range(6):
        for i in np.argsort(-similarity[:, t])[:2]:
            text_to_image[t, i] = itm[i, t]
    expected = retrieval_recall(image_to_text, text_to_image, text_images)
    itc = retrieval_recall(similarity, similarity.T, text_images)
    expected.update({f"itc_{name}": value for name, value in itc.items()})
    assert recall == pytest.approx(expected, abs=1e-6)
    # With 2 of 4 candidates shortlisted, recall@10 counts the shortlist only.
    assert recall["text_to_image_r10"] <= 1.0

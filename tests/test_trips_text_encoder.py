import keras
import keras_hub
import numpy as np
import pytest
from harness import run_layer_test

from keras_trips.layers import TRIPSTextEncoder

CONFIG = {
    "vocabulary_size": 50,
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "intermediate_dim": 32,
    "max_sequence_length": 12,
    "dropout": 0.0,
}
TOKEN_IDS = np.array([[1, 5, 6, 2, 0, 0], [1, 7, 2, 0, 0, 0]])
PADDING_MASK = TOKEN_IDS != 0


def numpy_output(x):
    return keras.ops.convert_to_numpy(x)


def test_layer(tmp_path):
    run_layer_test(
        TRIPSTextEncoder,
        CONFIG,
        {"token_ids": TOKEN_IDS, "padding_mask": PADDING_MASK},
        expected_output_shape=(2, 6, 16),
        tmp_path=tmp_path,
    )
    encoder = TRIPSTextEncoder(**CONFIG)
    assert encoder.compute_output_shape((2, 6)) == (2, 6, 16)


def test_padded_token_ids_do_not_change_real_tokens():
    encoder = TRIPSTextEncoder(**CONFIG)
    sequence = numpy_output(encoder(TOKEN_IDS, padding_mask=PADDING_MASK))
    changed_ids = np.where(PADDING_MASK, TOKEN_IDS, 33)
    changed = numpy_output(encoder(changed_ids, padding_mask=PADDING_MASK))
    np.testing.assert_allclose(changed[PADDING_MASK], sequence[PADDING_MASK], atol=1e-6)
    # Without the mask the padded ids are attended to.
    unmasked = numpy_output(encoder(changed_ids))
    assert np.abs(unmasked[PADDING_MASK] - sequence[PADDING_MASK]).max() > 1e-3


def test_masked_lm_head_ties_to_token_embedding():
    encoder = TRIPSTextEncoder(**CONFIG)
    sequence = encoder(TOKEN_IDS, padding_mask=PADDING_MASK)
    head = keras_hub.layers.MaskedLMHead(
        vocabulary_size=50, token_embedding=encoder.token_embedding
    )
    logits = head(sequence, mask_positions=np.array([[1, 2], [1, 1]]))
    assert tuple(logits.shape) == (2, 2, 50)
    # Tied: the head has no output kernel of its own.
    assert all(tuple(w.shape) != (16, 50) for w in head.weights)


@pytest.mark.parametrize("bad_id", [50, -1])
def test_out_of_vocabulary_ids(bad_id):
    encoder = TRIPSTextEncoder(**CONFIG)
    token_ids = TOKEN_IDS.copy()
    token_ids[0, 1] = bad_id
    with pytest.raises(ValueError, match=r"token_ids.*\[0, 50\)"):
        encoder(token_ids)


def test_float_token_ids():
    encoder = TRIPSTextEncoder(**CONFIG)
    with pytest.raises(ValueError, match="must be integers"):
        encoder(TOKEN_IDS.astype("float32"))


def test_wrong_rank_token_ids():
    encoder = TRIPSTextEncoder(**CONFIG)
    with pytest.raises(ValueError, match=r"token_ids.*\(batch_size, sequence_length\)"):
        encoder(TOKEN_IDS[0])


def test_sequence_longer_than_position_table():
    encoder = TRIPSTextEncoder(**CONFIG)
    with pytest.raises(ValueError, match="longer than `max_sequence_length`"):
        encoder(np.ones((1, 13), "int32"))


@pytest.mark.parametrize(
    "padding_mask",
    [PADDING_MASK[0], PADDING_MASK[:, :4], PADDING_MASK[:1], PADDING_MASK[..., None]],
)
def test_padding_mask_shape_mismatch(padding_mask):
    encoder = TRIPSTextEncoder(**CONFIG)
    with pytest.raises(ValueError, match=r"padding_mask.*\(2, 6\)"):
        encoder(TOKEN_IDS, padding_mask=padding_mask)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        TRIPSTextEncoder(**{**CONFIG, "num_heads": 3})

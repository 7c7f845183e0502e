import numpy as np
from harness import numpy, run_layer_test
from test_trips_vision_block import dense, gelu, layer_norm

from keras_trips.layers import TRIPSTaskHead

CONFIG = {"input_dim": 8, "hidden_dim": 16, "output_dim": 3}


def features(batch=4, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, 8)).astype("float32")


def test_layer(tmp_path):
    run_layer_test(
        TRIPSTaskHead,
        CONFIG,
        {"features": features()},
        expected_output_shape=(4, 3),
        # Two Dense layers and a LayerNorm, each with two weights.
        expected_num_trainable_weights=6,
        tmp_path=tmp_path,
    )


def test_matches_dense_gelu_layer_norm_dense():
    head = TRIPSTaskHead(**CONFIG)
    x = features()
    hidden = layer_norm(gelu(dense(x, head.hidden)), head.norm)
    expected = dense(hidden, head.output_dense)
    np.testing.assert_allclose(numpy(head(x)), expected, atol=1e-5)


def test_dropout_acts_in_training_only():
    head = TRIPSTaskHead(**CONFIG, dropout=0.5)
    x = features()
    np.testing.assert_array_equal(numpy(head(x)), numpy(head(x)))
    assert not np.allclose(numpy(head(x, training=True)), numpy(head(x)))

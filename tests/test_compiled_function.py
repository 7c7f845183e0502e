import keras
import numpy as np
import pytest

from keras_trips.utils.compiled_function import CompiledFunction


def scaled_rows(batch_sizes):
    """A compiled function of a one-weight layer that records the batch size
    of each call (each trace, where the backend compiles)."""
    layer = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    layer.build((None, 1))

    def function(model, inputs):
        batch_sizes.add(inputs["x"].shape[0])
        scaled = model(inputs["x"][:, :1])
        return {"scaled": scaled, "total": keras.ops.sum(inputs["x"], axis=1)}

    return CompiledFunction(layer, function)


def test_predict_in_batches_pads_the_last_batch_and_drops_the_padding():
    batch_sizes = set()
    x = np.arange(30, dtype="float32").reshape(10, 3)
    outputs = scaled_rows(batch_sizes).predict_in_batches({"x": x}, batch_size=4)
    # Batches of 4, 4 and 2 rows, the last padded to 4: one batch shape.
    assert batch_sizes == {4}
    np.testing.assert_allclose(outputs["scaled"], x[:, :1])
    np.testing.assert_allclose(outputs["total"], x.sum(axis=1))


def test_predict_in_batches_of_fewer_rows_than_a_batch():
    batch_sizes = set()
    x = np.ones((3, 2), "float32")
    outputs = scaled_rows(batch_sizes).predict_in_batches({"x": x}, batch_size=64)
    assert batch_sizes == {3}
    np.testing.assert_allclose(outputs["total"], [2.0, 2.0, 2.0])


def test_predict_in_batches_rejects_empty_inputs():
    with pytest.raises(ValueError, match="no rows"):
        scaled_rows(set()).predict_in_batches({"x": np.zeros((0, 2))}, batch_size=4)

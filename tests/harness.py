"""The checks every public layer and model passes, after keras-hub's
`TestCase` (`run_layer_test`, `run_model_saving_test`, `run_backbone_test`).

Each model test file calls these for the common ground (config and
serialization round trips, symbolic and eager output shapes, a compiled
training step, mixed precision, the `.keras` round trip) and spends its own
tests on what is particular to its class.
"""

import json

import keras
import numpy as np
import tensorflow as tf
from keras import ops, tree

MIXED_PRECISION = "mixed_bfloat16"


def numpy(x):
    return ops.convert_to_numpy(x)


def randomize_weights(model, seed=1, scale=0.2):
    """Random float weights, large enough for peaked attention, so that a
    misplaced or skipped weight shows: Keras and keras-hub initialise biases
    (and register tokens, layer scales) to constants. Scales (`gamma`, layer
    scales' `lambda`) are centred on one. Integer weights (position ids)
    stay. Returns the model."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "float" not in str(variable.dtype):
            continue
        values = rng.normal(scale=scale, size=variable.shape)
        if variable.name.startswith(("gamma", "lambda")):
            values += 1.0
        variable.assign(values.astype("float32"))
    return model


def run_serialization_test(instance):
    """`get_config` is JSON and survives `from_config` and the Keras
    serialize/deserialize round trip unchanged."""
    config = _json(instance.get_config())
    revived = type(instance).from_config(instance.get_config())
    assert _json(revived.get_config()) == config
    serialized = _json(keras.saving.serialize_keras_object(instance))
    revived = keras.saving.deserialize_keras_object(json.loads(serialized))
    assert type(revived) is type(instance)
    assert _json(revived.get_config()) == config


def run_layer_test(
    cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    call_kwargs=None,
    expected_num_trainable_weights=None,
    run_symbolic_check=True,
    run_training_check=True,
    run_precision_check=True,
    run_saving_check=True,
    float32_outputs=0,
    tmp_path=None,
):
    """The common checks of a layer.

    Args:
        cls, init_kwargs: the layer class and its constructor arguments.
        input_data: dict of the call's tensor arguments (numpy), by name.
        expected_output_shape: the output's shape, or a list of shapes, one
            per output tensor in order (outputs that are `None` left out).
        call_kwargs: the call's other arguments (flags such as
            `return_indices`).
        expected_num_trainable_weights: checked when given.
        run_symbolic_check: a call on `keras.KerasTensor`s (as in a
            functional model) gives the expected shapes.
        run_training_check: one compiled `fit` step must change every
            trainable weight.
        run_precision_check: under `mixed_bfloat16` the outputs and every
            sublayer compute in bfloat16 and the weights stay float32.
        float32_outputs: how many of the last outputs are float32 by design
            under mixed precision.
        run_saving_check: a `.keras` round trip (needs `tmp_path`) gives
            identical outputs.
    """
    call_kwargs = dict(call_kwargs or {})
    run_serialization_test(cls(**init_kwargs))

    def assert_output(layer, output):
        assert _shapes(output) == _expected_shapes(expected_output_shape)
        first = _tensors(output)[0]
        assert keras.backend.standardize_dtype(first.dtype) == layer.compute_dtype

    if run_symbolic_check:
        symbolic = tree.map_structure(
            lambda x: keras.KerasTensor(x.shape, x.dtype), input_data
        )
        layer = cls(**init_kwargs)
        assert_output(layer, layer(**symbolic, **call_kwargs))

    layer = cls(**init_kwargs)
    output = layer(**input_data, **call_kwargs)
    assert_output(layer, output)
    assert layer.built
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    if run_training_check:
        run_training_step(layer, input_data, call_kwargs)
    if run_precision_check:
        run_precision_test(cls, init_kwargs, input_data, call_kwargs, float32_outputs)
    if run_saving_check:
        model = LayerModel(cls(**init_kwargs), call_kwargs)
        run_model_saving_test(model, input_data, tmp_path)


def run_training_step(layer, input_data, call_kwargs=None):
    """One compiled `fit` step of `layer` towards random targets changes
    each of its trainable weights. Compiled: a `tf.function` graph under
    TensorFlow (XLA costs seconds a test; the vision encoder's fit test
    compiles with it), `jax.jit` under JAX; torch steps run eagerly (its
    `jit_compile` is torch.compile, minutes of C++ builds on a CPU)."""
    model = LayerModel(layer, call_kwargs or {}, first_output_only=True)
    output = model(input_data)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        jit_compile=keras.backend.backend() == "jax",
    )
    before = [numpy(weight.value) for weight in layer.trainable_weights]
    targets = np.random.default_rng(0).normal(size=output.shape)
    model.fit(input_data, targets.astype("float32"), epochs=1, verbose=0)
    for weight, value in zip(layer.trainable_weights, before):
        assert not np.array_equal(numpy(weight.value), value), (
            f"{weight.path} unchanged"
        )


def run_precision_test(
    cls, init_kwargs, input_data, call_kwargs=None, float32_outputs=0
):
    """Built under `mixed_bfloat16`, the layer or model computes in bfloat16
    throughout and keeps float32 weights; its last `float32_outputs`
    outputs stay float32 by design (selection scores)."""
    instance = cls(**init_kwargs, dtype=MIXED_PRECISION)
    outputs = _tensors(_call(instance, input_data, call_kwargs))
    for tensor in outputs[len(outputs) - float32_outputs :]:
        assert keras.backend.standardize_dtype(tensor.dtype) == "float32"
    for tensor in outputs[: len(outputs) - float32_outputs]:
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if "float" in dtype:
            assert dtype == "bfloat16"
    for weight in instance.weights:
        if "float" in weight.dtype:
            assert weight.dtype == "float32", weight.path
    for sublayer in instance._flatten_layers():
        if not isinstance(sublayer, keras.layers.InputLayer):
            assert sublayer.compute_dtype == "bfloat16", sublayer.name
            assert sublayer.variable_dtype == "float32", sublayer.name


def run_model_saving_test(model, input_data, tmp_path, call_kwargs=None):
    """Saved as `.keras` and loaded, `model` is its own class again, with
    the same config and identical outputs; returns the loaded model."""
    expected = _call(model, input_data, call_kwargs)
    path = str(tmp_path / f"{model.name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert _json(loaded.get_config()) == _json(model.get_config())
    for actual, wanted in zip(
        _tensors(_call(loaded, input_data, call_kwargs)), _tensors(expected)
    ):
        np.testing.assert_array_equal(numpy(actual), numpy(wanted))
    return loaded


def run_backbone_test(cls, init_kwargs, input_data, expected_output_shape, tmp_path):
    """The checks of a backbone: serialization, eager outputs of the
    expected shapes, `predict` on arrays and on a `tf.data.Dataset` agreeing
    with the eager call, the token embedding, mixed precision and the
    `.keras` round trip."""
    backbone = cls(**init_kwargs)
    run_serialization_test(backbone)
    output = backbone(input_data)
    assert {k: tuple(v.shape) for k, v in output.items()} == expected_output_shape
    predicted = backbone.predict(input_data, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(input_data).batch(1)
    from_dataset = backbone.predict(dataset, verbose=0)
    for key, value in output.items():
        np.testing.assert_allclose(predicted[key], numpy(value), atol=1e-5)
        np.testing.assert_allclose(from_dataset[key], numpy(value), atol=1e-5)
    tokens = backbone.token_embedding(np.zeros((2, 3), "int32"))
    assert tuple(tokens.shape)[:2] == (2, 3)
    run_precision_test(cls, init_kwargs, input_data)
    run_model_saving_test(backbone, input_data, tmp_path)


def _call(instance, input_data, call_kwargs=None):
    if isinstance(instance, keras.Model):
        return instance(input_data, **(call_kwargs or {}))
    return instance(**input_data, **(call_kwargs or {}))


def _json(config):
    return json.dumps(config, sort_keys=True)


def _tensors(structure):
    """The tensors of a structure, without its `None`s."""
    return [x for x in tree.flatten(structure) if x is not None]


def _shapes(structure):
    return [tuple(x.shape) for x in _tensors(structure)]


def _expected_shapes(expected):
    if all(isinstance(dim, int) for dim in expected):
        return [tuple(expected)]
    return [tuple(shape) for shape in expected]


@keras.saving.register_keras_serializable(package="keras_trips_tests")
class LayerModel(keras.Model):
    """A model around one layer, so that a layer's `.keras` round trip and
    compiled training run through Keras' own `save` and `fit`."""

    def __init__(self, layer, call_kwargs, first_output_only=False, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.call_kwargs = call_kwargs
        self.first_output_only = first_output_only

    def call(self, inputs):
        outputs = self.layer(**inputs, **self.call_kwargs)
        return _tensors(outputs)[0] if self.first_output_only else outputs

    def get_config(self):
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.layer),
            "call_kwargs": self.call_kwargs,
            "first_output_only": self.first_output_only,
        }

    @classmethod
    def from_config(cls, config):
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)

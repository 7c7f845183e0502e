"""TF SavedModel export: served outputs match Keras, without Keras loaded."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from pretraining_utils import MICRO, pretraining_batch

from keras_trips.export import (
    export_saved_model,
    register_serving_signature,
    serving_signatures,
)
from keras_trips.models import TRIPSBackbone, TRIPSPretrainer

BACKEND = keras.backend.backend()
SEQUENCE_LENGTH = 8
SERVED_NAMES = [
    "itm",
    "itm_normalized",
    "image_embedding",
    "image_embedding_normalized",
    "text_embedding",
    "features",
    "features_normalized",
]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_saved_model_backend = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras writes SavedModels from TensorFlow and JAX"
)

# Runs in a fresh interpreter where Keras cannot be imported at all
# (TensorFlow itself imports keras when it is installed, unless told no), calls
# every signature on a batch of 3 and on its first row, and saves the outputs.
SERVING_PROCESS = r"""
import json, sys
for blocked in ("keras", "keras_trips", "keras_hub", "tf_keras"):
    sys.modules[blocked] = None
import numpy as np
import tensorflow as tf

saved_model_dir, inputs_path, outputs_path = sys.argv[1:]
served = tf.saved_model.load(saved_model_dir)
inputs = dict(np.load(inputs_path))
outputs = {}
for name, function in served.signatures.items():
    arguments = function.structured_input_signature[1]
    for suffix, rows in (("", slice(None)), ("/first", slice(0, 1))):
        batch = {key: tf.constant(inputs[key][rows]) for key in arguments}
        for key, value in function(**batch).items():
            outputs[f"{name}/{key}{suffix}"] = value.numpy()
np.savez(outputs_path, **outputs)
loaded = sorted(m for m, module in sys.modules.items()
                if m.split(".")[0] in ("keras", "keras_trips", "keras_hub")
                and module is not None)
print(json.dumps({"keras_modules": loaded}))
"""


def numpy_outputs(outputs):
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


def micro_pretrainer():
    keras.utils.set_random_seed(7)
    return TRIPSPretrainer(TRIPSBackbone(**MICRO), embedding_dim=16)


def serving_inputs(batch_size=3):
    """Inputs of every served signature: raw pixels at another size than the
    model's 32 px, and the same images resized and normalised as the
    training pipeline does (what the model sees in both cases)."""
    import tensorflow as tf

    from keras_trips.data import image_ops

    batch = pretraining_batch(batch_size=batch_size, seed=2)
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (batch_size, 40, 36, 3), dtype=np.uint8)
    normalized = image_ops.normalize_images(image_ops.resize(tf.constant(pixels), 32))
    return {
        "images_uint8": pixels,
        "images_normalized": normalized.numpy(),
        "token_ids": batch["token_ids"],
        "padding_mask": batch["padding_mask"],
    }


def model_inputs(inputs):
    """The model's inputs for the served ones."""
    model = {k: v for k, v in inputs.items() if not k.startswith("images")}
    return {"images": inputs["images_normalized"], **model}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A micro pretrainer exported with all its signatures, served once."""
    if BACKEND == "torch":
        pytest.skip("Keras writes SavedModels from TensorFlow and JAX")
    folder = tmp_path_factory.mktemp("export")
    pretrainer = micro_pretrainer()
    saved_model_dir = str(folder / "saved_model")
    names = export_saved_model(
        pretrainer, saved_model_dir, sequence_length=SEQUENCE_LENGTH
    )
    inputs = serving_inputs()
    np.savez(folder / "inputs.npz", **inputs)
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVING_PROCESS,
            saved_model_dir,
            str(folder / "inputs.npz"),
            str(folder / "outputs.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {
        "pretrainer": pretrainer,
        "names": names,
        "saved_model_dir": saved_model_dir,
        "inputs": inputs,
        "served": dict(np.load(folder / "outputs.npz")),
        "serving_process": json.loads(run.stdout.strip().splitlines()[-1]),
    }


@needs_saved_model_backend
def test_served_signatures_match_keras_without_keras(exported):
    assert exported["serving_process"]["keras_modules"] == []
    pretrainer, served = exported["pretrainer"], exported["served"]
    assert exported["names"] == SERVED_NAMES
    signatures = serving_signatures(pretrainer)
    inputs = model_inputs(exported["inputs"])
    for name in [*exported["names"], "serving_default"]:
        # Raw pixels (resized and normalised inside) and normalised images
        # give the model the same images.
        base = "itm" if name == "serving_default" else name.replace("_normalized", "")
        signature = signatures[base]
        expected = numpy_outputs(
            signature.function(pretrainer, {k: inputs[k] for k in signature.inputs})
        )
        for key, value in expected.items():
            np.testing.assert_allclose(
                served[f"{name}/{key}"], value, atol=1e-4, err_msg=f"{name}/{key}"
            )
            # The batch dimension is dynamic: one row serves alike.
            np.testing.assert_allclose(
                served[f"{name}/{key}/first"], value[:1], atol=1e-4
            )
    probability = served["itm/itm_probability"]
    assert probability.shape == (3,) and np.all((probability >= 0) & (probability <= 1))
    # Text-free image embeddings: unit vectors, one per image.
    embedding = served["image_embedding/image_embedding"]
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=-1), 1.0, atol=1e-5)


@needs_saved_model_backend
def test_saved_model_cli_lists_serving_default(exported):
    run = subprocess.run(
        [
            "saved_model_cli",
            "show",
            "--dir",
            exported["saved_model_dir"],
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("images_uint8", "token_ids", "padding_mask", "itm_probability"):
        assert f"['{name}']" in run.stdout, run.stdout
    assert "dtype: DT_UINT8" in run.stdout and "(-1, -1, -1, 3)" in run.stdout
    assert "(-1, 8)" in run.stdout


@needs_saved_model_backend
def test_served_inputs_are_checked_before_the_model_runs(exported):
    import tensorflow as tf

    served = tf.saved_model.load(exported["saved_model_dir"]).signatures
    inputs = {k: tf.constant(v) for k, v in exported["inputs"].items()}
    text = {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}
    # Raw pixels sent as floats to the normalised signature: rejected.
    raw_as_float = tf.cast(inputs["images_uint8"][:, :32, :32], tf.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="images_normalized"):
        served["itm_normalized"](images_normalized=raw_as_float, **text)
    # uint8 to the normalised signature, floats to the raw one: wrong dtype.
    with pytest.raises(tf.errors.InvalidArgumentError, match="float tensor"):
        served["itm_normalized"](images_normalized=inputs["images_uint8"], **text)
    with pytest.raises(tf.errors.InvalidArgumentError, match="uint8 tensor"):
        served["serving_default"](images_uint8=raw_as_float, **text)
    # 2 images, 1 text.
    one_text = {k: v[:1] for k, v in text.items()}
    for name, images in (
        ("itm", "images_uint8"),
        ("itm_normalized", "images_normalized"),
    ):
        with pytest.raises(
            tf.errors.InvalidArgumentError, match="must have the same batch size"
        ):
            served[name](**{images: inputs[images][:2]}, **one_text)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        served["text_embedding"](
            token_ids=inputs["token_ids"], padding_mask=inputs["padding_mask"][:1]
        )


@needs_saved_model_backend
def test_invalid_export_requests_are_rejected(tmp_path):
    pretrainer = micro_pretrainer()
    path = str(tmp_path / "never_written")
    with pytest.raises(ValueError, match="Unknown or no signatures"):
        export_saved_model(pretrainer, path, signatures=["answer"])
    with pytest.raises(ValueError, match="not among those exported"):
        export_saved_model(
            pretrainer, path, signatures=["itm"], default_signature="features"
        )
    with pytest.raises(ValueError, match="sequence_length"):
        export_saved_model(pretrainer, path, sequence_length=9)
    assert not os.path.exists(path)


def test_signature_registry_defaults_and_plugs_in_task_models():
    assert list(serving_signatures(TRIPSBackbone(**MICRO))) == ["features"]
    assert next(iter(serving_signatures(micro_pretrainer()))) == "itm"

    class TaskModel(keras.Model):
        pass

    with pytest.raises(ValueError, match="No serving signatures"):
        serving_signatures(TaskModel())
    signature = serving_signatures(TRIPSBackbone(**MICRO))["features"]
    register_serving_signature(TaskModel, signature)
    assert list(serving_signatures(TaskModel())) == ["features"]


@pytest.mark.skipif(BACKEND != "torch", reason="the torch redirect")
def test_torch_refuses_and_the_cli_exports_under_tensorflow(tmp_path):
    import tensorflow as tf

    pretrainer = micro_pretrainer()
    with pytest.raises(NotImplementedError, match=r"tools/export_saved_model\.py"):
        export_saved_model(pretrainer, str(tmp_path / "saved_model"))

    model_path = str(tmp_path / "pretrainer.keras")
    pretrainer.save(model_path)
    saved_model_dir = str(tmp_path / "saved_model")
    run = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "export_saved_model.py"),
            model_path,
            saved_model_dir,
            "--sequence-length",
            str(SEQUENCE_LENGTH),
            "--signatures",
            "itm",
            "image_embedding",
        ],
        env={**os.environ, "KERAS_BACKEND": "torch"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "under tensorflow" in run.stdout

    inputs = serving_inputs()
    served = tf.saved_model.load(saved_model_dir).signatures
    assert set(served) == {
        "itm",
        "itm_normalized",
        "image_embedding",
        "image_embedding_normalized",
        "serving_default",
    }
    signature = serving_signatures(pretrainer)["itm"]
    expected = numpy_outputs(signature.function(pretrainer, model_inputs(inputs)))
    raw = {k: v for k, v in inputs.items() if k != "images_normalized"}
    actual = served["serving_default"](**{k: tf.constant(v) for k, v in raw.items()})
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key].numpy(), value, atol=1e-4)

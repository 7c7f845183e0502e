"""Every public layer and model saves as `.keras` under one backend and loads
under the other two with the same outputs.

Three processes cover the six directed backend pairs: this test (under
TensorFlow; skipped under the other backends, whose runs it already covers)
saves micro models with their inputs and outputs, then starts a JAX and a
torch worker (this file run as a script); each worker saves its own models,
waits for the other's, and loads the two other backends' models; finally this
process loads the workers' models.
"""

import json
import os
import subprocess
import sys
import time
import traceback

import keras
import numpy as np
import pytest
from pretraining_utils import MICRO, pretraining_batch

from keras_trips.export import serving_signatures
from keras_trips.layers import (
    TRIPSFusionEncoder,
    TRIPSPatchEmbedding,
    TRIPSPatchSelection,
    TRIPSTextEncoder,
    TRIPSVisionBlock,
)
from keras_trips.models import TRIPSBackbone, TRIPSPretrainer, TRIPSVisionEncoder

BACKENDS = ("tensorflow", "jax", "torch")
TOLERANCE = 1e-5
WORKER_TIMEOUT = 900
WIDTH = MICRO["hidden_dim"]
VISION = dict(
    image_shape=MICRO["image_shape"],
    patch_size=MICRO["patch_size"],
    num_layers=2,
    num_heads=2,
    hidden_dim=WIDTH,
    mlp_dim=64,
    selection_layers=(0,),
    keep_rate=0.5,
)
TEXT = dict(num_heads=2, hidden_dim=WIDTH, intermediate_dim=64, dropout=0.0)
# The pretrainer's ITM negatives are random draws, whose generator differs
# between backends; everything else it computes is deterministic.
BACKEND_RANDOM_OUTPUTS = ("itm_loss", "itm_accuracy")


def micro_inputs():
    rng = np.random.default_rng(0)
    batch = pretraining_batch(batch_size=2, seed=0)
    return {
        **batch,
        "tokens": rng.normal(size=(2, 17, WIDTH)).astype("float32"),
        "text_embedding": rng.normal(size=(2, WIDTH)).astype("float32"),
        "text_sequence": rng.normal(size=(2, 8, WIDTH)).astype("float32"),
        "image_tokens": rng.normal(size=(2, 10, WIDTH)).astype("float32"),
    }


def pretrainer_outputs(model, x):
    outputs = model(x, training=False)
    for name in BACKEND_RANDOM_OUTPUTS:
        outputs.pop(name)
    for signature in serving_signatures(model).values():
        signature_inputs = {name: x[name] for name in signature.inputs}
        outputs.update(signature.function(model, signature_inputs))
    return outputs


# name -> (builder, call returning a dict of outputs).
MODELS = {
    "patch_selection": (
        lambda: TRIPSPatchSelection(keep_rate=0.5, num_heads=2),
        lambda m, x: dict(
            zip(
                ("tokens", "indices", "scores"),
                m(x["tokens"], query=x["text_embedding"], return_indices=True),
            )
        ),
    ),
    "patch_embedding": (
        lambda: TRIPSPatchEmbedding(MICRO["image_shape"], MICRO["patch_size"], WIDTH),
        lambda m, x: {"tokens": m(x["images"])},
    ),
    "vision_block": (
        lambda: TRIPSVisionBlock(WIDTH, 2, 64, keep_rate=0.5),
        lambda m, x: dict(
            zip(
                ("tokens", "indices", "scores"),
                m(x["tokens"], text_embedding=x["text_embedding"]),
            )
        ),
    ),
    "text_encoder": (
        lambda: TRIPSTextEncoder(
            vocabulary_size=100, num_layers=1, max_sequence_length=8, **TEXT
        ),
        lambda m, x: {"sequence": m(x["token_ids"], padding_mask=x["padding_mask"])},
    ),
    "fusion_encoder": (
        lambda: TRIPSFusionEncoder(num_layers=1, **TEXT),
        lambda m, x: {
            "sequence": m(
                x["text_sequence"], x["image_tokens"], padding_mask=x["padding_mask"]
            )
        },
    ),
    "vision_encoder": (
        lambda: TRIPSVisionEncoder(**VISION),
        lambda m, x: dict(
            zip(
                ("tokens", "provenance"),
                m(
                    {"images": x["images"], "text_embedding": x["text_embedding"]},
                    return_provenance=True,
                ),
            )
        ),
    ),
    "backbone": (
        lambda: TRIPSBackbone(**MICRO),
        lambda m, x: m(
            {key: x[key] for key in ("images", "token_ids", "padding_mask")}
        ),
    ),
    "pretrainer": (
        lambda: TRIPSPretrainer(
            TRIPSBackbone(**MICRO), embedding_dim=16, use_momentum=True, queue_size=6
        ),
        pretrainer_outputs,
    ),
}


def call(name, model, inputs):
    outputs = MODELS[name][1](model, inputs)
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


def save_models(folder):
    """Saves every micro model, its inputs and its outputs under `folder`."""
    os.makedirs(folder, exist_ok=True)
    inputs = micro_inputs()
    np.savez(os.path.join(folder, "inputs.npz"), **inputs)
    for name, (build, _) in MODELS.items():
        keras.utils.set_random_seed(0)
        model = build()
        # Called first: a layer creates its weights when first called.
        np.savez(os.path.join(folder, f"{name}.npz"), **call(name, model, inputs))
        keras.saving.save_model(model, os.path.join(folder, f"{name}.keras"))
    open(os.path.join(folder, "COMPLETE"), "w").close()


def load_and_compare(folder):
    """Loads `folder`'s models; returns each one's max abs output difference."""
    inputs = dict(np.load(os.path.join(folder, "inputs.npz")))
    differences = {}
    for name in MODELS:
        model = keras.saving.load_model(os.path.join(folder, f"{name}.keras"))
        expected = dict(np.load(os.path.join(folder, f"{name}.npz")))
        actual = call(name, model, inputs)
        assert actual.keys() == expected.keys(), (name, actual.keys())
        differences[name] = max(
            float(np.max(np.abs(actual[key].astype("float64") - expected[key])))
            for key in expected
        )
    return differences


def wait_for(folder):
    deadline = time.monotonic() + WORKER_TIMEOUT
    while not os.path.exists(os.path.join(folder, "COMPLETE")):
        if os.path.exists(os.path.join(folder, "FAILED")):
            raise RuntimeError(f"The worker saving to {folder} failed.")
        if time.monotonic() > deadline:
            raise TimeoutError(f"Nothing saved to {folder} in {WORKER_TIMEOUT} s.")
        time.sleep(1)


def run_worker(root):
    """Saves this backend's models, then loads the other two backends'."""
    backend = keras.backend.backend()
    folder = os.path.join(root, backend)
    try:
        save_models(folder)
        differences = {}
        for source in BACKENDS:
            if source != backend:
                wait_for(os.path.join(root, source))
                differences[f"{source}->{backend}"] = load_and_compare(
                    os.path.join(root, source)
                )
    except BaseException:
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, "FAILED"), "w").close()
        raise
    with open(os.path.join(folder, "differences.json"), "w") as file:
        json.dump(differences, file)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="run once, from TensorFlow: it covers every backend pair",
)
def test_keras_files_load_under_every_backend_with_the_same_outputs(tmp_path):
    root = str(tmp_path)
    save_models(os.path.join(root, "tensorflow"))
    workers = {
        backend: subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), root],
            env={**os.environ, "KERAS_BACKEND": backend},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for backend in BACKENDS[1:]
    }
    differences = {}
    for backend, worker in workers.items():
        output, _ = worker.communicate(timeout=WORKER_TIMEOUT)
        assert worker.returncode == 0, f"{backend} worker:\n{output[-4000:]}"
        with open(os.path.join(root, backend, "differences.json")) as file:
            differences.update(json.load(file))
        differences[f"{backend}->tensorflow"] = load_and_compare(
            os.path.join(root, backend)
        )
    print(json.dumps(differences, indent=1))
    assert len(differences) == 6
    for pair, by_model in differences.items():
        assert by_model.keys() == MODELS.keys()
        for name, difference in by_model.items():
            assert difference <= TOLERANCE, f"{pair} {name}: {difference}"


if __name__ == "__main__":
    try:
        run_worker(sys.argv[1])
    except BaseException:
        traceback.print_exc()
        sys.exit(1)

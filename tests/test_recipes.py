"""The recipes end to end on the micro configuration and tiny scenes."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from pretraining_utils import MICRO

pytestmark = pytest.mark.usefixtures("scenes_cache")

RECIPES = pathlib.Path(__file__).resolve().parents[1] / "recipes"
# The micro model on the tokenizer's vocabulary (the data's token ids).
MICRO_OVERRIDES = {
    key: value
    for key, value in MICRO.items()
    if key not in ("vocabulary_size", "image_shape", "keep_rate", "dropout")
}


def load_recipe(name):
    # As when run as a script: the recipes import their shared front module.
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def micro_arguments(output_dir, *extra):
    return [
        "--model=tiny",
        f"--backbone-overrides={json.dumps(MICRO_OVERRIDES)}",
        "--embedding-dim=16",
        "--dropout=0",
        "--keep-rate=0.5",
        "--num-scenes=64",
        "--num-eval-scenes=8",
        "--image-size=32",
        "--batch-size=8",
        "--warmup-steps=2",
        f"--output-dir={output_dir}",
        *extra,
    ]


class Interrupt(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Raises after a given number of batches, as a kill would stop a run."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.batches:
            raise Interrupt()


def training_state(model):
    """Every weight, optimizer variable and seed state: `(path, value)`."""
    variables = model.variables + model.optimizer.variables
    return [(v.path, keras.ops.convert_to_numpy(v)) for v in variables]


def test_pretraining_resumes_where_it_was_killed(tmp_path):
    pretrain = load_recipe("pretrain")
    # 64 scenes / 8 = 8 batches a pass; epochs of 5: the kill at batch 7 is
    # mid-epoch, past the checkpoint at 6, and the run crosses a data pass.
    # Dropout on: its random state must resume too.
    common = [
        "--steps=10",
        "--steps-per-epoch=5",
        "--checkpoint-every=3",
        "--dropout=0.1",
    ]
    straight = pretrain.main(micro_arguments(tmp_path / "straight", *common))

    with pytest.raises(Interrupt):
        pretrain.main(
            micro_arguments(tmp_path / "killed", *common),
            extra_callbacks=[InterruptAt(7)],
        )
    checkpoints = sorted(os.listdir(tmp_path / "killed" / "checkpoints"))
    assert checkpoints[-1] == "step-000000006.weights.h5"
    resumed = pretrain.main(micro_arguments(tmp_path / "killed", *common))

    assert resumed["timing"]["start_step"] == 6
    assert resumed["timing"]["steps"] == 4
    for run in (straight, resumed):
        assert int(keras.ops.convert_to_numpy(run["model"].optimizer.iterations)) == 10
    expected = training_state(straight["model"])
    actual = training_state(resumed["model"])
    assert len(actual) == len(expected)
    for (path, value), (_, resumed_value) in zip(expected, actual):
        np.testing.assert_allclose(
            resumed_value, value, rtol=1e-4, atol=1e-6, err_msg=path
        )
    # The per-step log runs on from the checkpoint, the epochs stay aligned.
    history = (tmp_path / "killed" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1"]
    for name in ("backbone.keras", "pretrainer.keras", "losses.png", "steps.csv"):
        assert (tmp_path / "killed" / name).is_file()
    for name in ("loss", "itc_loss", "itm_loss", "mlm_loss"):
        assert np.isfinite(resumed["final"][name])


def test_retrieval_finetuning_reports_recall(tmp_path):
    finetune = load_recipe("finetune_retrieval")
    result = finetune.main(
        micro_arguments(tmp_path, "--steps=2", "--k-test=4", "--checkpoint-every=2")
    )
    assert result["timing"]["steps"] == 2
    assert set(result["recall"]) >= {"image_to_text_r1", "text_to_image_r10"}
    assert all(0.0 <= value <= 1.0 for value in result["recall"].values())
    assert os.path.isfile(result["files"]["pretrainer"])


def run_script(script, tmp_path, **environment):
    """Runs `script` in a fresh interpreter (device counts are fixed at
    import); returns the JSON it prints last."""
    env = {**os.environ, **environment}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(pathlib.Path(__file__).parent), env.get("PYTHONPATH", "")]
    )
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


LOSSES = ("loss", "itc_loss", "itm_loss", "mlm_loss")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX DataParallel")
def test_jax_data_parallel_matches_one_device(tmp_path):
    # The model sees the global batch as one sharded array: the same losses.
    script = """
        import json, sys
        import keras
        from test_recipes import load_recipe, micro_arguments
        from keras_trips import training

        assert len(keras.distribution.list_devices()) == 2
        pretrain = load_recipe("pretrain")
        logs = {}
        for name, extra in [("single", []), ("parallel", ["--data-parallel"])]:
            output = sys.argv[1] + "/" + name
            argv = micro_arguments(output, "--steps=3", "--momentum", "--queue-size=12")
            pretrain.main([*argv, *extra])
            logs[name] = training.read_step_log(output + "/steps.csv")
        print(json.dumps(logs))
    """
    flags = os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0")
    logs = run_script(
        script,
        tmp_path,
        KERAS_BACKEND="jax",
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=2",
    )
    for name in LOSSES:
        np.testing.assert_allclose(
            logs["parallel"][name], logs["single"][name], rtol=1e-4, atol=1e-5
        )


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="MirroredStrategy")
def test_tensorflow_mirrored_strategy_matches_one_device(tmp_path):
    # Each replica runs the step on its half of the global batch; the
    # contrastive and hard negatives, the momentum queues and the loss means
    # span both halves, so the losses are those of one device.
    script = """
        import json, sys
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        from test_recipes import load_recipe, micro_arguments
        from keras_trips import training

        pretrain = load_recipe("pretrain")
        logs = {}
        for name, extra in [("single", []), ("parallel", ["--data-parallel"])]:
            output = sys.argv[1] + "/" + name
            argv = micro_arguments(output, "--steps=3", "--momentum", "--queue-size=12")
            result = pretrain.main([*argv, *extra])
            logs[name] = training.read_step_log(output + "/steps.csv")
        assert len(result["config"].devices) == 2
        print(json.dumps(logs))
    """
    logs = run_script(script, tmp_path, KERAS_BACKEND="tensorflow")
    assert logs["parallel"]["step"] == [1.0, 2.0, 3.0]
    for name in LOSSES:
        np.testing.assert_allclose(
            logs["parallel"][name], logs["single"][name], rtol=1e-4, atol=1e-5
        )

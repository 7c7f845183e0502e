"""Data parallelism through the pre-training recipe: the losses of one
device, under keras.distribution (JAX) and tf.distribute (TensorFlow)."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("scenes_cache")

LOSSES = ("loss", "itc_loss", "itm_loss", "mlm_loss")
# Pre-trains 3 steps on one device, then on all (`--data-parallel`), with the
# momentum model and queues; prints both runs' step logs. The devices are
# set up before it, in a fresh interpreter (device counts are fixed at
# import). With "eager" as its second argument, the one-device reference
# runs eagerly (`run_eagerly=True`: the same ops, without the tracing that
# costs TensorFlow half a minute for a micro pretrainer).
ONE_AND_ALL_DEVICES = """
    import json, sys
    from test_recipes import compiled_eagerly, load_recipe, micro_arguments
    from keras_trips import training

    pretrain = load_recipe("pretrain")
    logs = {}
    for name, extra in [("single", []), ("parallel", ["--data-parallel"])]:
        output = sys.argv[1] + "/" + name
        argv = micro_arguments(
            output, "--steps=3", "--momentum", "--queue-size=12", "--skip-evaluation"
        )
        with compiled_eagerly(name == "single" and sys.argv[2] == "eager"):
            result = pretrain.main([*argv, *extra])
        logs[name] = training.read_step_log(output + "/steps.csv")
    assert len(result["config"].devices) == 2
    print(json.dumps(logs))
"""


def losses_on_one_and_all_devices(
    device_setup, tmp_path, eager_reference=False, **environment
):
    env = {**os.environ, **environment}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(pathlib.Path(__file__).parent), env.get("PYTHONPATH", "")]
    )
    script = textwrap.dedent(device_setup) + textwrap.dedent(ONE_AND_ALL_DEVICES)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path),
            "eager" if eager_reference else "traced",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    logs = json.loads(completed.stdout.strip().splitlines()[-1])
    assert logs["parallel"]["step"] == [1.0, 2.0, 3.0]
    for name in LOSSES:
        np.testing.assert_allclose(
            logs["parallel"][name], logs["single"][name], rtol=1e-4, atol=1e-5
        )


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX DataParallel")
def test_jax_data_parallel_matches_one_device(tmp_path):
    # The model sees the global batch as one sharded array: the same losses.
    flags = os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0")
    losses_on_one_and_all_devices(
        """
        import keras
        assert len(keras.distribution.list_devices()) == 2
        """,
        tmp_path,
        KERAS_BACKEND="jax",
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=2",
    )


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="MirroredStrategy")
def test_tensorflow_mirrored_strategy_matches_one_device(tmp_path):
    # Each replica runs the step on its half of the global batch; the
    # contrastive and hard negatives, the momentum queues and the loss means
    # span both halves, so the losses are those of one device.
    losses_on_one_and_all_devices(
        """
        import tensorflow as tf
        from backend_utils import configure_tensorflow_for_tests
        configure_tensorflow_for_tests()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        """,
        tmp_path,
        eager_reference=True,
        KERAS_BACKEND="tensorflow",
    )

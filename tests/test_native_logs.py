import os
import subprocess
import sys

from backend_utils import backend_independent

pytestmark = backend_independent

RECIPES = os.path.join(os.path.dirname(__file__), os.pardir, "recipes")
SCRIPT = r"""
import os, sys, warnings
sys.path.insert(0, sys.argv[1])
import native_logs
native_logs.filter_native_logs()
for line in (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796172178.498986    2194 port.cc:153] oneDNN custom operations are on.",
    b"W0000 00:00:1796172178.498986    2194 graph.cc:20] type inference failed.",
    b"E0000 00:00:1796172190.079021    2194 cuda_platform.cc:52] failed call to cuInit: x",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild "
    b"TensorFlow with the appropriate compiler flags.",
    b"E0000 00:00:1796172190.079021    2194 bfc_allocator.cc:52] Out of memory",
):
    os.write(2, line + b"\n")
warnings.warn("a Python warning")
print("the progress bar")
raise ValueError("the traceback")
"""


def run_filtered():
    env = {k: v for k, v in os.environ.items() if k != "KERAS_TRIPS_NATIVE_LOGS"}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, RECIPES],
        capture_output=True,
        env=env,
        timeout=60,
    )


def test_native_start_up_notes_are_dropped_and_the_rest_passes():
    result = run_filtered()
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert result.stdout.decode() == "the progress bar\n"
    for dropped in ("InitializeLog", "oneDNN", "type inference", "cuInit", "AVX2"):
        assert dropped not in stderr
    # A real C++ error, a Python warning and the traceback all reach the
    # console, in order.
    kept = ["Out of memory", "a Python warning", "ValueError: the traceback"]
    positions = [stderr.index(text) for text in kept]
    assert positions == sorted(positions)

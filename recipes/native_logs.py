"""Keeps the C++ start-up notes of TensorFlow and XLA off the console."""

import atexit
import os
import re
import sys
import threading

# absl's line prefix after the severity letter: date, time, thread,
# file:line.
_PREFIX = rb"\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] "
NATIVE_NOISE = re.compile(
    b"^(?:"
    + b"|".join(
        [
            # Information and warnings (CPU features, oneDNN, CUDA stubs, XLA).
            b"[IW]" + _PREFIX,
            # Errors that only say there is no GPU or no AVX-512 kernel.
            b"E" + _PREFIX + rb"(?:failed call to cuInit|oneDNN supports)",
            rb"WARNING: All log messages before absl::InitializeLog\(\) is called",
            rb"To enable the following instructions: .* compiler flags\.",
        ]
    )
    + b")"
)
_installed = []


def filter_native_logs():
    """Routes file descriptor 2 through a filter that drops the start-up
    notes TensorFlow and XLA write from C++ (absl's `I0000 ... port.cc:153]`
    lines, a failed `cuInit` on a machine without a GPU), which
    `TF_CPP_MIN_LOG_LEVEL` no longer silences in TensorFlow 2.21. Everything
    else written to stderr (Python warnings, tracebacks, other C++ errors)
    passes. Call it first thing in a recipe, before TensorFlow loads;
    `KERAS_TRIPS_NATIVE_LOGS=1` keeps every line.
    """
    if _installed or os.environ.get("KERAS_TRIPS_NATIVE_LOGS"):
        return
    # TensorFlow's own switch still hides its later C++ warnings (tf.data
    # type inference) once its logging is set up.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    console = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not NATIVE_NOISE.match(line):
                    os.write(console, line)

    thread = threading.Thread(target=pump, name="native-log-filter", daemon=True)
    thread.start()

    def restore():
        # Closing the pipe's last write end lets the filter drain and stop;
        # an uncaught exception's traceback, printed before this runs, passes.
        sys.stderr.flush()
        os.dup2(console, 2)
        thread.join(timeout=5)

    atexit.register(restore)
    _installed.append(thread)

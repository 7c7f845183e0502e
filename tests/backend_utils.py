"""Test helpers that need the backend itself (library code never does)."""

import keras
import numpy as np
import pytest

# The test matrix runs some tests under one backend only: the one that runs
# them fastest (no graph tracing, no compiling of a tiny model).
ONCE_BACKEND = "torch"
# Tests of numpy or tf.data code, which no backend changes.
backend_independent = pytest.mark.skipif(
    keras.backend.backend() != ONCE_BACKEND,
    reason=f"backend-independent: runs once, under {ONCE_BACKEND}",
)
# Tests that run a recipe or tool end to end. The recipes are thin fronts
# over the library, whose layers, models, `fit`, saving and export the
# matrix tests under every backend; what each backend does differently
# (resuming, data parallelism) has its own test under each.
end_to_end = pytest.mark.skipif(
    keras.backend.backend() != ONCE_BACKEND,
    reason=f"end to end through a recipe or tool: runs once, under {ONCE_BACKEND}",
)
# Tests of the converters against a transformers (PyTorch) model. The
# converters map weights with numpy; the layers they fill are checked against
# numpy and keras-hub references under every backend.
transformers_reference = pytest.mark.skipif(
    keras.backend.backend() != ONCE_BACKEND,
    reason=f"against transformers: runs once, under {ONCE_BACKEND}",
)


def configure_tensorflow_for_tests():
    """Turns Grappler off in this process (call before the first trace)."""
    import tensorflow as tf

    # Grappler rewrites each traced graph before its first run (2 s for the
    # micro pre-trainer's step), which pays off over long runs, not over a
    # test's few steps.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def gradient(fn, x):
    """d sum(fn(x)) / dx as numpy, on the current backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: fn(v).sum())(x))
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(fn(x))
        grad = tape.gradient(y, x)
        # TensorFlow says None where the output does not depend on x.
        return (
            np.zeros(x.shape, x.dtype.as_numpy_dtype) if grad is None else grad.numpy()
        )
    import torch

    x = torch.tensor(x, requires_grad=True)
    y = fn(x).sum()
    if not y.requires_grad:
        return np.zeros(x.shape, "float32")
    y.backward()
    return x.grad.numpy()

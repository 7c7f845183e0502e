"""Throughput measurement of vision encoders through Keras' compiled paths.

Every model is measured the same way on every backend: a functional
`keras.Model` (the encoder plus a small classification head on the [CLS]
token), compiled with `model.compile(..., jit_compile=...)`, timed through
`predict_on_batch` (forward) and `train_on_batch` (forward, backward and an
AdamW update). Both return host values, so each timed call includes the
device synchronisation.

The first call of each compiled function is reported apart (compile time,
which includes that call's run); the steady state is the median over timed
calls after warm-up. Calls of the models being compared are interleaved
(A B C A B C ...) so that changing machine load affects them all alike, and
speedups are medians of the per-round time ratios.
"""

import statistics
import time

import keras
import numpy as np


def classifier(encoder, inputs, num_classes=10, name=None):
    """Wraps `encoder` in a functional model with a linear head on token 0.

    Args:
        encoder: a layer or model returning `(B, T, D)` tokens.
        inputs: a `keras.Input`, or a dict of them, passed to `encoder`.
        num_classes: width of the head.
        name: the model's name.
    """
    tokens = encoder(inputs)
    logits = keras.layers.Dense(num_classes, name="head")(tokens[:, 0])
    return keras.Model(inputs, logits, name=name)


def compile_classifier(model, jit_compile=True):
    """Compiles `model` with AdamW and a sparse cross-entropy on logits."""
    model.compile(
        optimizer="adamw",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def timed(fn):
    """Runs `fn()` once; returns its wall time in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_timings(functions, steps, warmup=1):
    """Times several functions in interleaved rounds.

    Args:
        functions: dict name -> zero-argument callable (it must block until
            its result is ready, e.g. return host values).
        steps: number of timed rounds.
        warmup: untimed rounds after the first (compiling) call.

    Returns:
        dict name -> `{"first_call_s": float, "times_s": [steps floats]}`.
    """
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1. Received: {steps}")
    results = {
        name: {"first_call_s": timed(fn), "times_s": []}
        for name, fn in functions.items()
    }
    for _ in range(warmup):
        for fn in functions.values():
            fn()
    for _ in range(steps):
        for name, fn in functions.items():
            results[name]["times_s"].append(timed(fn))
    return results


def summarize(times_s, batch_size):
    """Median step time (ms) and throughput (images/s) of a list of times."""
    median_s = statistics.median(times_s)
    return {
        "median_ms": 1000.0 * median_s,
        "min_ms": 1000.0 * min(times_s),
        "images_per_s": batch_size / median_s,
        "times_ms": [1000.0 * t for t in times_s],
    }


def paired_speedup(reference_times_s, times_s):
    """Median over rounds of reference_time / time (rounds paired in order)."""
    return statistics.median(r / t for r, t in zip(reference_times_s, times_s))


def random_batch(image_shape, batch_size, text_dim=None, num_classes=10, seed=0):
    """Random images in [0, 1), an optional text embedding, integer labels."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch_size, *image_shape), dtype=np.float32)
    labels = rng.integers(0, num_classes, (batch_size,)).astype("int32")
    text = None
    if text_dim is not None:
        text = rng.standard_normal((batch_size, text_dim), dtype=np.float32)
    return images, text, labels

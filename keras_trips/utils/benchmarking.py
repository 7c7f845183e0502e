"""Throughput measurement through Keras' compiled paths.

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

`benchmark_pretraining_step` does the same for whole `TRIPSPretrainer`
training steps, beside their analytic FLOPs.
"""

import statistics
import time

import keras
import numpy as np

from keras_trips.utils.flops import pretraining_step_breakdown


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


def interleaved_timings(functions, steps, warmup=1, alternate=False):
    """Times several functions in interleaved rounds.

    Args:
        functions: dict name -> zero-argument callable (it must block until
            its result is ready, e.g. return host values).
        steps: number of timed rounds.
        warmup: untimed rounds after the first (compiling) call.
        alternate: whether every other round runs the functions in reverse
            order (A B C C B A ...), so that no function always follows the
            same one: on eager backends a call pays for the memory that the
            previous one returned to the system.

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
    names = list(functions)
    for step in range(steps):
        order = names[::-1] if alternate and step % 2 else names
        for name in order:
            results[name]["times_s"].append(timed(functions[name]))
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


def timing_summary(timing, reference_times_s, batch_size, predicted_speedup=None):
    """`summarize` of one model's `interleaved_timings` entry, with its
    compile time and its speedup over the reference (and over the predicted
    speedup, when given)."""
    entry = summarize(timing["times_s"], batch_size)
    entry["compile_s"] = timing["first_call_s"]
    entry["measured_speedup"] = paired_speedup(reference_times_s, timing["times_s"])
    if predicted_speedup is not None:
        entry["measured_over_predicted"] = entry["measured_speedup"] / predicted_speedup
    return entry


def random_batch(image_shape, batch_size, text_dim=None, num_classes=10, seed=0):
    """Random images in [0, 1), an optional text embedding, integer labels."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch_size, *image_shape), dtype=np.float32)
    labels = rng.integers(0, num_classes, (batch_size,)).astype("int32")
    text = None
    if text_dim is not None:
        text = rng.standard_normal((batch_size, text_dim), dtype=np.float32)
    return images, text, labels


def random_pretraining_batch(
    batch_size,
    image_shape,
    text_length,
    vocabulary_size,
    num_masked,
    mask_rate=0.15,
    seed=0,
):
    """A random batch in the `keras_trips.data` pre-training format.

    Captions of random lengths between half and all of `text_length` (the
    rest padding), each starting with a [CLS]-like id 1. `round(mask_rate *
    length)` (at least 1, at most `num_masked`) random positions of each are
    replaced by the mask id 3 in `masked_token_ids` and listed in the `num_masked` prediction
    slots; the remaining slots are padding (position 0, id 0, weight 0), as
    `TRIPSTextPreprocessor` writes them.
    """
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(5, vocabulary_size, (batch_size, text_length))
    token_ids = token_ids.astype("int32")
    token_ids[:, 0] = 1
    lengths = rng.integers(text_length // 2, text_length + 1, batch_size)
    lengths = np.maximum(lengths, 2)
    padding_mask = np.arange(text_length)[None, :] < lengths[:, None]
    token_ids[~padding_mask] = 0
    mask_positions = np.zeros((batch_size, num_masked), "int32")
    mask_weights = np.zeros((batch_size, num_masked), "float32")
    for row, length in enumerate(lengths):
        count = min(num_masked, max(1, round(mask_rate * length)))
        positions = np.sort(rng.choice(np.arange(1, length), count, replace=False))
        mask_positions[row, :count] = positions
        mask_weights[row, :count] = 1.0
    mask_ids = np.take_along_axis(token_ids, mask_positions, axis=1)
    mask_ids = np.where(mask_weights > 0, mask_ids, 0).astype("int32")
    masked = token_ids.copy()
    rows = np.arange(batch_size)[:, None]
    masked[rows, mask_positions] = np.where(
        mask_weights > 0, 3, masked[rows, mask_positions]
    )
    return {
        "images": rng.random((batch_size, *image_shape), dtype=np.float32),
        "token_ids": token_ids,
        "padding_mask": padding_mask.astype("int32"),
        "masked_token_ids": masked,
        "mask_positions": mask_positions,
        "mask_ids": mask_ids,
        "mask_weights": mask_weights,
    }


def benchmark_pretraining_step(pretrainers, batch, steps, warmup=1, reference=None):
    """Times compiled `TRIPSPretrainer` training steps beside their FLOPs.

    Each step is `train_on_batch(batch)`: forward, backward, the optimizer
    update and, with the momentum model, its forward pass, EMA update and
    queues. Steps of the pretrainers are interleaved (see
    `interleaved_timings`).

    Args:
        pretrainers: dict name -> compiled `TRIPSPretrainer`.
        batch: a pre-training batch (see `random_pretraining_batch`).
        steps: int. Timed rounds.
        warmup: int. Untimed rounds after the first (compiling) call.
        reference: name of the pretrainer the speedups are relative to
            (default: the first).

    Returns:
        dict name -> the analytic FLOPs of the step (total, by part, and the
        speedup they predict), the vision encoder's token counts and the
        `"train"` timings (`timing_summary`).
    """
    reference = next(iter(pretrainers)) if reference is None else reference
    batch_size, text_length = batch["token_ids"].shape
    num_masked = batch["mask_positions"].shape[1]
    results = {}
    for name, pretrainer in pretrainers.items():
        parts = pretraining_step_breakdown(
            pretrainer, batch_size, text_length, num_masked
        )
        total = sum(parts.values())
        results[name] = {
            "flops_per_step": total,
            "gflops_per_step": total / 1e9,
            "gflops_by_part": {part: flops / 1e9 for part, flops in parts.items()},
            "sequence_lengths": pretrainer.backbone.vision_encoder.sequence_lengths(),
            "trainable_parameters": sum(
                int(np.prod(w.shape)) for w in pretrainer.trainable_weights
            ),
        }
    for result in results.values():
        result["predicted_speedup"] = (
            results[reference]["flops_per_step"] / result["flops_per_step"]
        )
    timings = interleaved_timings(
        {
            name: (lambda p=pretrainer: p.train_on_batch(batch))
            for name, pretrainer in pretrainers.items()
        },
        steps=steps,
        warmup=warmup,
    )
    reference_times = timings[reference]["times_s"]
    for name, timing in timings.items():
        results[name]["train"] = timing_summary(
            timing, reference_times, batch_size, results[name]["predicted_speedup"]
        )
    return results

"""`tools/benchmark.py --task torch`: our encoder beside a plain PyTorch ViT.

Under `KERAS_BACKEND=torch`, times `TRIPSVisionEncoder` without selection and
with text-guided selection at `--selection-layers` (keep 0.7 and 0.5) against
`torch_reference.VisionTransformer`, a plain PyTorch ViT written the way timm
writes it, holding the same weights (the outputs are compared before
anything is timed). Two modes, eager:

- inference: one forward pass under `torch.inference_mode()`;
- train: one training step, the same for every model: a linear head on the
  [CLS] token, cross-entropy, backward, and `torch.optim.AdamW`.

Each model runs in a process of its own, as a user's model does: in one
process the models' buffers share glibc's heap, and the holes that one
model's calls leave decide whether the other's large buffers are reused or
mapped afresh (page faults). The processes take turns, every other round in
reverse order (reference, ours, ours at 0.7, ours at 0.5, then ours at 0.5,
ours at 0.7, ours, reference, ...), so that changing machine load reaches
them alike, and each ratio is the median of the per-round ratios. With
`--jit-compile true` it times instead our plain encoder's inference through
Keras' `predict_on_batch`, eager and with `jit_compile=True` (torch.compile
with inductor), against the reference, with the compile time (the first
call), all in this process.
"""

import contextlib
import functools
import multiprocessing
import os
import resource
import statistics

import keras
import numpy as np
import torch
import torch.nn.functional as F
from torch_reference import from_trips_encoder

from keras_trips.models import TRIPSVisionEncoder
from keras_trips.utils import benchmarking
from keras_trips.utils.flops import vision_encoder_flops

REFERENCE = "pytorch"
PLAIN = "none"
KEEP_RATES = {"keep0.7": 0.7, "keep0.5": 0.5}
NUM_CLASSES = 10
# Largest difference allowed between our outputs and the reference's.
TOLERANCE = 1e-4


def randomized(encoder, seed=0):
    """Perturbs every trainable weight (biases and LayerNorm parameters
    included), so that the output comparison catches any misplaced tensor."""
    rng = np.random.default_rng(seed)
    for variable in encoder.trainable_variables:
        noise = rng.normal(scale=0.02, size=variable.shape).astype("float32")
        variable.assign(keras.ops.convert_to_numpy(variable) + noise)
    return encoder


def build_models(args, architecture):
    """Our plain encoder, one selecting encoder (its keep rate set per call)
    and the reference, all with the same weights, and the batch."""
    image_shape = (args.image_size, args.image_size, 3)
    keras.utils.set_random_seed(0)
    plain = randomized(
        TRIPSVisionEncoder(image_shape, selection_layers=(), **architecture)
    )
    selecting = TRIPSVisionEncoder(
        image_shape,
        selection_layers=args.selection_layers,
        keep_rate=min(KEEP_RATES.values()),
        guidance="text",
        **architecture,
    )
    selecting.set_weights(plain.get_weights())
    reference = from_trips_encoder(plain)
    images, text, labels = benchmarking.random_batch(
        image_shape, args.batch_size, architecture["hidden_dim"], NUM_CLASSES
    )
    batch = {
        "images": torch.from_numpy(images),
        "text_embedding": torch.from_numpy(text),
        # timm's layout; converted once, outside the timed calls.
        "pixels": torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
        "labels": torch.from_numpy(labels).long(),
    }
    return plain, selecting, reference, batch


def check_outputs_match(plain, reference, batch):
    """Raises unless our plain encoder and the reference compute the same."""
    with torch.inference_mode():
        ours = plain(batch["images"], training=False).numpy()
        theirs = reference(batch["pixels"]).numpy()
    difference = float(np.abs(ours - theirs).max())
    if not np.allclose(ours, theirs, atol=TOLERANCE, rtol=TOLERANCE):
        raise AssertionError(
            f"The reference ViT's output differs from ours by up to {difference}: "
            "it would not time the same function."
        )
    return difference


def model_calls(plain, selecting, reference, batch):
    """name -> `(forward(training), trainable parameters)`, where
    `forward(training)` returns the encoder's tokens on the batch."""
    inputs = {"images": batch["images"], "text_embedding": batch["text_embedding"]}
    calls = {
        REFERENCE: (lambda training: reference(batch["pixels"]), reference),
        PLAIN: (lambda training: plain(inputs, training=training), plain),
    }
    for name, rate in KEEP_RATES.items():
        calls[name] = (
            lambda training, rate=rate: selecting(
                inputs, keep_rate=rate, training=training
            ),
            selecting,
        )
    return calls


def parameters(model):
    if isinstance(model, keras.Model):
        return [variable.value for variable in model.trainable_variables]
    return list(model.parameters())


def training_step(forward, model, labels, width):
    """One step of a linear head on the [CLS] token, cross-entropy and AdamW."""
    torch.manual_seed(0)
    head = torch.nn.Linear(width, NUM_CLASSES)
    optimizer = torch.optim.AdamW(parameters(model) + list(head.parameters()), 1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        tokens = forward(True)
        loss = F.cross_entropy(head(tokens[:, 0]), labels)
        loss.backward()
        optimizer.step()

    return step


def inference(forward):
    def call():
        with torch.inference_mode():
            forward(False)

    return call


def minor_page_faults():
    """This process's minor page faults so far: fresh memory that the kernel
    maps and zero-fills, a cost that depends on how the allocator reuses
    freed blocks."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def serve_model(args, architecture, name, connection):
    """A model process: builds the models as `build_models` does (the same
    weights and batch in every process), then runs `name`'s step for each
    mode it receives and answers with the step's minor page faults."""
    plain, selecting, reference, batch = build_models(args, architecture)
    forward, model = model_calls(plain, selecting, reference, batch)[name]
    steps = {"inference": inference(forward)}
    if not args.skip_train:
        steps["train"] = training_step(
            forward, model, batch["labels"], plain.hidden_dim
        )
    connection.send("ready")
    for mode in iter(connection.recv, None):
        before = minor_page_faults()
        steps[mode]()
        connection.send(minor_page_faults() - before)


@contextlib.contextmanager
def model_processes(args, architecture, names):
    """Starts a `serve_model` process per name; yields name -> `step(mode)`,
    which runs that model's step in its process and returns the step's page
    faults."""
    # Spawned, not forked: a fork would start from this process's heap.
    context = multiprocessing.get_context("spawn")
    connections, processes = {}, []
    try:
        for name in names:
            connection, child_connection = context.Pipe()
            process = context.Process(
                target=serve_model,
                args=(args, architecture, name, child_connection),
                name=f"benchmark-{name}",
                daemon=True,
            )
            process.start()
            # Only the child holds its end now, so its exit reads as EOF here.
            child_connection.close()
            connections[name] = connection
            processes.append(process)
        for name, connection in connections.items():
            _answer(connection, name)
        yield {
            name: functools.partial(_run_step, connection, name)
            for name, connection in connections.items()
        }
    finally:
        for connection in connections.values():
            with contextlib.suppress(OSError):
                connection.send(None)
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()


def _run_step(connection, name, mode):
    connection.send(mode)
    return _answer(connection, name)


def _answer(connection, name):
    try:
        return connection.recv()
    except EOFError:
        raise RuntimeError(
            f"The process running {name!r} stopped; its traceback is above."
        ) from None


def predicted_speedups(plain, selecting):
    """name -> FLOPs-predicted speedup over the plain ViT, and the FLOPs."""
    plain_flops = vision_encoder_flops(plain)
    flops = {REFERENCE: plain_flops, PLAIN: plain_flops}
    for name, rate in KEEP_RATES.items():
        flops[name] = vision_encoder_flops(selecting, keep_rate=rate, text_guided=True)
    return {name: (plain_flops / value, value) for name, value in flops.items()}


def run(args, architecture):
    """Times the models; returns the `results` part of the report."""
    plain, selecting, reference, batch = build_models(args, architecture)
    difference = check_outputs_match(plain, reference, batch)
    if args.jit_compile == "true":
        results = compiled_inference(args, plain, reference, batch)
    else:
        results = eager_comparison(args, architecture, plain, selecting)
    return {
        "max_abs_difference_from_reference": difference,
        "torch_threads": torch.get_num_threads(),
        "allocator_environment": allocator_environment(),
        "results": results,
    }


def eager_comparison(args, architecture, plain, selecting):
    """Inference and training steps of ours and the reference, eagerly, each
    model in a process of its own (`model_processes`)."""
    results = {
        name: {"predicted_speedup": speedup, "gflops_per_image": flops / 1e9}
        for name, (speedup, flops) in predicted_speedups(plain, selecting).items()
    }
    modes = ["inference"] + ([] if args.skip_train else ["train"])
    with model_processes(args, architecture, list(results)) as steps:
        for mode in modes:
            print(f"[torch] timing {mode}: {', '.join(steps)}, taking turns ...")
            faults = {name: [] for name in steps}
            timings = benchmarking.interleaved_timings(
                {
                    name: functools.partial(_faults_of, step, mode, faults[name])
                    for name, step in steps.items()
                },
                steps=args.steps,
                warmup=args.warmup,
                alternate=True,
            )
            reference_times = timings[REFERENCE]["times_s"]
            for name, timing in timings.items():
                entry = benchmarking.timing_summary(
                    timing,
                    reference_times,
                    args.batch_size,
                    results[name]["predicted_speedup"],
                )
                # The target for our plain encoder: time(ours) / time(reference).
                entry["time_over_reference"] = 1.0 / entry["measured_speedup"]
                entry["median_page_faults"] = statistics.median(
                    faults[name][-args.steps :]
                )
                results[name][mode] = entry
    return results


def _faults_of(step, mode, faults):
    faults.append(step(mode))


def compiled_inference(args, plain, reference, batch):
    """Our plain encoder through `predict_on_batch`, eager and compiled
    (`jit_compile=True`: torch.compile with inductor), against the reference
    timed in the same rounds."""
    eager = plain
    compiled = TRIPSVisionEncoder.from_config(plain.get_config())
    compiled.set_weights(plain.get_weights())
    eager.compile(jit_compile=False)
    compiled.compile(jit_compile=True)
    images = batch["images"].numpy()

    def reference_call():
        with torch.inference_mode():
            reference(batch["pixels"])

    functions = {
        REFERENCE: reference_call,
        "predict (eager)": lambda: eager.predict_on_batch(images),
        "predict (jit_compile)": lambda: compiled.predict_on_batch(images),
    }
    print("[torch] timing predict_on_batch, eager and jit_compile=True ...")
    timings = benchmarking.interleaved_timings(
        functions, steps=args.steps, warmup=args.warmup, alternate=True
    )
    results = {}
    for name, timing in timings.items():
        if name == REFERENCE:
            continue
        entry = benchmarking.timing_summary(
            timing, timings[REFERENCE]["times_s"], args.batch_size
        )
        entry["time_over_reference"] = 1.0 / entry.pop("measured_speedup")
        results[name] = {"inference": entry}
    eager_times = timings["predict (eager)"]["times_s"]
    results["predict (jit_compile)"]["inference"]["speedup_over_eager"] = (
        benchmarking.paired_speedup(
            eager_times, timings["predict (jit_compile)"]["times_s"]
        )
    )
    return results


def format_table(report):
    lines = [
        f"backend=torch (eager; {report['torch_threads']} threads), batch "
        f"{report['batch_size']}, {report['steps']} interleaved rounds, "
        f"{report['architecture']}, load average "
        f"{report['machine']['load_average_before']} -> "
        f"{report['machine']['load_average_after']}",
        f"outputs: ours - reference at most "
        f"{report['max_abs_difference_from_reference']:.2e}",
        "allocator: "
        + (
            " ".join(f"{k}={v}" for k, v in report["allocator_environment"].items())
            or "glibc malloc defaults (README: the page faults)"
        ),
        "time/ref: time over the reference's (target for none: <= 1.05); "
        "ref/time: the reference's time over ours; pred x: FLOPs-predicted "
        "speedup; meas/pred: (ref/time) / (pred x) (target for selection: >= 0.90); "
        "faults: minor page faults per call (median)",
    ]
    header = (
        f"{'config':<22} {'mode':<9} {'ms/batch':>9} {'compile s':>9} "
        f"{'GFLOPs':>7} {'pred x':>7} {'time/ref':>8} {'ref/time':>8} "
        f"{'meas/pred':>9} {'faults':>7}"
    )
    lines += [header, "-" * len(header)]
    for name, result in report["results"].items():
        for mode in ("inference", "train"):
            entry = result.get(mode)
            if entry is None:
                continue
            ratio = entry.get("measured_over_predicted")
            predicted = result.get("predicted_speedup")
            lines.append(
                f"{name:<22} {mode:<9} {entry['median_ms']:>9.1f} "
                f"{entry['compile_s']:>9.1f} "
                f"{_optional(result.get('gflops_per_image'), 7, '.2f')} "
                f"{_optional(predicted, 7, '.3f')} "
                f"{entry['time_over_reference']:>8.3f} "
                f"{1.0 / entry['time_over_reference']:>8.3f} "
                f"{_optional(ratio, 9, '.3f')} "
                f"{_optional(entry.get('median_page_faults'), 7, '.0f')}"
            )
    speedup = (
        report["results"].get("predict (jit_compile)", {}).get("inference", {})
    ).get("speedup_over_eager")
    if speedup is not None:
        lines.append(f"jit_compile=True over eager predict_on_batch: {speedup:.3f}x")
    return "\n".join(lines)


def _optional(value, width, spec):
    return f"{'' if value is None else format(value, spec):>{width}}"


def allocator_environment():
    """The glibc malloc settings of the run, which move the page faults."""
    return {
        name: os.environ[name]
        for name in sorted(os.environ)
        if name.startswith("MALLOC_")
    }

"""TRIPS throughput: patch selection vs. none, measured beside analytic FLOPs.

`--task vision` (the default) times forward (`predict_on_batch`) and train
steps (`train_on_batch`, AdamW) of `TRIPSVisionEncoder` at ViT-B/16 with no
selection and with text-guided selection, and keras-hub's `ViTBackbone` of
the same size. `--task pretraining` times the whole pre-training step of the
"base" `TRIPSPretrainer` (ViT-B/16 + BERT-base 6+6; ITC, ITM with hard
negatives, MLM, momentum model and queues; forward, backward and AdamW
update). `--task keras_hub` times keras-hub's own CLIP and SigLIP ViT-B/16
vision encoders against `with_patch_selection` of them at keep rates 1.0,
0.7 and 0.5, forward (`keras_trips.utils.keras_hub_benchmark`). `--task
torch` (torch backend only) times the vision encoder beside a plain PyTorch
ViT holding the same weights (`tools/benchmark_torch.py`). All run on the
current Keras backend and compare the measured speedups with the
FLOPs-predicted ones.

    KERAS_BACKEND=jax python tools/benchmark.py
    KERAS_BACKEND=torch python tools/benchmark.py --steps 3 --skip-train
    KERAS_BACKEND=jax python tools/benchmark.py --task pretraining --steps 3
    KERAS_BACKEND=torch python tools/benchmark.py --task torch --steps 9
    python tools/benchmark.py --tiny --steps 1   # smoke test
    python tools/benchmark.py --task pretraining --tiny --steps 1
    KERAS_BACKEND=jax python tools/benchmark.py --task keras_hub --steps 3
"""

import argparse
import json
import math
import os
import platform
import sys

# The recipes' filter keeps TensorFlow's C++ start-up notes off the console,
# the torch task's model processes' included (they write to this stderr).
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes")
)
import native_logs

if __name__ == "__main__":  # not in the tests, which import this file
    native_logs.filter_native_logs()

import keras

from keras_trips.models import TRIPSBackbone, TRIPSPretrainer, TRIPSVisionEncoder
from keras_trips.utils import benchmarking, keras_hub_benchmark, xla
from keras_trips.utils.flops import vision_encoder_flops

TASKS = ("vision", "pretraining", "keras_hub", "torch")
# name -> keep rate at the selection layers (None: no selection).
TRIPS_CONFIGS = {"none": None, "keep0.7": 0.7, "keep0.5": 0.5}
KERAS_HUB = "keras_hub"
ALL_CONFIGS = (*TRIPS_CONFIGS, KERAS_HUB)
REFERENCE = "none"

VIT_B16 = dict(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072)
TINY = dict(patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
# --task pretraining --tiny: the "micro" preset (TINY's vision tower, one text
# and one fusion layer) on a 100-word vocabulary; selection set per config.
TINY_BACKBONE = {
    key: value
    for key, value in TRIPSBackbone.presets["micro"].items()
    if key not in ("selection_layers", "keep_rate", "dropout")
} | {"vocabulary_size": 100}
TINY_EMBEDDING_DIM = 16


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="vision",
        help="vision: the vision encoder alone; pretraining: the whole "
        "TRIPSPretrainer training step of the base model; keras_hub: keras-hub's "
        "CLIP and SigLIP vision encoders with and without selection (forward); "
        "torch: the vision encoder beside a plain PyTorch ViT (KERAS_BACKEND=torch)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument("--image-size", type=int, default=None, help="224 (32 tiny)")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="32 px, patch 8, 2 layers, 2 heads, width 32, MLP 64, selection at "
        "(0, 1); pretraining: plus 1 text and 1 fusion layer, vocabulary 100",
    )
    parser.add_argument(
        "--selection-layers",
        type=lambda s: tuple(int(i) for i in s.split(",")),
        default=None,
        help="0-based blocks that select, e.g. 4,9 (the default; 0,1 with --tiny)",
    )
    parser.add_argument(
        "--configs",
        default=None,
        help=f"comma-separated subset of {','.join(ALL_CONFIGS)} (pretraining: "
        f"of {','.join(TRIPS_CONFIGS)}; '{REFERENCE}' is always run: it is the "
        "reference)",
    )
    parser.add_argument("--skip-train", action="store_true", help="vision only")
    parser.add_argument(
        "--text-length",
        type=int,
        default=None,
        help="pretraining: padded caption length, 30 as the recipes (8 tiny)",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=None,
        help="pretraining: ITC feature queue length, 1024 (16 tiny)",
    )
    parser.add_argument(
        "--jit-compile",
        choices=("auto", "true", "false"),
        default="auto",
        help="auto: XLA on jax/tensorflow (under tensorflow with XLA:CPU's fusion "
        "emitters off, see keras_trips.utils.xla); eager on torch (torch.compile "
        "on CPU takes minutes per model and breaks the graph on Keras internals)",
    )
    parser.add_argument(
        "--output", default=None, help="benchmarks/<task>_<backend>.json"
    )
    args = parser.parse_args(argv)
    if args.task == "torch" and args.configs:
        parser.error("--task torch times every configuration; drop --configs")
    known = ALL_CONFIGS if args.task == "vision" else tuple(TRIPS_CONFIGS)
    configs = args.configs.split(",") if args.configs else known
    configs = [c.strip() for c in configs if c.strip()]
    unknown = sorted(set(configs) - set(known))
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {list(known)}")
    args.configs = [c for c in known if c in configs or c == REFERENCE]
    if args.task == "pretraining" and args.skip_train:
        parser.error("--skip-train: the pre-training benchmark times train steps")
    if args.task != "pretraining" and (args.text_length or args.queue_size):
        parser.error("--text-length and --queue-size are for --task pretraining")
    if args.task == "torch" and keras.backend.backend() != "torch":
        parser.error("--task torch compares torch models: run with KERAS_BACKEND=torch")
    if args.image_size is None:
        args.image_size = 32 if args.tiny else 224
    if args.selection_layers is None:
        args.selection_layers = (0, 1) if args.tiny else (4, 9)
    if args.text_length is None:
        args.text_length = 8 if args.tiny else 30
    if args.queue_size is None:
        args.queue_size = 16 if args.tiny else 1024
    if args.output is None:
        args.output = os.path.join(
            "benchmarks", f"{args.task}_{keras.backend.backend()}.json"
        )
    return args


def jit_compile_setting(choice):
    if choice == "auto":
        return keras.backend.backend() != "torch"
    return choice == "true"


def build_models(args, architecture):
    """name -> (compiled model, inputs, FLOPs per image, sequence lengths)."""
    image_shape = (args.image_size, args.image_size, 3)
    width = architecture["hidden_dim"]
    images, text, labels = benchmarking.random_batch(
        image_shape, args.batch_size, width
    )
    jit_compile = jit_compile_setting(args.jit_compile)
    models = {}
    for name in args.configs:
        if name == KERAS_HUB:
            import keras_hub

            backbone = keras_hub.models.ViTBackbone(
                image_shape=image_shape, **architecture
            )
            inputs = keras.Input(image_shape, name="images")
            model = benchmarking.classifier(backbone, inputs, name=name)
            data = images
            # Same architecture as our encoder without selection.
            encoder = TRIPSVisionEncoder(
                image_shape, selection_layers=(), **architecture
            )
            flops = vision_encoder_flops(encoder)
        else:
            keep_rate = TRIPS_CONFIGS[name]
            encoder = TRIPSVisionEncoder(
                image_shape,
                selection_layers=() if keep_rate is None else args.selection_layers,
                keep_rate=1.0 if keep_rate is None else keep_rate,
                guidance="text",
                **architecture,
            )
            inputs = {
                "images": keras.Input(image_shape, name="images"),
                "text_embedding": keras.Input((width,), name="text_embedding"),
            }
            model = benchmarking.classifier(
                encoder, inputs, name=name.replace(".", "_")
            )
            data = {"images": images, "text_embedding": text}
            flops = vision_encoder_flops(encoder, text_guided=True)
        benchmarking.compile_classifier(model, jit_compile=jit_compile)
        models[name] = {
            "model": model,
            "data": data,
            "labels": labels,
            "flops": flops,
            "sequence_lengths": encoder.sequence_lengths(),
            "parameters": model.count_params(),
        }
    return models, jit_compile


def run(args):
    backend = keras.backend.backend()
    load_before = os.getloadavg()
    architecture = dict(TINY if args.tiny else VIT_B16)
    models, jit_compile = build_models(args, architecture)

    modes = {
        "forward": lambda m: lambda: m["model"].predict_on_batch(m["data"]),
    }
    if not args.skip_train:
        modes["train"] = lambda m: (
            lambda: m["model"].train_on_batch(m["data"], m["labels"])
        )

    results = {
        name: {
            "flops_per_image": m["flops"],
            "gflops_per_image": m["flops"] / 1e9,
            "sequence_lengths": m["sequence_lengths"],
            "parameters": m["parameters"],
        }
        for name, m in models.items()
    }
    reference_flops = models[REFERENCE]["flops"]
    for result in results.values():
        result["predicted_speedup"] = reference_flops / result["flops_per_image"]

    for mode, make_fn in modes.items():
        print(
            f"[{backend}] timing {mode}: {', '.join(models)} interleaved ...",
            flush=True,
        )
        timings = benchmarking.interleaved_timings(
            {name: make_fn(m) for name, m in models.items()},
            steps=args.steps,
            warmup=args.warmup,
        )
        reference_times = timings[REFERENCE]["times_s"]
        for name, timing in timings.items():
            if name == KERAS_HUB:
                entry = benchmarking.timing_summary(
                    timing, reference_times, args.batch_size
                )
                # time(ours, no selection) / time(keras-hub); target <= 1.05.
                entry["ours_over_keras_hub"] = entry.pop("measured_speedup")
            else:
                entry = benchmarking.timing_summary(
                    timing,
                    reference_times,
                    args.batch_size,
                    results[name]["predicted_speedup"],
                )
            results[name][mode] = entry

    return {
        **environment(args, jit_compile, load_before),
        "architecture": {"image_size": args.image_size, **architecture},
        "selection_layers": list(args.selection_layers),
        "guidance": "text (random text_embedding)",
        "notes": (
            "median of interleaved rounds; compile_s is the first call (compile "
            "plus one run); speedups are medians of per-round time ratios against "
            f"'{REFERENCE}'; FLOPs are analytic forward FLOPs per image"
        ),
        "results": results,
    }


def environment(args, jit_compile, load_before):
    """What every report records: backend, compilation, run sizes, machine."""
    backend = keras.backend.backend()
    return {
        "task": args.task,
        "backend": backend,
        "keras_version": keras.__version__,
        "jit_compile": jit_compile,
        "compiled_with": compiled_with(backend, jit_compile),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": list(load_before),
            "load_average_after": list(os.getloadavg()),
        },
    }


def load_torch_benchmark():
    """tools/benchmark_torch.py, imported only for `--task torch` (it imports
    torch); tools/ is not a package, so its folder goes on the path."""
    tools = os.path.dirname(os.path.abspath(__file__))
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import benchmark_torch

    return benchmark_torch


def run_torch(args, benchmark_torch):
    load_before = os.getloadavg()
    architecture = dict(TINY if args.tiny else VIT_B16)
    comparison = benchmark_torch.run(args, architecture)
    return {
        **environment(args, False, load_before),
        "architecture": {"image_size": args.image_size, **architecture},
        "selection_layers": list(args.selection_layers),
        "guidance": "text (random text_embedding)",
        "notes": (
            "inference under torch.inference_mode(); train: forward, backward "
            "and torch.optim.AdamW with a linear head on [CLS], the same for "
            "every model; medians of interleaved rounds; ratios are medians of "
            "per-round ratios against the plain PyTorch ViT; FLOPs are analytic "
            "forward FLOPs per image"
        ),
        **comparison,
    }


def build_pretrainers(args, jit_compile):
    """name -> compiled `TRIPSPretrainer` with the momentum model, and the
    backbone configuration they share (but for selection)."""
    preset = TINY_BACKBONE if args.tiny else TRIPSBackbone.presets["base"]
    # Selection comes from the config name and `--selection-layers`.
    config = {
        key: value
        for key, value in preset.items()
        if key not in ("selection_layers", "keep_rate")
    }
    config["image_shape"] = (args.image_size, args.image_size, 3)
    pretrainers = {}
    for name in args.configs:
        keep_rate = TRIPS_CONFIGS[name]
        backbone = TRIPSBackbone(
            **config,
            **(
                dict(selection_layers=(), keep_rate=1.0)
                if keep_rate is None
                else dict(selection_layers=args.selection_layers, keep_rate=keep_rate)
            ),
        )
        pretrainer = TRIPSPretrainer(
            backbone,
            embedding_dim=TINY_EMBEDDING_DIM if args.tiny else 256,
            use_momentum=True,
            queue_size=args.queue_size,
            name=f"pretrainer_{name.replace('.', '_')}",
        )
        pretrainer.compile(jit_compile=jit_compile)
        pretrainers[name] = pretrainer
    return pretrainers, config


def run_pretraining(args):
    load_before = os.getloadavg()
    jit_compile = jit_compile_setting(args.jit_compile)
    pretrainers, config = build_pretrainers(args, jit_compile)
    # As `TRIPSTextPreprocessor` sizes the prediction slots at a 15% rate.
    num_masked = max(1, math.ceil(2 * 0.15 * args.text_length))
    batch = benchmarking.random_pretraining_batch(
        args.batch_size,
        config["image_shape"],
        args.text_length,
        config["vocabulary_size"],
        num_masked,
    )
    print(
        f"[{keras.backend.backend()}] timing pre-training steps: "
        f"{', '.join(pretrainers)} interleaved ...",
        flush=True,
    )
    results = benchmarking.benchmark_pretraining_step(
        pretrainers, batch, args.steps, args.warmup, reference=REFERENCE
    )
    return {
        **environment(args, jit_compile, load_before),
        "architecture": {
            **config,
            "embedding_dim": next(iter(pretrainers.values())).embedding_dim,
            "use_momentum": True,
            "queue_size": args.queue_size,
        },
        "selection_layers": list(args.selection_layers),
        "text_length": args.text_length,
        "num_masked": num_masked,
        "masked_tokens": int(batch["mask_weights"].sum()),
        "notes": (
            "train_on_batch (forward, backward, AdamW update, momentum forward, "
            "EMA and queues) of TRIPSPretrainer; median of interleaved rounds; "
            "compile_s is the first call (compile plus one step); speedups are "
            f"medians of per-round time ratios against '{REFERENCE}'; FLOPs are "
            "analytic matmul FLOPs of the whole step "
            "(keras_trips.utils.flops.pretraining_step_breakdown)"
        ),
        "results": results,
    }


def compiled_with(backend, jit_compile):
    if not jit_compile:
        return "eager"
    return {"jax": "XLA (jax.jit)", "tensorflow": "XLA (tf.function jit_compile)"}.get(
        backend, "torch.compile (inductor)"
    )


def format_table(report):
    lines = [
        f"backend={report['backend']} ({report['compiled_with']}), batch "
        f"{report['batch_size']}, {report['steps']} timed rounds, "
        f"{report['architecture']}",
    ]
    modes = [m for m in ("forward", "train") if m in report["results"][REFERENCE]]
    header = (
        f"{'config':<10} {'mode':<8} {'ms/batch':>9} {'img/s':>8} {'compile s':>9} "
        f"{'GFLOPs':>8} {'pred x':>7} {'meas x':>7} {'meas/pred':>9} {'ours/hub':>8}"
    )
    lines += [header, "-" * len(header)]
    for name, result in report["results"].items():
        for mode in modes:
            entry = result[mode]
            measured = entry.get("measured_speedup")
            ratio = entry.get("measured_over_predicted")
            hub = entry.get("ours_over_keras_hub")
            lines.append(
                f"{name:<10} {mode:<8} {entry['median_ms']:>9.1f} "
                f"{entry['images_per_s']:>8.1f} {entry['compile_s']:>9.1f} "
                f"{result['gflops_per_image']:>8.3f} "
                f"{result['predicted_speedup']:>7.3f} "
                f"{'' if measured is None else f'{measured:.3f}':>7} "
                f"{'' if ratio is None else f'{ratio:.3f}':>9} "
                f"{'' if hub is None else f'{hub:.3f}':>8}"
            )
    return "\n".join(lines)


def format_pretraining_table(report):
    arch = report["architecture"]
    lines = [
        f"backend={report['backend']} ({report['compiled_with']}), batch "
        f"{report['batch_size']}, text {report['text_length']} tokens "
        f"({report['num_masked']} MLM slots), {report['steps']} timed rounds, "
        f"{arch['image_shape'][0]} px, width {arch['hidden_dim']}, "
        f"queue {arch['queue_size']}",
    ]
    header = (
        f"{'config':<10} {'ms/step':>9} {'pairs/s':>8} {'compile s':>9} "
        f"{'GFLOPs':>9} {'pred x':>7} {'meas x':>7} {'meas/pred':>9}"
    )
    lines += [header, "-" * len(header)]
    for name, result in report["results"].items():
        entry = result["train"]
        lines.append(
            f"{name:<10} {entry['median_ms']:>9.1f} {entry['images_per_s']:>8.2f} "
            f"{entry['compile_s']:>9.1f} {result['gflops_per_step']:>9.1f} "
            f"{result['predicted_speedup']:>7.3f} "
            f"{entry['measured_speedup']:>7.3f} "
            f"{entry['measured_over_predicted']:>9.3f}"
        )
    lines.append("GFLOPs per step by part:")
    for name, result in report["results"].items():
        parts = ", ".join(
            f"{part} {gflops:.1f}" for part, gflops in result["gflops_by_part"].items()
        )
        lines.append(f"  {name}: {parts}")
    return "\n".join(lines)


def run_keras_hub(args):
    load_before = os.getloadavg()
    jit_compile = jit_compile_setting(args.jit_compile)
    results = keras_hub_benchmark.benchmark_keras_hub_encoders(
        image_size=args.image_size,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        selection_layers=args.selection_layers,
        jit_compile=jit_compile,
        tiny=args.tiny,
    )
    return {
        **environment(args, jit_compile, load_before),
        "selection_layers": list(args.selection_layers),
        "guidance": "text (random text_embedding of the encoder's width)",
        "results": results,
    }


def main(argv=None):
    args = parse_args(argv)
    xla.configure_tensorflow_xla()
    if args.task == "keras_hub":
        report = run_keras_hub(args)
        print(keras_hub_benchmark.format_keras_hub_table(report["results"]))
    elif args.task == "pretraining":
        report = run_pretraining(args)
        print(format_pretraining_table(report))
    elif args.task == "torch":
        benchmark_torch = load_torch_benchmark()
        report = run_torch(args, benchmark_torch)
        print(benchmark_torch.format_table(report))
    else:
        report = run(args)
        print(format_table(report))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])

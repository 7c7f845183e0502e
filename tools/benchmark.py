"""Vision encoder throughput: TRIPS patch selection vs. none vs. keras-hub's ViT.

Times forward (`predict_on_batch`) and train steps (`train_on_batch`, AdamW)
of `TRIPSVisionEncoder` at ViT-B/16 with no selection and with text-guided
selection, and keras-hub's `ViTBackbone` of the same size, on the current
Keras backend; compares the measured speedups with the analytic FLOPs.

    KERAS_BACKEND=jax python tools/benchmark.py
    KERAS_BACKEND=torch python tools/benchmark.py --steps 3 --skip-train
    python tools/benchmark.py --tiny --steps 1   # smoke test
"""

import argparse
import json
import os
import platform
import sys

import keras

from keras_trips.models import TRIPSVisionEncoder
from keras_trips.utils import benchmarking
from keras_trips.utils.flops import vision_encoder_flops

# name -> keep rate at the selection layers (None: no selection).
TRIPS_CONFIGS = {"none": None, "keep0.7": 0.7, "keep0.5": 0.5}
KERAS_HUB = "keras_hub"
ALL_CONFIGS = (*TRIPS_CONFIGS, KERAS_HUB)
REFERENCE = "none"

VIT_B16 = dict(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072)
TINY = dict(patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument("--image-size", type=int, default=None, help="224 (32 tiny)")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="32 px, patch 8, 2 layers, 2 heads, width 32, MLP 64, selection at (0, 1)",
    )
    parser.add_argument(
        "--selection-layers",
        type=lambda s: tuple(int(i) for i in s.split(",")),
        default=None,
        help="0-based blocks that select, e.g. 4,9 (the default; 0,1 with --tiny)",
    )
    parser.add_argument(
        "--configs",
        default=",".join(ALL_CONFIGS),
        help=f"comma-separated subset of {','.join(ALL_CONFIGS)} "
        f"('{REFERENCE}' is always run: it is the reference)",
    )
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument(
        "--jit-compile",
        choices=("auto", "true", "false"),
        default="auto",
        help="auto: XLA on jax/tensorflow; eager on torch (torch.compile on CPU "
        "takes minutes per model and breaks the graph on Keras internals)",
    )
    parser.add_argument(
        "--output", default=None, help="benchmarks/vision_<backend>.json"
    )
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(ALL_CONFIGS))
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {list(ALL_CONFIGS)}")
    args.configs = [c for c in ALL_CONFIGS if c in configs or c == REFERENCE]
    if args.image_size is None:
        args.image_size = 32 if args.tiny else 224
    if args.selection_layers is None:
        args.selection_layers = (0, 1) if args.tiny else (4, 9)
    if args.output is None:
        args.output = os.path.join(
            "benchmarks", f"vision_{keras.backend.backend()}.json"
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
            entry = benchmarking.summarize(timing["times_s"], args.batch_size)
            entry["compile_s"] = timing["first_call_s"]
            speedup = benchmarking.paired_speedup(reference_times, timing["times_s"])
            if name == KERAS_HUB:
                # time(ours, no selection) / time(keras-hub); target <= 1.05.
                entry["ours_over_keras_hub"] = speedup
            else:
                entry["measured_speedup"] = speedup
                entry["measured_over_predicted"] = (
                    speedup / results[name]["predicted_speedup"]
                )
            results[name][mode] = entry

    return {
        "backend": backend,
        "keras_version": keras.__version__,
        "jit_compile": jit_compile,
        "compiled_with": compiled_with(backend, jit_compile),
        "architecture": {"image_size": args.image_size, **architecture},
        "selection_layers": list(args.selection_layers),
        "guidance": "text (random text_embedding)",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "notes": (
            "median of interleaved rounds; compile_s is the first call (compile "
            "plus one run); speedups are medians of per-round time ratios against "
            f"'{REFERENCE}'; FLOPs are analytic forward FLOPs per image"
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


def main(argv=None):
    args = parse_args(argv)
    report = run(args)
    print(format_table(report))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])

"""The shared front of the task fine-tuning recipes (`finetune_vqa.py`,
`finetune_nlvr2.py`, `finetune_captioning.py`, `finetune_grounding.py`):
options, then `keras_trips.tasks` for data, evaluation and keep-rate sweeps.

It stands apart from `keras_trips.training` (the pre-training loop, with
checkpoints and resumption): a fine-tune of a few minutes is one `fit`.
"""

import argparse
import json
import math
import os
import time

import native_logs

# Before TensorFlow loads: its C++ start-up notes stay off the console.
native_logs.filter_native_logs()

import keras  # noqa: E402

from keras_trips import tasks  # noqa: E402
from keras_trips.data import TRIPSTextPreprocessor  # noqa: E402
from keras_trips.models import TRIPSBackbone, load_backbone  # noqa: E402
from keras_trips.models.preset_directory import is_preset_directory  # noqa: E402
from keras_trips.models.trips_backbone import PRESETS  # noqa: E402
from keras_trips.utils import xla  # noqa: E402

METRICS = {
    "vqa": "vqa_accuracy",
    "nlvr2": "accuracy",
    "grounding": "accuracy_iou_0.5",
    "captioning": "CIDEr",
}


def task_parser(task, description, defaults):
    """The options of a task recipe; `defaults` sets the task's own."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--init-from",
        help="A saved .keras backbone, pre-trainer or task model, or a preset "
        "directory (default: the --model preset, randomly initialised).",
    )
    model.add_argument("--model", default="tiny", choices=sorted(PRESETS))
    model.add_argument(
        "--image-size",
        type=int,
        help="Fine-tune at this size; the position embeddings of --init-from "
        "are interpolated (default: the model's).",
    )
    model.add_argument(
        "--keep-rate",
        type=float,
        help="Keep rate of every stage (default: the model's).",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        default="scenes",
        choices=tasks.TASK_FORMATS[task],
        help="Data format.",
    )
    data.add_argument("--train-annotations", help="Training annotation file.")
    data.add_argument("--eval-annotations", help="Evaluation annotation file.")
    if task == "vqa":
        data.add_argument("--train-questions", help="VQA v2 training questions.")
        data.add_argument("--eval-questions", help="VQA v2 evaluation questions.")
    data.add_argument("--image-root", help="Default: the annotation file's folder.")
    data.add_argument(
        "--eval-image-root", help="Default: the annotation file's folder."
    )
    data.add_argument("--num-scenes", type=int, default=3000, help="Training scenes.")
    data.add_argument(
        "--num-eval-scenes", type=int, default=200, help="Validation/test scenes."
    )
    data.add_argument("--eval-split", default="val", choices=("val", "test"))
    schedule = parser.add_argument_group("schedule")
    schedule.add_argument("--batch-size", type=int, default=32)
    schedule.add_argument("--eval-batch-size", type=int, default=50)
    schedule.add_argument("--steps", type=int, default=1000, help="Training batches.")
    schedule.add_argument("--log-every", type=int, default=100, help="Steps per epoch.")
    schedule.add_argument("--learning-rate", type=float, default=3e-4)
    schedule.add_argument("--weight-decay", type=float, default=0.02)
    schedule.add_argument("--warmup-steps", type=int, default=100)
    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", default=f"runs/finetune_{task}")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--sweep-keep-rates",
        action="store_true",
        help="After training, evaluate at keep rates 1.0, 0.9, 0.7, 0.5, 0.3 "
        "and plot the metric against images/s.",
    )
    parser.set_defaults(**defaults)
    return parser


def parse(parser, argv):
    args = parser.parse_args(argv)
    for name in (
        "init_from",
        "train_annotations",
        "eval_annotations",
        "train_questions",
        "eval_questions",
    ):
        path = getattr(args, name, None)
        preset = name == "init_from" and path and is_preset_directory(path)
        if path and not (os.path.isfile(path) or preset):
            parser.error(f"--{name.replace('_', '-')}: no such file: {path}")
    for name in (
        "batch_size",
        "eval_batch_size",
        "log_every",
        "num_scenes",
        "num_eval_scenes",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1.")
    if args.steps < 0:
        parser.error("--steps must be >= 0 (0: evaluate only).")
    if args.data in ("scenes", "easy-vqa") and (
        args.train_annotations or args.eval_annotations
    ):
        parser.error(f"--data {args.data} reads no annotation files.")
    if args.data not in ("scenes", "easy-vqa") and not (
        args.train_annotations and args.eval_annotations
    ):
        parser.error(
            f"--data {args.data} needs --train-annotations and --eval-annotations."
        )
    if args.keep_rate is not None and not 0 < args.keep_rate <= 1:
        parser.error("--keep-rate must be in (0, 1].")
    return args


def load_or_build_backbone(args, task_class):
    """`(backbone, saved task model or None)` for `--init-from`/`--model`."""
    if args.init_from and is_preset_directory(args.init_from):
        return load_backbone(args.init_from, args.image_size), None
    if args.init_from:
        loaded = keras.saving.load_model(args.init_from, compile=False)
        if isinstance(loaded, task_class) and args.image_size in (
            None,
            loaded.backbone.vision_encoder.image_shape[0],
        ):
            return loaded.backbone, loaded
        return load_backbone(args.init_from, args.image_size), None
    overrides = {}
    if args.image_size:
        overrides["image_shape"] = (args.image_size, args.image_size, 3)
    return TRIPSBackbone.from_preset(args.model, **overrides), None


def run(task, args, make_task, task_class, generation=None):
    """Fine-tunes, evaluates beside the baseline and optionally sweeps keep
    rates; prints the table and returns the results.

    Args:
        task: the task name. args: the parsed options.
        make_task: `(backbone, data) -> task model` (a new head; `data` as
            `keras_trips.tasks.task_datasets` returns it).
        task_class: the task model's class (a saved one is reused).
        generation: captioning: `{"max_length", "sampler"}`.
    """
    xla.configure_tensorflow_xla()
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    backbone, model = load_or_build_backbone(args, task_class)
    image_size = backbone.vision_encoder.image_shape[0]
    files = {
        "train": {
            "annotations": args.train_annotations,
            "questions": getattr(args, "train_questions", None),
        },
        "eval": {
            "annotations": args.eval_annotations,
            "questions": getattr(args, "eval_questions", None),
        },
    }
    data = tasks.task_datasets(
        task,
        args.data,
        files["train"],
        files["eval"],
        args.image_root,
        args.eval_image_root,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        image_size=image_size,
        sequence_length=min(30, backbone.max_sequence_length),
        num_scenes=args.num_scenes,
        num_eval_scenes=args.num_eval_scenes,
        eval_split=args.eval_split,
        seed=args.seed,
    )
    if model is None:
        model = make_task(backbone, data)
    if args.keep_rate is not None:
        model.set_keep_rate(args.keep_rate)
    model.compile(
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=min(args.warmup_steps, max(0, args.steps - 1)),
        total_steps=max(1, args.steps),
    )
    seconds = 0.0
    if args.steps:
        started = time.perf_counter()
        model.fit(
            data["train"],
            epochs=math.ceil(args.steps / args.log_every),
            steps_per_epoch=min(args.log_every, args.steps),
            shuffle=False,
        )
        seconds = time.perf_counter() - started
    model_path = os.path.join(args.output_dir, f"{task}.keras")
    model.save(model_path)

    eval_set, count = tasks.task_evaluation.in_memory(data["eval"])
    options = dict(
        references=data.get("eval_references"),
        tokenizer=TRIPSTextPreprocessor().tokenizer if task == "captioning" else None,
        **(generation or {}),
    )

    def evaluate(model):
        return tasks.evaluate_task(model, task, eval_set, count, **options)

    results = evaluate(model)
    baseline = tasks.majority_baseline(
        task,
        data["train"],
        eval_set,
        references=data.get("eval_references"),
        train_captions=data.get("train_captions"),
    )
    summary = {
        "task": task,
        "backend": keras.backend.backend(),
        "data": args.data,
        "init_from": args.init_from,
        "image_size": image_size,
        "keep_rate": list(model.backbone.vision_encoder.keep_rate),
        "train_steps": args.steps,
        "train_seconds": seconds,
        "eval_examples": count,
        "results": results,
        "baseline": baseline,
        "model": model_path,
    }
    lines = [
        "",
        "=" * 72,
        f"TRIPS {task} fine-tuning ({keras.backend.backend()}, {args.data}): "
        f"{args.steps} steps in {seconds:.0f} s; {count} evaluation examples",
        f"  {'':24}{'model':>12}{'baseline':>12}",
    ]
    for name, value in results.items():
        if name in ("images_per_s", "seconds"):
            continue
        lines.append(
            f"  {name:24}{value:12.4f}{baseline.get(name, float('nan')):12.4f}"
        )
    lines.append(f"  evaluation images/s: {results['images_per_s']:.1f}")
    lines.append(f"  baseline: {baseline['baseline']}")
    if args.sweep_keep_rates:
        rows = tasks.keep_rate_sweep(model, evaluate)
        summary["keep_rate_sweep"] = rows
        metric = METRICS[task]
        png = tasks.plot_keep_rate_curve(
            rows,
            metric,
            os.path.join(args.output_dir, "keep_rate_curve.png"),
            title=f"{task} ({args.data}, {keras.backend.backend()})",
        )
        summary["keep_rate_curve"] = png
        lines.append(f"  keep rate   {metric:>18}   images/s")
        for row in rows:
            lines.append(
                f"  {row['keep_rate']:<10g}{row[metric]:20.4f}{row['images_per_s']:11.1f}"
            )
        lines.append(f"  curve: {png}")
    lines.append(f"  model: {model_path}")
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as file:
        json.dump(summary, file, indent=2, default=float)
    return summary

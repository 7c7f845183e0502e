"""Command-line options shared by the recipes, and their validation.

Everything here runs before a model or a dataset is built, so that a bad
option costs nothing but its error message.
"""

import argparse
import glob
import inspect
import json
import os

import keras

from keras_trips.layers.trips_patch_selection import validate_keep_rate
from keras_trips.models.trips_backbone import PRESETS, TRIPSBackbone
from keras_trips.training.distribution import data_parallel_devices
from keras_trips.training.model_setup import backbone_config

DATA_FORMATS = ("scenes", "albef", "coco", "tfrecord")


def training_parser(description, output_dir):
    """An `argparse.ArgumentParser` with the options every recipe shares.

    Args:
        description: str. The recipe's one-line description.
        output_dir: str. The default `--output-dir`.

    Example:
    ```python
    parser = training_parser("Pre-train TRIPS.", "runs/pretrain")
    args = parse_training_arguments(parser, ["--model", "tiny", "--steps", "10"])
    ```
    """
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help="JSON file of options (keys as the long options, '-' or '_'); "
        "options on the command line override it.",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="tiny", choices=sorted(PRESETS))
    model.add_argument(
        "--backbone-overrides",
        type=json.loads,
        default={},
        help="JSON dict of TRIPSBackbone arguments, e.g. '{\"hidden_dim\": 64}'.",
    )
    model.add_argument(
        "--keep-rate",
        help="Keep rate in (0, 1]: one, or a comma list with one per stage.",
    )
    model.add_argument(
        "--selection-layers", help="Comma list of 0-based selecting ViT blocks."
    )
    model.add_argument(
        "--keep-rate-warmup",
        type=int,
        help="Steps at keep rate 1.0 before a cosine schedule reaches the "
        "target halfway through training (KeepRateScheduler).",
    )
    model.add_argument("--image-size", type=int, help="Default: the model's.")
    model.add_argument("--dropout", type=float, help="Default: the model's.")
    model.add_argument("--embedding-dim", type=int, default=256)
    model.add_argument(
        "--momentum", action="store_true", help="Momentum distillation (ALBEF)."
    )
    model.add_argument("--queue-size", type=int, default=4096)
    model.add_argument("--mixed-precision", action="store_true", help="mixed_bfloat16.")

    data = parser.add_argument_group("data")
    data.add_argument("--data-format", default="scenes", choices=DATA_FORMATS)
    data.add_argument(
        "--annotations",
        help="Annotation file (albef, coco) or TFRecord glob (tfrecord).",
    )
    data.add_argument("--image-root", help="Default: the annotation file's folder.")
    data.add_argument(
        "--num-scenes", type=int, default=3000, help="Built-in training scenes."
    )
    data.add_argument(
        "--num-eval-scenes",
        type=int,
        default=200,
        help="Built-in validation and test scenes (each).",
    )

    schedule = parser.add_argument_group("schedule")
    schedule.add_argument("--batch-size", type=int, default=32, help="Global batch.")
    schedule.add_argument("--epochs", type=int, default=2)
    schedule.add_argument(
        "--steps-per-epoch",
        type=int,
        help="Default: one pass over the built-in data; needed for other data "
        "unless --steps is given.",
    )
    schedule.add_argument(
        "--steps", type=int, help="Total batches; overrides --epochs."
    )
    schedule.add_argument("--learning-rate", type=float, default=3e-4)
    schedule.add_argument("--weight-decay", type=float, default=0.02)
    schedule.add_argument("--warmup-steps", type=int, default=100)
    schedule.add_argument(
        "--schedule", default="cosine", choices=("cosine", "constant")
    )
    schedule.add_argument(
        "--grad-accumulation",
        type=int,
        default=1,
        help="Batches per optimizer update.",
    )

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", default=output_dir)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--data-parallel",
        action="store_true",
        help="JAX: DataParallel over all devices; TensorFlow: MirroredStrategy.",
    )
    run.add_argument(
        "--checkpoint-every", type=int, default=200, help="Checkpoint every N steps."
    )
    return parser


def parse_training_arguments(parser, argv=None):
    """Parses `argv` (after the `--config` file's options) and validates it.

    Every problem is an `argparse` error (`SystemExit` with the message).
    Adds `keep_rates` (list of floats or None), `selection_layer_indices`
    (tuple or None) and `devices` (the data-parallel devices, or None).
    """
    args = parser.parse_args(argv)
    if args.config:
        parser.set_defaults(**_read_config(parser, args.config))
        args = parser.parse_args(argv)
    _validate(parser, args)
    return args


def _read_config(parser, path):
    if not os.path.isfile(path):
        parser.error(f"--config: no such file: {path}")
    with open(path) as file:
        try:
            config = json.load(file)
        except json.JSONDecodeError as error:
            parser.error(f"--config {path}: not valid JSON: {error}")
    if not isinstance(config, dict):
        parser.error(f"--config {path}: must hold a JSON object of options.")
    known = {action.dest for action in parser._actions} - {"help", "config"}
    options = {}
    for key, value in config.items():
        dest = key.lstrip("-").replace("-", "_")
        if dest not in known:
            parser.error(f"--config {path}: unknown option {key!r}.")
        options[dest] = value
    return options


def _validate(parser, args):
    known = set(inspect.signature(TRIPSBackbone.__init__).parameters) - {
        "self",
        "kwargs",
    }
    if not isinstance(args.backbone_overrides, dict):
        parser.error("--backbone-overrides must be a JSON object.")
    unknown = sorted(set(args.backbone_overrides) - known)
    if unknown:
        parser.error(
            f"--backbone-overrides: unknown TRIPSBackbone arguments {unknown}. "
            f"Known: {sorted(known)}"
        )

    if args.image_size is None:
        shape = args.backbone_overrides.get(
            "image_shape", PRESETS[args.model]["image_shape"]
        )
        args.image_size = shape[0]

    args.keep_rates = None
    if args.keep_rate is not None:
        try:
            args.keep_rates = [
                validate_keep_rate(rate) for rate in str(args.keep_rate).split(",")
            ]
        except ValueError as error:
            parser.error(f"--keep-rate: {error}")
    args.selection_layer_indices = None
    if args.selection_layers is not None:
        try:
            args.selection_layer_indices = tuple(
                int(index) for index in str(args.selection_layers).split(",")
            )
        except ValueError:
            parser.error(
                f"--selection-layers must be a comma list of integers. "
                f"Received: {args.selection_layers!r}"
            )
    if args.keep_rate_warmup is not None:
        if args.keep_rate_warmup < 0:
            parser.error("--keep-rate-warmup must be >= 0.")
        # The target is the model's rate: --keep-rate, else the preset's or
        # --backbone-overrides'.
        if isinstance(backbone_config(args)["keep_rate"], (list, tuple)):
            parser.error("--keep-rate-warmup schedules one keep rate for all stages.")

    for name in ("batch_size", "epochs", "checkpoint_every", "grad_accumulation"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1.")
    for name in (
        "steps",
        "steps_per_epoch",
        "image_size",
        "num_scenes",
        "num_eval_scenes",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1.")

    if args.steps is not None and args.steps % args.grad_accumulation:
        # The gradients of a last, partial group would never be applied.
        parser.error(
            f"--steps {args.steps} is not a multiple of --grad-accumulation "
            f"{args.grad_accumulation}."
        )

    if args.data_format == "scenes":
        if args.annotations or args.image_root:
            parser.error(
                "--annotations/--image-root need --data-format albef|coco|tfrecord."
            )
    else:
        if not args.annotations:
            parser.error(f"--data-format {args.data_format} needs --annotations.")
        if args.data_format == "tfrecord":
            if not glob.glob(args.annotations):
                parser.error(
                    f"--annotations: no TFRecord files match {args.annotations}"
                )
        elif not os.path.isfile(args.annotations):
            parser.error(f"--annotations: no such file: {args.annotations}")
        if args.image_root and not os.path.isdir(args.image_root):
            parser.error(f"--image-root: no such folder: {args.image_root}")
        if args.steps is None and args.steps_per_epoch is None:
            parser.error(
                f"--data-format {args.data_format} needs --steps-per-epoch or --steps."
            )

    args.devices = None
    if args.data_parallel:
        if keras.backend.backend() not in ("jax", "tensorflow"):
            parser.error(
                f"--data-parallel supports the jax and tensorflow backends; "
                f"{keras.backend.backend()} trains on one device."
            )
        args.devices = data_parallel_devices()
    replicas = len(args.devices) if args.devices else 1
    if args.batch_size % replicas:
        parser.error(
            f"--batch-size {args.batch_size} (global) is not divisible by the "
            f"{replicas} devices."
        )
    if args.batch_size // replicas < 2:
        parser.error("Contrastive training needs at least 2 pairs per device.")

"""The typed configuration of a training run, validated before any work."""

import dataclasses
import glob
import inspect
import os

import keras

from keras_trips.layers.trips_patch_selection import validate_keep_rate
from keras_trips.losses.image_text_contrastive import EMBEDDING_POOLINGS
from keras_trips.models.trips_backbone import (
    PRESET_TEXT_WEIGHTS,
    PRESETS,
    TRIPSBackbone,
)
from keras_trips.models.trips_pretrainer import (
    CONTRASTIVE_GUIDANCES,
    ITM_GUIDANCES,
    ITM_NEGATIVES,
)
from keras_trips.training.distribution import data_parallel_devices

DATA_FORMATS = ("scenes", "albef", "coco", "tfrecord")
SCHEDULES = ("cosine", "constant")
BACKBONE_ARGUMENTS = tuple(
    sorted(
        set(inspect.signature(TRIPSBackbone.__init__).parameters) - {"self", "kwargs"}
    )
)


class TrainingConfigError(ValueError):
    """A bad `TrainingConfig` value.

    The message names the fields it is about as `` `field` `` (`str()`) or
    as the recipes' command-line options, `--field` (`option_message()`).

    Args:
        template: the message, with a `{}` for each field named.
        *fields: the `TrainingConfig` fields, in the template's order.
    """

    def __init__(self, template, *fields):
        self.template = template
        self.fields = fields
        super().__init__(template.format(*(f"`{name}`" for name in fields)))

    def option_message(self):
        return self.template.format(
            *(f"--{name.replace('_', '-')}" for name in self.fields)
        )


def _metadata(group, help=None, choices=None):
    """A field's command-line group, help and choices (the recipes generate
    their options from them)."""
    return {"group": group, "help": help, "choices": choices}


def _option(default, group, help=None, choices=None):
    return dataclasses.field(default=default, metadata=_metadata(group, help, choices))


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Everything a training run is configured by, checked on construction.

    The recipes' command-line options are these fields (`--batch-size` is
    `batch_size`). A bad value raises `TrainingConfigError`, a `ValueError`
    naming the field. Derived values are computed once:
    `backbone_config`, the `TRIPSBackbone` arguments of `model` with the
    options applied, and `devices`, the data-parallel devices (or None).

    Args:
        model: a `TRIPSBackbone` preset ("micro", "tiny", "small",
            "base"); "small" starts its text tower from MiniLM-L6.
        backbone_overrides: dict of `TRIPSBackbone` arguments to replace.
        keep_rate: None (the model's), a keep rate in (0, 1], or one per
            selection layer.
        selection_layers: None (the model's) or the 0-based ViT blocks.
        keep_rate_warmup: None, or the batches at keep rate 1.0 before a
            cosine schedule reaches the keep rate halfway through training.
        image_size: None (the model's) or the square image side.
        dropout: None (the model's) or the text and fusion dropout.
        embedding_dim: ITC embedding width.
        momentum: use the momentum model (ALBEF's distillation and queues).
        queue_size: the momentum queues' length.
        mixed_precision: compute in bfloat16 ("mixed_bfloat16").
        freeze_text: keep the text encoder's weights; None: when the preset
            loads pretrained text weights.
        text_length: None (the longest training caption, at most 30 tokens
            and the model's longest text; `caption_text_length`) or the
            tokens each caption is padded or cut to.
        embedding_pooling, contrastive_guidance: the `TRIPSPretrainer`'s.
            The defaults ("mean", "image") make a model trained from scratch
            align images and texts; ALBEF and the paper use "cls", "text".
        min_crop_area: None, or the least area fraction of the random
            resized crops of training images.
        itc_only_fraction: the share of the run that trains ITC alone before
            ITM and MLM join.
        itm_negatives: the `TRIPSPretrainer`'s: "random" (the default here;
            on small data ALBEF's "hard" negatives are often true matches
            and ITM stays at its prior) or "hard".
        itm_guidance: the `TRIPSPretrainer`'s: "reuse" (the paper, the
            default) or "pair" (each negative's image selected by its
            pair's text, as re-ranking selects it; 2B more vision passes,
            no gain in ITM measured on the main job).
        selection_distillation: the `TRIPSPretrainer`'s weight of the loss
            that teaches text-guided selection where ITC looks (1.0 here;
            0 is the paper, which left the text guidance near chance on
            the scenes).
        data_format: one of `DATA_FORMATS`; "scenes" is the built-in data.
        annotations: the annotation file (albef, coco) or TFRecord glob.
        image_root: None (the annotation file's folder) or the image folder.
        eval_annotations, eval_phrases: None, or the held-out captions
            (ALBEF list) and phrases with boxes that the run is evaluated on
            at its end; the scenes' test split by default.
        skip_evaluation: end without that evaluation and its pictures.
        num_scenes, num_eval_scenes: built-in training scenes, and
            validation and test scenes (each).
        batch_size: the global batch.
        epochs: epochs, unless `steps` is given.
        steps_per_epoch: None (one pass over the data) or batches per epoch.
        steps: None (`epochs` epochs) or the total batches.
        learning_rate, weight_decay, warmup_steps: AdamW's.
        learning_rate_floor: the fraction of the peak learning rate that
            the cosine schedule ends at.
        schedule: one of `SCHEDULES`.
        grad_accumulation: batches per optimizer update.
        output_dir: where checkpoints, logs and models go.
        seed: seeds the data order and the model.
        data_parallel: spread the batch over every device (JAX, TensorFlow).
        checkpoint_every: batches between checkpoints.

    Example:
    ```python
    config = TrainingConfig(model="tiny", keep_rate=0.5, steps=100)
    config.backbone_config["keep_rate"]  # 0.5
    config.image_size  # 64, the tiny model's
    ```
    """

    model: str = _option("small", "model", choices=tuple(sorted(PRESETS)))
    backbone_overrides: dict = dataclasses.field(
        default_factory=dict,
        metadata=_metadata(
            "model",
            "JSON dict of TRIPSBackbone arguments, e.g. '{\"hidden_dim\": 64}'.",
        ),
    )
    keep_rate: float | tuple | None = _option(
        None, "model", "Keep rate in (0, 1]: one, or a comma list with one per stage."
    )
    selection_layers: tuple | None = _option(
        None, "model", "Comma list of 0-based selecting ViT blocks."
    )
    keep_rate_warmup: int | None = _option(
        None,
        "model",
        "Steps at keep rate 1.0 before a cosine schedule reaches the target "
        "halfway through training (KeepRateScheduler).",
    )
    image_size: int | None = _option(None, "model", "Default: the model's.")
    dropout: float | None = _option(None, "model", "Default: the model's.")
    embedding_dim: int = _option(256, "model")
    momentum: bool = _option(False, "model", "Momentum distillation (ALBEF).")
    queue_size: int = _option(4096, "model")
    mixed_precision: bool = _option(False, "model", "mixed_bfloat16.")
    freeze_text: bool | None = _option(
        None, "model", "Default: frozen when the preset's text weights are pretrained."
    )
    text_length: int | None = _option(
        None,
        "model",
        "Tokens per caption. Default: the longest training caption's, at most 30.",
    )
    embedding_pooling: str = _option(
        "mean", "model", "ITC pooling.", choices=EMBEDDING_POOLINGS
    )
    contrastive_guidance: str = _option(
        "image",
        "model",
        "The vision pass ITC embeds: text-guided (the paper) or without text.",
        choices=CONTRASTIVE_GUIDANCES,
    )
    itc_only_fraction: float = _option(
        0.6, "schedule", "Share of the run with ITC alone before ITM and MLM join."
    )
    itm_negatives: str = _option(
        "random",
        "model",
        "ITM negatives: drawn by ITC similarity (ALBEF) or uniformly (learns "
        "faster on small data, whose hardest negatives often match).",
        choices=ITM_NEGATIVES,
    )
    itm_guidance: str = _option(
        "reuse",
        "model",
        "The image tokens of an ITM negative: selected under the pair's own "
        "text, as re-ranking selects them, or reused from the positive's "
        "pass (the paper; cheaper).",
        choices=ITM_GUIDANCES,
    )

    selection_distillation: float = _option(
        1.0,
        "model",
        "Weight of the loss that pulls text-guided selection towards the "
        "patches ITC matches to the caption (0: the paper's, none).",
    )

    data_format: str = _option("scenes", "data", choices=DATA_FORMATS)
    annotations: str | None = _option(
        None, "data", "Annotation file (albef, coco) or TFRecord glob (tfrecord)."
    )
    image_root: str | None = _option(
        None, "data", "Default: the annotation file's folder."
    )
    min_crop_area: float | None = _option(
        None,
        "data",
        "Random resized crops of at least this area fraction (ALBEF: 0.5). "
        "Default: none, since captions may name positions.",
    )
    eval_annotations: str | None = _option(
        None,
        "data",
        "ALBEF caption list of test images: retrieval at the end. Default for "
        "the scenes: their test split.",
    )
    eval_phrases: str | None = _option(
        None,
        "data",
        "Phrases with boxes (RefCOCO-style, with 'object_bboxes'): selection "
        "quality at the end. Default for the scenes: their test split.",
    )
    skip_evaluation: bool = _option(
        False, "data", "End without the held-out evaluation and its pictures."
    )
    num_scenes: int = _option(3000, "data", "Built-in training scenes.")
    num_eval_scenes: int = _option(
        200, "data", "Built-in validation and test scenes (each)."
    )

    batch_size: int = _option(32, "schedule", "Global batch.")
    epochs: int = _option(8, "schedule")
    steps_per_epoch: int | None = _option(
        None,
        "schedule",
        "Default: one pass over the data; needed for TFRecords unless --steps "
        "is given.",
    )
    steps: int | None = _option(None, "schedule", "Total batches; overrides --epochs.")
    learning_rate: float = _option(
        1e-3, "schedule", "Peak; ALBEF fine-tunes pretrained towers at 1e-4."
    )
    learning_rate_floor: float = _option(
        0.2,
        "schedule",
        "Fraction of the peak the cosine ends at (ALBEF: 0); keeps ITM and MLM, "
        "which join late, learning to the end of a short run.",
    )
    weight_decay: float = _option(0.02, "schedule")
    warmup_steps: int = _option(20, "schedule")
    schedule: str = _option("cosine", "schedule", choices=SCHEDULES)
    grad_accumulation: int = _option(1, "schedule", "Batches per optimizer update.")

    output_dir: str = _option("runs/train", "run")
    seed: int = _option(0, "run")
    data_parallel: bool = _option(
        False,
        "run",
        "JAX: DataParallel over all devices; TensorFlow: MirroredStrategy.",
    )
    checkpoint_every: int = _option(200, "run", "Checkpoint every N steps.")

    backbone_config: dict = dataclasses.field(init=False, repr=False)
    devices: list | None = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        self._check_model()
        self._check_counts()
        self._check_data()
        self._set("backbone_config", self._backbone_config())
        if self.freeze_text is None:
            self._set("freeze_text", self.model in PRESET_TEXT_WEIGHTS)
        longest = self.backbone_config["max_sequence_length"]
        if self.text_length is not None and not 2 <= self.text_length <= longest:
            raise TrainingConfigError(
                f"{{}} must be between 2 and the model's longest text, {longest}. "
                f"Received: {self.text_length}",
                "text_length",
            )
        if self.keep_rate_warmup is not None and isinstance(
            self.backbone_config["keep_rate"], (list, tuple)
        ):
            # The target is the model's rate: `keep_rate`, else the preset's
            # or `backbone_overrides`'.
            raise TrainingConfigError(
                "{} schedules one keep rate for all stages.", "keep_rate_warmup"
            )
        self._set("devices", self._devices())

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    def _check_model(self):
        if self.model not in PRESETS:
            raise TrainingConfigError(
                f"{{}} must be one of {sorted(PRESETS)}. Received: {self.model!r}",
                "model",
            )
        if not isinstance(self.backbone_overrides, dict):
            raise TrainingConfigError("{} must be a JSON object.", "backbone_overrides")
        unknown = sorted(set(self.backbone_overrides) - set(BACKBONE_ARGUMENTS))
        if unknown:
            raise TrainingConfigError(
                f"{{}}: unknown TRIPSBackbone arguments {unknown}. "
                f"Known: {list(BACKBONE_ARGUMENTS)}",
                "backbone_overrides",
            )
        if self.keep_rate is not None:
            rates = self.keep_rate
            try:
                if isinstance(rates, (list, tuple)) and len(rates) != 1:
                    rates = tuple(validate_keep_rate(rate) for rate in rates)
                elif isinstance(rates, (list, tuple)):
                    rates = validate_keep_rate(rates[0])
                else:
                    rates = validate_keep_rate(rates)
            except ValueError as error:
                raise TrainingConfigError(
                    "{}: " + str(error).replace("{", "{{").replace("}", "}}"),
                    "keep_rate",
                ) from None
            self._set("keep_rate", rates)
        if self.selection_layers is not None:
            self._set("selection_layers", tuple(self.selection_layers))
        if self.image_size is None:
            shape = self.backbone_overrides.get(
                "image_shape", PRESETS[self.model]["image_shape"]
            )
            self._set("image_size", shape[0])

    def _check_counts(self):
        if self.keep_rate_warmup is not None and self.keep_rate_warmup < 0:
            raise TrainingConfigError("{} must be >= 0.", "keep_rate_warmup")
        for name in ("batch_size", "epochs", "checkpoint_every", "grad_accumulation"):
            if getattr(self, name) < 1:
                raise TrainingConfigError("{} must be at least 1.", name)
        for name in (
            "steps",
            "steps_per_epoch",
            "image_size",
            "num_scenes",
            "num_eval_scenes",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainingConfigError("{} must be at least 1.", name)
        if self.steps is not None and self.steps % self.grad_accumulation:
            # The gradients of a last, partial group would never be applied.
            raise TrainingConfigError(
                f"{{}} {self.steps} is not a multiple of {{}} "
                f"{self.grad_accumulation}.",
                "steps",
                "grad_accumulation",
            )
        if self.min_crop_area is not None and not 0.0 < self.min_crop_area <= 1.0:
            raise TrainingConfigError(
                f"{{}} must be in (0, 1]. Received: {self.min_crop_area}",
                "min_crop_area",
            )
        if not 0.0 <= self.itc_only_fraction < 1.0:
            raise TrainingConfigError(
                f"{{}} must be in [0, 1). Received: {self.itc_only_fraction}",
                "itc_only_fraction",
            )
        if not 0.0 <= self.learning_rate_floor < 1.0:
            raise TrainingConfigError(
                f"{{}} must be in [0, 1). Received: {self.learning_rate_floor}",
                "learning_rate_floor",
            )
        if not self.selection_distillation >= 0:
            raise TrainingConfigError(
                f"{{}} must be >= 0. Received: {self.selection_distillation}",
                "selection_distillation",
            )
        if self.schedule not in SCHEDULES:
            raise TrainingConfigError(
                f"{{}} must be one of {SCHEDULES}. Received: {self.schedule!r}",
                "schedule",
            )

    def _check_data(self):
        if self.data_format not in DATA_FORMATS:
            raise TrainingConfigError(
                f"{{}} must be one of {DATA_FORMATS}. Received: {self.data_format!r}",
                "data_format",
            )
        for name in ("eval_annotations", "eval_phrases"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise TrainingConfigError(f"{{}}: no such file: {path}", name)
        if self.data_format == "scenes":
            if self.annotations or self.image_root:
                raise TrainingConfigError(
                    "{}/{} need {} albef|coco|tfrecord.",
                    "annotations",
                    "image_root",
                    "data_format",
                )
            return
        if not self.annotations:
            raise TrainingConfigError(
                f"{{}} {self.data_format} needs {{}}.", "data_format", "annotations"
            )
        if self.data_format == "tfrecord":
            if not glob.glob(self.annotations):
                raise TrainingConfigError(
                    f"{{}}: no TFRecord files match {self.annotations}", "annotations"
                )
            if self.steps is None and self.steps_per_epoch is None:
                # Only reading every record would count them.
                raise TrainingConfigError(
                    f"{{}} {self.data_format} needs {{}} or {{}}.",
                    "data_format",
                    "steps_per_epoch",
                    "steps",
                )
        elif not os.path.isfile(self.annotations):
            raise TrainingConfigError(
                f"{{}}: no such file: {self.annotations}", "annotations"
            )
        if self.image_root and not os.path.isdir(self.image_root):
            raise TrainingConfigError(
                f"{{}}: no such folder: {self.image_root}", "image_root"
            )

    def _backbone_config(self):
        config = {**PRESETS[self.model], **self.backbone_overrides}
        config["image_shape"] = (self.image_size, self.image_size, 3)
        if self.keep_rate is not None:
            config["keep_rate"] = self.keep_rate
        if self.selection_layers is not None:
            config["selection_layers"] = self.selection_layers
        if self.dropout is not None:
            config["dropout"] = self.dropout
        if self.mixed_precision:
            config["dtype"] = "mixed_bfloat16"
        return config

    def _devices(self):
        devices = None
        if self.data_parallel:
            backend = keras.backend.backend()
            if backend not in ("jax", "tensorflow"):
                raise TrainingConfigError(
                    f"{{}} supports the jax and tensorflow backends; {backend} "
                    "trains on one device.",
                    "data_parallel",
                )
            devices = data_parallel_devices()
        replicas = len(devices) if devices else 1
        if self.batch_size % replicas:
            raise TrainingConfigError(
                f"{{}} {self.batch_size} (global) is not divisible by the "
                f"{replicas} devices.",
                "batch_size",
            )
        if self.batch_size // replicas < 2:
            raise TrainingConfigError(
                "Contrastive training needs at least 2 pairs per device."
            )
        return devices

"""Building the recipes' models from their options."""

import os

from keras_trips.models.trips_backbone import PRESETS, TRIPSBackbone
from keras_trips.models.trips_pretrainer import TRIPSPretrainer
from keras_trips.utils.saving import load_model


def backbone_config(args):
    """The TRIPSBackbone arguments of `args.model` with the options applied."""
    config = {**PRESETS[args.model], **args.backbone_overrides}
    if args.image_size is not None:
        config["image_shape"] = (args.image_size, args.image_size, 3)
    if args.keep_rates is not None:
        rates = args.keep_rates
        config["keep_rate"] = rates[0] if len(rates) == 1 else tuple(rates)
    if args.selection_layer_indices is not None:
        config["selection_layers"] = args.selection_layer_indices
    if args.dropout is not None:
        config["dropout"] = args.dropout
    if args.mixed_precision:
        config["dtype"] = "mixed_bfloat16"
    return config


def build_pretrainer(args, total_steps, init_from=None):
    """A compiled `TRIPSPretrainer` for the run.

    Call it in the distribution scope (see `distribution_scope`).

    Args:
        args: the parsed options.
        total_steps: int. Batches the run trains; the learning rate schedule
            ends there.
        init_from: None, or a saved `.keras` backbone or pretrainer whose
            weights the run starts from.
    """
    if init_from is None:
        pretrainer = TRIPSPretrainer(
            TRIPSBackbone(**backbone_config(args)),
            embedding_dim=args.embedding_dim,
            use_momentum=args.momentum,
            queue_size=args.queue_size,
        )
    else:
        loaded = load_model(init_from, compile=False)
        pretrainer = (
            loaded
            if isinstance(loaded, TRIPSPretrainer)
            else TRIPSPretrainer(
                loaded,
                embedding_dim=args.embedding_dim,
                use_momentum=args.momentum,
                queue_size=args.queue_size,
            )
        )
    pretrainer.compile(
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=min(args.warmup_steps, total_steps - 1),
        total_steps=total_steps if args.schedule == "cosine" else None,
        gradient_accumulation_steps=args.grad_accumulation
        if args.grad_accumulation > 1
        else None,
    )
    return pretrainer


def save_models(pretrainer, output_dir):
    """Saves the backbone and the pretrainer as `.keras`; returns the paths."""
    paths = {
        "backbone": os.path.join(output_dir, "backbone.keras"),
        "pretrainer": os.path.join(output_dir, "pretrainer.keras"),
    }
    pretrainer.backbone.save(paths["backbone"])
    pretrainer.save(paths["pretrainer"])
    return paths

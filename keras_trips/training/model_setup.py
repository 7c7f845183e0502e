"""Building the recipes' models from their options."""

import os

from keras_trips.data.trips_text_preprocessor import TRIPSTextPreprocessor
from keras_trips.models.trips_backbone import TRIPSBackbone
from keras_trips.models.trips_pretrainer import TRIPSPretrainer
from keras_trips.utils.saving import load_model


def build_pretrainer(config, total_steps, init_from=None):
    """A compiled `TRIPSPretrainer` for a `TrainingConfig`'s run.

    Call it in the distribution scope (see `distribution_scope`).

    Args:
        config: the run's `TrainingConfig`.
        total_steps: int. Batches the run trains; the learning rate schedule
            ends there.
        init_from: None, or a saved backbone or pretrainer (a `.keras` file
            or a preset directory) whose weights the run starts from.
    """
    task = dict(
        embedding_dim=config.embedding_dim,
        use_momentum=config.momentum,
        queue_size=config.queue_size,
        embedding_pooling=config.embedding_pooling,
        contrastive_guidance=config.contrastive_guidance,
        fusion_objectives_start_step=int(config.itc_only_fraction * total_steps),
        itm_negatives=config.itm_negatives,
        itm_guidance=config.itm_guidance,
        selection_distillation=config.selection_distillation,
    )
    if init_from is None:
        # `freeze_text` decides, also over a `text_trainable` override.
        arguments = {**config.backbone_config, "text_trainable": not config.freeze_text}
        backbone = TRIPSBackbone.from_preset(config.model, **arguments)
        pretrainer = TRIPSPretrainer(backbone, **task)
    else:
        loaded = load_model(init_from, compile=False)
        pretrainer = (
            loaded
            if isinstance(loaded, TRIPSPretrainer)
            else TRIPSPretrainer(loaded, **task)
        )
    pretrainer.compile(
        learning_rate=config.learning_rate,
        learning_rate_floor=config.learning_rate_floor,
        weight_decay=config.weight_decay,
        warmup_steps=min(config.warmup_steps, total_steps - 1),
        total_steps=total_steps if config.schedule == "cosine" else None,
        gradient_accumulation_steps=config.grad_accumulation
        if config.grad_accumulation > 1
        else None,
    )
    return pretrainer


def save_models(pretrainer, output_dir, text_length):
    """Saves the backbone and the pretrainer as `.keras`, and both as a
    preset directory (`TRIPSPretrainer.save_to_preset`) with the text
    preprocessor of the run (`text_length` tokens); returns the paths."""
    paths = {
        "backbone": os.path.join(output_dir, "backbone.keras"),
        "pretrainer": os.path.join(output_dir, "pretrainer.keras"),
        "preset": os.path.join(output_dir, "preset"),
    }
    pretrainer.backbone.save(paths["backbone"])
    pretrainer.save(paths["pretrainer"])
    pretrainer.save_to_preset(
        paths["preset"], preprocessor=TRIPSTextPreprocessor(sequence_length=text_length)
    )
    return paths

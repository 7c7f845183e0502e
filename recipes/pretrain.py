"""Pre-train TRIPS with ITC, ITM and MLM (ALBEF objectives).

On the built-in scenes dataset by default (generated into its cache folder
on first use), or on ALBEF/COCO caption files or TFRecords. Resumes from the
last checkpoint in `--output-dir` when there is one.

    KERAS_BACKEND=jax python recipes/pretrain.py --model tiny
"""

import os

import keras
import training_options

from keras_trips import training
from keras_trips.utils import xla


def main(argv=None, extra_callbacks=()):
    """Runs the recipe; returns the final metrics, timing and file paths.

    `extra_callbacks` join the run's own (tests use one to interrupt it).
    """
    parser = training_options.training_parser(__doc__.splitlines()[0], "runs/pretrain")
    _, config = training_options.parse_training_options(parser, argv)
    xla.configure_tensorflow_xla()
    keras.utils.set_random_seed(config.seed)

    dataset_fn = training.training_dataset_fn(config)
    with training_options.option_errors(parser):
        examples = training.examples_per_pass(config, captions="random")
    steps_per_epoch, _, total_steps = training.training_schedule(config, examples)
    os.makedirs(config.output_dir, exist_ok=True)
    with training.distribution_scope(config.devices):
        pretrainer = training.build_pretrainer(config, total_steps)
        callbacks = [
            *training.training_callbacks(config, total_steps),
            *extra_callbacks,
        ]
        timing = training.fit_resumable(
            pretrainer, dataset_fn, steps_per_epoch, total_steps, callbacks
        )
        files = training.save_models(pretrainer, config.output_dir)

    step_log = os.path.join(config.output_dir, "steps.csv")
    files["loss plot"] = training.plot_losses(
        step_log, os.path.join(config.output_dir, "losses.png")
    )
    files["history"] = os.path.join(config.output_dir, "history.csv")
    files["TensorBoard logs"] = os.path.join(config.output_dir, "logs")
    log = training.read_step_log(step_log)
    final = {name: values[-1] for name, values in log.items() if name != "step"}
    training.print_summary(
        f"TRIPS pre-training ({config.model}, {keras.backend.backend()})",
        timing,
        config.batch_size,
        final,
        files,
    )
    return {
        "config": config,
        "timing": timing,
        "final": final,
        "files": files,
        "model": pretrainer,
    }


if __name__ == "__main__":
    main()

"""Pre-train TRIPS with ITC, ITM and MLM (ALBEF objectives).

On the built-in scenes dataset by default (generated into its cache folder
on first use), or on ALBEF/COCO caption files or TFRecords. Resumes from the
last checkpoint in `--output-dir` when there is one.

    KERAS_BACKEND=jax python recipes/pretrain.py --model tiny
"""

import os

import keras

from keras_trips import training
from keras_trips.utils import xla


def main(argv=None, extra_callbacks=()):
    """Runs the recipe; returns the final metrics, timing and file paths.

    `extra_callbacks` join the run's own (tests use one to interrupt it).
    """
    parser = training.training_parser(__doc__.splitlines()[0], "runs/pretrain")
    args = training.parse_training_arguments(parser, argv)
    xla.configure_tensorflow_xla()
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)

    config = training.backbone_config(args)
    dataset_fn = training.training_dataset_fn(args, config["max_sequence_length"])
    steps_per_epoch, _, total_steps = training.training_schedule(
        args, training.examples_per_pass(args, captions="random")
    )
    with training.distribution_scope(args.devices):
        pretrainer = training.build_pretrainer(args, total_steps)
        callbacks = [*training.training_callbacks(args, total_steps), *extra_callbacks]
        timing = training.fit_resumable(
            pretrainer, dataset_fn, steps_per_epoch, total_steps, callbacks
        )
        files = training.save_models(pretrainer, args.output_dir)

    step_log = os.path.join(args.output_dir, "steps.csv")
    files["loss plot"] = training.plot_losses(
        step_log, os.path.join(args.output_dir, "losses.png")
    )
    files["history"] = os.path.join(args.output_dir, "history.csv")
    files["TensorBoard logs"] = os.path.join(args.output_dir, "logs")
    log = training.read_step_log(step_log)
    final = {name: values[-1] for name, values in log.items() if name != "step"}
    training.print_summary(
        f"TRIPS pre-training ({args.model}, {keras.backend.backend()})",
        timing,
        args.batch_size,
        final,
        files,
    )
    return {
        "args": args,
        "timing": timing,
        "final": final,
        "files": files,
        "model": pretrainer,
    }


if __name__ == "__main__":
    main()

"""Pre-train TRIPS with ITC, ITM and MLM (ALBEF objectives).

On the built-in scenes dataset by default (generated into its cache folder
on first use), or on ALBEF/COCO caption files or TFRecords. Resumes from the
last checkpoint in `--output-dir` when there is one. Ends with what the
model learned on held-out data (the scenes' test split, or
`--eval-annotations` and `--eval-phrases`): retrieval and selection quality
beside their chance levels, and pictures of what selection keeps.

    KERAS_BACKEND=jax python recipes/pretrain.py
    KERAS_BACKEND=jax python recipes/pretrain.py --data-format albef \
        --annotations train.json --eval-annotations test.json
"""

import os

import native_logs

# Before TensorFlow loads: its C++ start-up notes stay off the console.
native_logs.filter_native_logs()

import keras  # noqa: E402
import training_options  # noqa: E402

from keras_trips import training  # noqa: E402
from keras_trips.utils import xla  # noqa: E402


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
        # The longest caption, read from the annotations once.
        text_length = training.caption_text_length(config)
        files = training.save_models(pretrainer, config.output_dir, text_length)

    step_log = os.path.join(config.output_dir, "steps.csv")
    files["loss plot"] = training.plot_losses(
        step_log, os.path.join(config.output_dir, "losses.png")
    )
    files["history"] = os.path.join(config.output_dir, "history.csv")
    files["TensorBoard logs"] = os.path.join(config.output_dir, "logs")
    log = training.read_step_log(step_log)
    final = {name: values[-1] for name, values in log.items() if name != "step"}
    details = training.format_training_outcome(
        final, config.batch_size + (config.queue_size if config.momentum else 0)
    )
    evaluation = None
    captions, phrases = training.eval_files(config)
    if captions is not None:
        evaluation = training.evaluate_pretraining(
            pretrainer,
            captions,
            phrases,
            sequence_length=text_length,
            # A short ITM shortlist and 200 phrases keep the evaluation
            # within the main job's budget.
            k_test=8,
            max_phrases=200,
        )
        details += training.format_evaluation(evaluation)
    if phrases is not None:
        files["selection pictures"] = os.path.dirname(
            training.selection_pictures(
                pretrainer, phrases, os.path.join(config.output_dir, "selection")
            )[0]
        )
    training.print_summary(
        f"TRIPS pre-training ({config.model}, {keras.backend.backend()})",
        timing,
        config.batch_size,
        final,
        files,
        details=details,
    )
    return {
        "config": config,
        "timing": timing,
        "final": final,
        "evaluation": evaluation,
        "files": files,
        "model": pretrainer,
    }


if __name__ == "__main__":
    main()

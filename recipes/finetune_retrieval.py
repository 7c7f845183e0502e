"""Fine-tune TRIPS for image-text retrieval (ITC + ITM) and report Recall@K.

Trains the pre-training model on caption batches without MLM masking, from a
saved `.keras` backbone or pretrainer if given, then evaluates retrieval as
docs/method.md: text-free image embeddings shortlist k_test candidates, ITM on
text-guided vision passes re-ranks them. The built-in scenes dataset's
validation split is the default gallery.

    KERAS_BACKEND=jax python recipes/finetune_retrieval.py \
        --init-from runs/pretrain/pretrainer.keras
"""

import os

import keras
import training_options

from keras_trips import training
from keras_trips.metrics import RetrievalEvaluator
from keras_trips.models.preset_directory import is_preset_directory
from keras_trips.utils import xla


def main(argv=None):
    """Runs the recipe; returns the recall, timing and file paths."""
    parser = training_options.training_parser(
        __doc__.splitlines()[0], "runs/finetune_retrieval"
    )
    parser.set_defaults(
        epochs=2,
        learning_rate=1e-4,
        learning_rate_floor=0.0,
        warmup_steps=0,
        itc_only_fraction=0.0,
    )
    retrieval = parser.add_argument_group("retrieval")
    retrieval.add_argument(
        "--init-from",
        help="A saved .keras backbone or pretrainer, or a preset directory.",
    )
    retrieval.add_argument("--k-test", type=int, default=16)
    retrieval.add_argument(
        "--eval-split", default="val", choices=("val", "test"), help="Scenes split."
    )
    args, config = training_options.parse_training_options(parser, argv)
    xla.configure_tensorflow_xla()
    if args.init_from and not (
        os.path.isfile(args.init_from) or is_preset_directory(args.init_from)
    ):
        parser.error(f"--init-from: no such file: {args.init_from}")
    if config.data_format != "scenes" and not config.eval_annotations:
        parser.error("Data other than the scenes needs --eval-annotations.")
    if args.k_test < 1:
        parser.error("--k-test must be at least 1.")
    keras.utils.set_random_seed(config.seed)

    dataset_fn = training.training_dataset_fn(config, masking=False)
    with training_options.option_errors(parser):
        examples = training.examples_per_pass(config, captions="all")
    steps_per_epoch, _, total_steps = training.training_schedule(config, examples)
    os.makedirs(config.output_dir, exist_ok=True)
    with training.distribution_scope(config.devices):
        pretrainer = training.build_pretrainer(config, total_steps, args.init_from)
        timing = training.fit_resumable(
            pretrainer,
            dataset_fn,
            steps_per_epoch,
            total_steps,
            training.training_callbacks(config, total_steps),
        )
        # The longest caption, read from the annotations once.
        text_length = training.caption_text_length(config)
        files = training.save_models(pretrainer, config.output_dir, text_length)

    gallery = training.caption_eval_data(
        config.eval_annotations or training.eval_caption_file(config, args.eval_split),
        config.image_root if config.eval_annotations else None,
        text_length,
        config.image_size,
    )
    recall = RetrievalEvaluator(pretrainer, k_test=args.k_test).evaluate(
        gallery["images"],
        gallery["token_ids"],
        gallery["padding_mask"],
        gallery["text_to_image"],
    )
    step_log = os.path.join(config.output_dir, "steps.csv")
    files["loss plot"] = training.plot_losses(
        step_log, os.path.join(config.output_dir, "losses.png")
    )
    log = training.read_step_log(step_log)
    final = {name: values[-1] for name, values in log.items() if name != "step"}
    training.print_summary(
        f"TRIPS retrieval fine-tuning ({config.model}, {keras.backend.backend()})",
        timing,
        config.batch_size,
        final,
        files,
        extra={name: f"{100 * value:.1f}%" for name, value in recall.items()},
    )
    return {"config": config, "timing": timing, "recall": recall, "files": files}


if __name__ == "__main__":
    main()

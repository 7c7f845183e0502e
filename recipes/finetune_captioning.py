"""Fine-tune TRIPS for image captioning and report BLEU-4 and CIDEr-D.

A causal text decoder cross-attends to the image tokens, which the prompt
"a picture of" selects; captions are generated greedily or by beam search.
From a saved backbone or pre-trainer (`--init-from`), on the built-in scenes'
captions (default) or caption files (`--data albef|coco --train-annotations
FILE --eval-annotations albef_test.json`, the evaluation file an ALBEF-style
list `{"image", "caption": [references]}`). Ends with BLEU-4 and CIDEr-D
beside the most-frequent-caption baseline.

    KERAS_BACKEND=jax python recipes/finetune_captioning.py --sampler beam
"""

import task_finetuning

from keras_trips.models import TRIPSCaptioner


def main(argv=None):
    """Runs the recipe; returns its summary (results, baseline, files)."""
    parser = task_finetuning.task_parser(
        "captioning", __doc__.splitlines()[0], {"batch_size": 64}
    )
    captioning = parser.add_argument_group("captioning")
    captioning.add_argument("--decoder-layers", type=int, default=2)
    captioning.add_argument("--max-length", type=int, default=20)
    captioning.add_argument(
        "--sampler",
        default="greedy",
        choices=("greedy", "beam"),
        help="beam: 4 beams ranked by length-normalised log-likelihood.",
    )
    args = task_finetuning.parse(parser, argv)
    if args.max_length < 1:
        parser.error("--max-length must be at least 1.")

    def make_task(backbone, data):
        return TRIPSCaptioner(backbone, num_layers=args.decoder_layers)

    return task_finetuning.run(
        "captioning",
        args,
        make_task,
        TRIPSCaptioner,
        generation={"max_length": args.max_length, "sampler": args.sampler},
    )


if __name__ == "__main__":
    main()

"""Fine-tune TRIPS for NLVR2 (a statement about two images) and report accuracy.

Each image is encoded under the statement's guidance; the two fused [CLS]
states, concatenated, are classified. From a saved backbone or pre-trainer
(`--init-from`), on the built-in scenes' two-image statements (default) or
NLVR2 JSON lines (`--data nlvr2 --train-annotations train.jsonl
--eval-annotations dev.jsonl`). Ends with the accuracy beside the
majority-label baseline.

    KERAS_BACKEND=jax python recipes/finetune_nlvr2.py
"""

import task_finetuning

from keras_trips.models import TRIPSNLVR2


def main(argv=None):
    """Runs the recipe; returns its summary (results, baseline, files)."""
    parser = task_finetuning.task_parser("nlvr2", __doc__.splitlines()[0], {})
    args = task_finetuning.parse(parser, argv)
    return task_finetuning.run(
        "nlvr2", args, lambda backbone, data: TRIPSNLVR2(backbone), TRIPSNLVR2
    )


if __name__ == "__main__":
    main()

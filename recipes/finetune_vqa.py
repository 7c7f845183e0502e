"""Fine-tune TRIPS for visual question answering and report VQA accuracy.

Answer classification with VQA soft-score targets (binary cross-entropy),
from a saved backbone or pre-trainer (`--init-from`), on the built-in scenes
(default), easy-vqa (`--data easy-vqa`) or VQA v2 files (`--data vqa-v2
--train-questions Q --train-annotations A --eval-questions Q --eval-annotations
A`). Ends with the official VQA accuracy beside the majority-answer baseline.

    KERAS_BACKEND=jax python recipes/finetune_vqa.py --data easy-vqa
"""

import task_finetuning

from keras_trips.models import TRIPSVQA


def main(argv=None):
    """Runs the recipe; returns its summary (results, baseline, files)."""
    parser = task_finetuning.task_parser("vqa", __doc__.splitlines()[0], {})
    args = task_finetuning.parse(parser, argv)
    if args.data == "vqa-v2" and not (args.train_questions and args.eval_questions):
        parser.error("--data vqa-v2 needs --train-questions and --eval-questions.")

    def make_task(backbone, data):
        return TRIPSVQA(backbone, answers=data["answers"])

    return task_finetuning.run("vqa", args, make_task, TRIPSVQA)


if __name__ == "__main__":
    main()

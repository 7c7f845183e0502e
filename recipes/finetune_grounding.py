"""Fine-tune TRIPS for visual grounding (RefCOCO style) and report accuracy at
IoU >= 0.5.

Box regression with L1 + GIoU losses (`--box-head attention`, the default:
the box centre from the fused [CLS]'s attention over the image tokens and
its size from an MLP; `--box-head cls`: the whole box from the fused [CLS],
as in the paper), from a saved backbone or pre-trainer (`--init-from`), on
the built-in scenes' referring expressions (default) or RefCOCO-style JSON
(`--data refcoco --train-annotations refs_train.json --eval-annotations
refs_val.json`: a list of `{"image", "text" or "sentences", "bbox"}`, COCO
xywh pixels). Ends with the accuracy beside the mean-box baseline.

    KERAS_BACKEND=jax python recipes/finetune_grounding.py
"""

import task_finetuning

from keras_trips.models import TRIPSGrounding
from keras_trips.models.trips_grounding import BOX_HEADS


def main(argv=None):
    """Runs the recipe; returns its summary (results, baseline, files)."""
    parser = task_finetuning.task_parser("grounding", __doc__.splitlines()[0], {})
    parser.add_argument(
        "--box-head",
        default="attention",
        choices=BOX_HEADS,
        help="The box from the fused [CLS] alone (the paper), or its centre "
        "from the [CLS]'s attention over the image tokens (learns faster).",
    )
    args = task_finetuning.parse(parser, argv)
    return task_finetuning.run(
        "grounding",
        args,
        lambda backbone, data: TRIPSGrounding(backbone, box_head=args.box_head),
        TRIPSGrounding,
    )


if __name__ == "__main__":
    main()

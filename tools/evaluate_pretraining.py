"""Print what a saved TRIPS pre-trainer learned: retrieval and selection.

Retrieval (ITC, and ITC with the ITM re-rank) of an ALBEF-style caption
list of held-out images, and, given phrases with boxes (a RefCOCO-style
JSON list with "object_bboxes", as the built-in scenes write per split),
how much of the named object each guidance keeps. Every figure is printed
beside its chance level.

    python tools/evaluate_pretraining.py runs/pretrain/pretrainer.keras \\
        test_captions.json --phrases test_refs.json
    python tools/evaluate_pretraining.py runs/pretrain/pretrainer.keras --scenes
"""

import argparse
import os
import sys

# The recipes' filter keeps TensorFlow's C++ start-up notes off the console.
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes")
)
import native_logs

native_logs.filter_native_logs()

from keras_trips.models import TRIPSPretrainer  # noqa: E402
from keras_trips.training import TrainingConfig, eval_files, evaluation  # noqa: E402
from keras_trips.utils import load_model  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", help="a saved .keras TRIPSPretrainer or its preset directory"
    )
    parser.add_argument(
        "captions", nargs="?", help="ALBEF-style caption list of test images"
    )
    parser.add_argument("--phrases", help="phrases with boxes (selection quality)")
    parser.add_argument("--image-root", help="default: each file's folder")
    parser.add_argument(
        "--scenes",
        action="store_true",
        help="the built-in scenes' test split, as the main job generates it",
    )
    parser.add_argument("--text-length", type=int, default=30)
    parser.add_argument("--k-test", type=int, default=16, help="ITM shortlist")
    parser.add_argument("--max-phrases", type=int, default=400)
    args = parser.parse_args(argv)
    if bool(args.captions) == args.scenes:
        parser.error("give a caption file or --scenes (one of them)")
    return args


def main(argv=None):
    args = parse_args(argv)
    model = load_model(args.model)
    if not isinstance(model, TRIPSPretrainer):
        sys.exit(
            f"{args.model} holds a {type(model).__name__}; retrieval needs a "
            "TRIPSPretrainer (its ITC projections and ITM head)."
        )
    captions, phrases = args.captions, args.phrases
    if args.scenes:
        size = model.backbone.vision_encoder.image_shape[0]
        captions, scene_phrases = eval_files(TrainingConfig(image_size=size))
        phrases = phrases or scene_phrases
    results = evaluation.evaluate_pretraining(
        model,
        captions,
        phrases,
        image_root=args.image_root,
        sequence_length=min(args.text_length, model.backbone.max_sequence_length),
        k_test=args.k_test,
        max_phrases=args.max_phrases,
    )
    print("\n".join(evaluation.format_evaluation(results)))
    return results


if __name__ == "__main__":
    main()

"""What a pre-trained model learned: retrieval and selection quality on held-out
data, each figure beside its chance level."""

import math
import os

import keras
import numpy as np

from keras_trips.metrics import (
    RetrievalEvaluator,
    SelectionEvaluator,
    selection_eval_data,
)
from keras_trips.training.data import caption_eval_data
from keras_trips.visualization import write_selection_examples

# ITM scores B positives against 2B hard negatives: predicting "no match"
# always is right 2 times in 3.
ITM_PRIOR = 2 / 3


def retrieval_chance(num_images, text_images, k):
    """Recall@k of a ranking at random: `(image_to_text, text_to_image)`.

    Text to image: k of the N images. Image to text: one of the image's own
    captions among k of the M texts, averaged over the images.
    """
    num_texts = len(text_images)
    text_to_image = min(1.0, k / num_images)
    counts = [list(text_images).count(i) for i in range(num_images)]
    # k past the M texts ranks them all (and would divide by zero).
    misses = [
        math.prod(
            (num_texts - c - j) / (num_texts - j) for j in range(min(k, num_texts))
        )
        for c in counts
    ]
    image_to_text = 1.0 - sum(misses) / len(misses)
    return image_to_text, text_to_image


def evaluate_pretraining(
    pretrainer,
    caption_file,
    refs_file=None,
    image_root=None,
    sequence_length=30,
    k_test=16,
    keep_rates=None,
    max_phrases=400,
):
    """Retrieval and selection quality of a pre-trained model on test data.

    Args:
        pretrainer: a `TRIPSPretrainer`.
        caption_file: an ALBEF caption list of test images (the gallery).
        refs_file: None, or phrases with boxes (`selection_eval_data`) for
            selection quality.
        image_root: the image folder of both files; default: each file's.
        sequence_length: int. Text length the texts are padded to.
        k_test: int. ITC shortlist re-ranked by ITM.
        keep_rates: keep rates of the selection evaluation (default: the
            model's and 0.5).
        max_phrases: int. Phrases evaluated (the first ones).

    Returns:
        dict: `"retrieval"` (the `RetrievalEvaluator` figures, ITC and ITM
        re-ranked), `"retrieval_chance"`, `"num_images"`, `"num_texts"`, and
        with `refs_file` `"selection"` (`SelectionEvaluator.evaluate`) and
        `"num_phrases"`.
    """
    backbone = pretrainer.backbone
    image_size = backbone.vision_encoder.image_shape[0]
    gallery = caption_eval_data(caption_file, image_root, sequence_length, image_size)
    retrieval = RetrievalEvaluator(pretrainer, k_test=k_test).evaluate(
        gallery["images"],
        gallery["token_ids"],
        gallery["padding_mask"],
        gallery["text_to_image"],
    )
    num_images = len(gallery["images"])
    chance = {}
    for k in (1, 5, 10):
        chance[f"image_to_text_r{k}"], chance[f"text_to_image_r{k}"] = retrieval_chance(
            num_images, gallery["text_to_image"], k
        )
    results = {
        "retrieval": retrieval,
        "retrieval_chance": chance,
        "num_images": num_images,
        "num_texts": len(gallery["token_ids"]),
    }
    if refs_file is not None:
        phrases = selection_eval_data(
            refs_file,
            image_root,
            image_size=image_size,
            patch_size=backbone.patch_size,
            sequence_length=sequence_length,
        )
        phrases = {name: values[:max_phrases] for name, values in phrases.items()}
        results["selection"] = SelectionEvaluator(backbone, keep_rates).evaluate(
            **phrases
        )
        results["num_phrases"] = len(phrases["images"])
    return results


def format_evaluation(results):
    """The evaluation of `evaluate_pretraining` as printable lines."""
    retrieval, chance = results["retrieval"], results["retrieval_chance"]
    lines = [
        f"Retrieval on {results['num_images']} unseen test images and "
        f"{results['num_texts']} captions (chance in brackets):",
        f"  {'':30}{'R@1':>15}{'R@5':>15}{'R@10':>15}",
    ]
    for direction, name in (
        ("text_to_image", "text->image"),
        ("image_to_text", "image->text"),
    ):
        for scorer, prefix in (("ITC", "itc_"), ("ITC + ITM re-rank", "")):
            cells = [
                f"{100 * retrieval[f'{prefix}{direction}_r{k}']:5.1f}% "
                f"({100 * chance[f'{direction}_r{k}']:4.1f}%)"
                for k in (1, 5, 10)
            ]
            lines.append(
                f"  {name + ' ' + scorer:30}" + "".join(f"{c:>15}" for c in cells)
            )
    selection = results.get("selection")
    if selection:
        lines += [
            f"Selection of the named object ({results['num_phrases']} referring "
            "expressions of unseen images):",
            "  recall: the object's patches kept; precision: its share of the kept",
            "  patches that lie on any object (chance "
            f"{100 * selection['chance_precision']:.1f}%).",
            f"  {'guidance':10}{'keep rate':>10}{'kept':>8}{'recall':>9}{'precision':>11}",
        ]
        for row in selection["results"]:
            lines.append(
                f"  {row['guidance']:10}{row['keep_rate']!s:>10}"
                f"{100 * row['kept_fraction']:7.1f}%{100 * row['object_recall']:8.1f}%"
                f"{100 * row['object_precision']:10.1f}%"
            )
    return lines


def format_training_outcome(final_logs, num_candidates):
    """The last step's ITC loss and ITM accuracy beside their chance levels."""
    lines = []
    if "itc_loss" in final_logs:
        lines.append(
            f"  itc_loss {final_logs['itc_loss']:.4f} (chance ln({num_candidates})"
            f" = {math.log(num_candidates):.4f})"
        )
    if "itm_accuracy" in final_logs:
        lines.append(
            f"  itm_accuracy {final_logs['itm_accuracy']:.4f} (prior, always "
            f"'no match': {ITM_PRIOR:.4f})"
        )
    return lines


def selection_pictures(model, phrases_file, out_dir, count=4):
    """Pictures (`write_selection_examples`) of what selection keeps for the
    first `count` phrases of a phrases-with-boxes file; returns the paths."""
    from keras_trips.data.validation import (
        default_image_root,
        read_json,
        require_list,
    )

    rows = require_list(read_json(phrases_file), phrases_file)[:count]
    image_root = default_image_root(phrases_file, None)
    size = model.backbone.vision_encoder.image_shape[:2]
    images = np.stack(
        [
            np.asarray(
                keras.utils.load_img(
                    os.path.join(image_root, row["image"]), target_size=size
                ),
                "uint8",
            )
            for row in rows
        ]
    )
    return write_selection_examples(
        model, images, [row["text"] for row in rows], out_dir
    )

"""VQA readers: VQA v2 files and easy-vqa.

They yield `(features, answer_scores)`: the features of `captions.py` (the
question as text, no MLM masking by default) and float32 `(B, num_answers)`
soft scores over the answer vocabulary. Scores follow the official VQA v2
evaluation: an answer given by n of the 10 annotators scores the mean, over
the 10 leave-one-out subsets of 9 annotators, of min(1, matches / 3), that is
(n * min(1, (n - 1) / 3) + (10 - n) * min(1, n / 3)) / 10, after the
official-style answer normalisation (lower case, punctuation, number words,
articles). A question with a single recorded answer scores it 1.
"""

import collections
import os
import re

from keras_trips.data.pipeline import build_dataset
from keras_trips.data.trips_text_preprocessor import TRIPSTextPreprocessor
from keras_trips.data.validation import (
    ROW_ERRORS,
    MalformedRow,
    SkipLog,
    default_image_root,
    keep_rows_with_good_images,
    parse_rows,
    read_json,
    require_list,
    text_field,
)

COCO_IMAGE_FILENAME = "COCO_{data_subtype}_{image_id:012d}.jpg"
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
# Punctuation is dropped, except a period inside a number ("2.5").
_PUNCTUATION = re.compile(r"(?<!\d)\.(?!\d)|[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~']")


def normalize_answer(answer):
    """Normalise an answer string as the official VQA evaluation does
    (lower case, punctuation, number words to digits, no articles)."""
    answer = _PUNCTUATION.sub("", answer.lower().replace("\n", " ").replace("\t", " "))
    words = [_NUMBER_WORDS.get(w, w) for w in answer.split() if w not in _ARTICLES]
    return " ".join(words)


def vqa_soft_scores(answers):
    """Map each distinct (normalised) answer in `answers`, the list of
    annotator answers to one question, to its official VQA soft score."""
    answers = [normalize_answer(a) for a in answers]
    counts = collections.Counter(answers)
    if len(answers) == 1:
        return {answers[0]: 1.0}
    total = len(answers)
    return {
        answer: (n * min(1.0, (n - 1) / 3) + (total - n) * min(1.0, n / 3)) / total
        for answer, n in counts.items()
    }


def vqa_answer_vocabulary(annotations_file, num_answers=3129):
    """The `num_answers` most frequent (normalised) `multiple_choice_answer`s
    of a VQA v2 annotations file, most frequent first (ties alphabetical)."""
    annotations = require_list(
        read_json(annotations_file), annotations_file, "annotations"
    )
    counts = collections.Counter(
        normalize_answer(a["multiple_choice_answer"])
        for a in annotations
        if isinstance(a, dict) and isinstance(a.get("multiple_choice_answer"), str)
    )
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [answer for answer, _ in ranked[:num_answers]]


def read_vqa_records(
    questions_file,
    annotations_file=None,
    image_root=None,
    image_filename=COCO_IMAGE_FILENAME,
    skips=None,
):
    """Parse VQA v2 questions (+ annotations) into records `{"row_id",
    "image" (path), "question", "answers" (list, None without
    annotations)}`; malformed rows are skipped and counted in `skips`.

    Returns:
        `(records, total)`: the parsed records and the number of questions.
    """
    if skips is None:
        skips = SkipLog(questions_file)
    data = read_json(questions_file)
    questions = require_list(data, questions_file, "questions")
    image_root = default_image_root(questions_file, image_root)
    answers_by_question = {}
    if annotations_file is not None:
        annotations = require_list(
            read_json(annotations_file), annotations_file, "annotations"
        )
        for annotation in annotations:
            # A malformed annotation leaves its question without answers,
            # which is where it is counted.
            try:
                answers = [a["answer"] for a in annotation["answers"]]
                if all(isinstance(a, str) for a in answers):
                    answers_by_question[annotation["question_id"]] = answers
            except ROW_ERRORS:
                continue
    subtype = data.get("data_subtype", "")

    def parse(question):
        image = question.get("image") if isinstance(question, dict) else None
        if image is None:
            image = image_filename.format(
                data_subtype=subtype, image_id=question["image_id"]
            )
        elif not isinstance(image, str):
            raise MalformedRow(f"'image' must be a string, got {image!r:.40}")
        answers = answers_by_question.get(question["question_id"])
        if annotations_file is not None and answers is None:
            raise MalformedRow("no answers for its 'question_id'")
        return {
            "image": os.path.join(image_root, image),
            "question": text_field(question, "question"),
            "answers": answers,
        }

    records = parse_rows(questions, parse, skips, "question")
    return records, len(questions)


def vqa_dataset(
    questions_file,
    annotations_file=None,
    image_root=None,
    answer_vocabulary=None,
    num_answers=3129,
    preprocessor=None,
    batch_size=32,
    image_size=64,
    training=True,
    skip_unanswerable=None,
    image_filename=COCO_IMAGE_FILENAME,
    validate_images="full",
    **kwargs,
):
    """Read VQA v2 questions (+ annotations) into batched
    `(features, answer_scores)`, or features only without annotations.

    Args:
        questions_file: `{"data_subtype": ..., "questions": [{"question_id",
            "image_id", "question"}]}`. A question may name its image
            directly with an `"image"` path (used by the scenes dataset).
        annotations_file: `{"annotations": [{"question_id", "answers":
            [{"answer"}], "multiple_choice_answer"}]}`, or None (test sets).
        image_root: image folder; defaults to the questions file's folder.
        answer_vocabulary: list of answers; defaults to the `num_answers`
            most frequent of `annotations_file` (`vqa_answer_vocabulary`;
            call it to get the same list).
        preprocessor: a `TRIPSTextPreprocessor`; defaults to one without MLM.
        training: bool. Shuffle and random-resized-crop (no flip: answers
            may say "left"; `random_crop_scale`, the crop's area range,
            defaults to (0.5, 1), None for no crop).
        skip_unanswerable: drop questions with no answer in the vocabulary;
            defaults to `training`.
        image_filename: format of the image path from `data_subtype` and
            `image_id`, for questions without `"image"`.
        validate_images, **kwargs: as in `albef_json_dataset`.
    """
    skips = SkipLog(questions_file)
    records, total = read_vqa_records(
        questions_file, annotations_file, image_root, image_filename, skips
    )
    if annotations_file is not None and answer_vocabulary is None:
        answer_vocabulary = vqa_answer_vocabulary(annotations_file, num_answers)
    return vqa_records_dataset(
        records,
        skips,
        total,
        answer_vocabulary,
        preprocessor,
        batch_size,
        image_size,
        training,
        training if skip_unanswerable is None else skip_unanswerable,
        validate_images,
        **kwargs,
    )


def easy_vqa_records(split="train"):
    """The questions of the easy-vqa package (PyPI `easy-vqa`) as VQA
    records `{"row_id", "image" (path), "question", "answers"}`.

    Args:
        split: `"train"` or `"test"`.
    """
    try:
        import easy_vqa
    except ImportError as error:
        raise ImportError(
            "easy-vqa data needs the easy-vqa package: `pip install easy-vqa==1.0`."
        ) from error
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    questions, answers, image_ids = getattr(easy_vqa, f"get_{split}_questions")()
    image_paths = getattr(easy_vqa, f"get_{split}_image_paths")()
    return [
        {
            "row_id": f"question {index}",
            "image": image_paths[image_id],
            "question": question,
            "answers": [answer],
        }
        for index, (question, answer, image_id) in enumerate(
            zip(questions, answers, image_ids, strict=True)
        )
    ]


def vqa_caption_rows(records):
    """Question-answer pairs as captions of their images: an ALBEF-style
    caption list (`albef_json_dataset`, `recipes/pretrain.py --data-format
    albef`) for pre-training on a VQA training set before fine-tuning on it.

    Each answered question becomes "<question> <answer>", with its most
    frequent normalised answer (the first on a tie). Questions answered
    "yes" or "no" are left out: such a pair describes the image only through
    its question's premise, and half of them deny it (on easy-vqa, where
    three questions in four are yes/no, keeping them left the pre-trained
    vision tower as blind to shape as no in-domain pre-training did).

    Args:
        records: VQA records `{"image", "question", "answers"}`
            (`read_vqa_records`, `easy_vqa_records`).

    Returns:
        list of `{"image": path, "caption": [str, ...]}`, one per image with
        at least one caption, in the order images first appear.
    """
    captions = {}
    for record in records:
        answers = [normalize_answer(a) for a in record["answers"] or ()]
        if not answers:
            continue
        answer = collections.Counter(answers).most_common(1)[0][0]
        if answer in ("yes", "no", ""):
            continue
        captions.setdefault(record["image"], []).append(
            f"{record['question']} {answer}"
        )
    return [{"image": image, "caption": texts} for image, texts in captions.items()]


def easy_vqa_dataset(split="train", **kwargs):
    """The easy-vqa dataset (PyPI `easy-vqa`: 64 px shapes, 13 answers) as
    `(features, answer_scores)` through the VQA path, with its 13 answers as
    the vocabulary (`easy_vqa.get_answers()` order).

    Args:
        split: `"train"` or `"test"`.
        **kwargs: as in `vqa_dataset` (`batch_size`, `image_size`,
            `training`, ...); no random crop unless `random_crop_scale` is
            given.
    """
    records = easy_vqa_records(split)  # checks the package is there
    import easy_vqa

    kwargs.setdefault("training", split == "train")
    # Each image holds one shape that a crop can cut off or squash, and the
    # answer would no longer hold.
    kwargs.setdefault("random_crop_scale", None)
    training = kwargs.pop("training")
    return vqa_records_dataset(
        records,
        SkipLog(f"easy-vqa {split}"),
        len(records),
        easy_vqa.get_answers(),
        kwargs.pop("preprocessor", None),
        kwargs.pop("batch_size", 32),
        kwargs.pop("image_size", 64),
        training,
        kwargs.pop("skip_unanswerable", training),
        kwargs.pop("validate_images", "full"),
        **kwargs,
    )


def vqa_records_dataset(
    records,
    skips,
    total,
    answer_vocabulary,
    preprocessor,
    batch_size,
    image_size,
    training,
    skip_unanswerable,
    validate_images,
    **kwargs,
):
    """Build the VQA dataset from parsed records `{"row_id", "image",
    "question", "answers"}` (answers None: no targets)."""
    records = keep_rows_with_good_images(records, skips, validate_images)
    with_targets = bool(records) and records[0]["answers"] is not None
    columns = {
        "image": [r["image"] for r in records],
        "text": [r["question"] for r in records],
    }
    if with_targets:
        index_of = {normalize_answer(a): i for i, a in enumerate(answer_vocabulary)}
        targets = []
        kept_columns = {"image": [], "text": []}
        for record, image, text in zip(
            records, columns["image"], columns["text"], strict=True
        ):
            scores = {
                index_of[a]: s
                for a, s in vqa_soft_scores(record["answers"]).items()
                if a in index_of
            }
            if skip_unanswerable and not scores:
                skips.add(record["row_id"], "unanswerable: no answer in the vocabulary")
                continue
            targets.append(scores)
            kept_columns["image"].append(image)
            kept_columns["text"].append(text)
        columns = kept_columns
        width = max(1, max(len(t) for t in targets)) if targets else 1
        columns["answer_indices"] = [list(t) + [-1] * (width - len(t)) for t in targets]
        columns["answer_weights"] = [
            list(t.values()) + [0.0] * (width - len(t)) for t in targets
        ]
    skips.report(total, kept=len(columns["image"]))
    return build_dataset(
        columns,
        preprocessor or TRIPSTextPreprocessor(),
        batch_size,
        image_size,
        target_key="answer_scores" if with_targets else None,
        num_answers=len(answer_vocabulary) if with_targets else None,
        random_crop_scale=kwargs.pop(
            "random_crop_scale", (0.5, 1.0) if training else None
        ),
        shuffle=kwargs.pop("shuffle", training),
        source=skips.source,
        **kwargs,
    )

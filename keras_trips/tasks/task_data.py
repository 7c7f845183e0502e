"""The downstream tasks' datasets: the built-in scenes, easy-vqa, or files in
the standard formats (VQA v2 JSON, NLVR2 JSON lines, RefCOCO-style JSON,
ALBEF or COCO caption JSON)."""

import json

from keras_trips import data
from keras_trips.data.captions import read_albef_json
from keras_trips.data.validation import read_json
from keras_trips.datasets import scenes

# The data each task reads; the first is the default.
TASK_FORMATS = {
    "vqa": ("scenes", "easy-vqa", "vqa-v2"),
    "nlvr2": ("scenes", "nlvr2"),
    "captioning": ("scenes", "albef", "coco"),
    "grounding": ("scenes", "refcoco"),
}
_SCENE_TASKS = {
    "vqa": "vqa",
    "nlvr2": "nlvr2",
    "captioning": "captions",
    "grounding": "refcoco",
}
# Files each format needs, per split.
_FILES = {
    "vqa-v2": ("questions", "annotations"),
    "nlvr2": ("annotations",),
    "refcoco": ("annotations",),
    "albef": ("annotations",),
    "coco": ("annotations",),
}


def task_datasets(
    task,
    data_format="scenes",
    train_files=None,
    eval_files=None,
    image_root=None,
    eval_image_root=None,
    batch_size=32,
    eval_batch_size=50,
    image_size=64,
    sequence_length=30,
    num_scenes=3000,
    num_eval_scenes=200,
    eval_split="val",
    seed=0,
):
    """The training stream and the evaluation set of a task.

    Args:
        task: `"vqa"`, `"nlvr2"`, `"captioning"` or `"grounding"`.
        data_format: one of `TASK_FORMATS[task]`.
        train_files, eval_files: dicts of the format's files: VQA v2
            `{"questions", "annotations"}`, the others `{"annotations"}`
            (captioning evaluates on an ALBEF-style list, `{"image",
            "caption": [references]}`, as ALBEF's COCO Karpathy test file).
        image_root, eval_image_root: image folders (default: each
            annotation file's folder).
        batch_size: int. Training batch. eval_batch_size: int.
        image_size: int. sequence_length: int. Text length.
        num_scenes, num_eval_scenes, eval_split: the built-in scenes (train
            size, val/test size, the split evaluated).
        seed: int. Shuffling and augmentation of files (the scenes shuffle
            with their reader's default).

    Returns:
        dict: `"train"` (endless, shuffled, augmented batches), `"eval"`
        (one pass in file order; for captioning, one example per image) and
        per task `"answers"` (VQA: the answer vocabulary),
        `"eval_references"` and `"train_captions"` (captioning).
    """
    if task not in TASK_FORMATS:
        raise ValueError(f"task must be one of {sorted(TASK_FORMATS)}, got {task!r}")
    if data_format not in TASK_FORMATS[task]:
        raise ValueError(
            f"{task} reads {TASK_FORMATS[task]}; got data format {data_format!r}"
        )
    for files, split in ((train_files, "train"), (eval_files, "eval")):
        needed = _FILES.get(data_format, ())
        missing = [name for name in needed if not (files or {}).get(name)]
        if missing:
            raise ValueError(
                f"Data format {data_format!r} needs the {split} files {missing}."
            )
    preprocessor = data.TRIPSTextPreprocessor(sequence_length=sequence_length)
    # The scenes' own `seed` is their generation's: shuffling keeps its default.
    common = dict(preprocessor=preprocessor, image_size=image_size)
    if data_format != "scenes":
        common["seed"] = seed
    train_options = dict(batch_size=batch_size, training=True, **common)
    eval_options = dict(batch_size=eval_batch_size, training=False, **common)
    result = {}
    if data_format == "scenes":
        files = scenes.load_scenes(
            num_train=num_scenes,
            num_val=num_eval_scenes,
            num_test=num_eval_scenes,
            image_size=image_size,
            seed=0,
        )
        scene_options = dict(
            task=_SCENE_TASKS[task],
            num_train=num_scenes,
            num_val=num_eval_scenes,
            num_test=num_eval_scenes,
        )
        if task == "captioning":
            train_files = {"annotations": files["train"]["captions"]}
            eval_files = {"annotations": files[eval_split]["captions"]}
            data_format = "albef"
        else:
            result["train"] = scenes.scenes_dataset(
                "train", **scene_options, **train_options
            )
            result["eval"] = scenes.scenes_dataset(
                eval_split, **scene_options, **eval_options
            )
            if task == "vqa":
                with open(files["metadata"]) as file:
                    result["answers"] = json.load(file)["answers"]
    if data_format == "easy-vqa":
        import easy_vqa

        result["train"] = data.easy_vqa_dataset("train", **train_options)
        result["eval"] = data.easy_vqa_dataset("test", **eval_options)
        result["answers"] = easy_vqa.get_answers()
    elif data_format == "vqa-v2":
        answers = data.vqa_answer_vocabulary(train_files["annotations"])
        result["answers"] = answers
        result["train"] = data.vqa_dataset(
            train_files["questions"],
            train_files["annotations"],
            image_root,
            answer_vocabulary=answers,
            **train_options,
        )
        result["eval"] = data.vqa_dataset(
            eval_files["questions"],
            eval_files["annotations"],
            eval_image_root,
            answer_vocabulary=answers,
            **eval_options,
        )
    elif data_format in ("nlvr2", "refcoco"):
        reader = data.nlvr2_dataset if data_format == "nlvr2" else data.refcoco_dataset
        result["train"] = reader(
            train_files["annotations"], image_root, **train_options
        )
        result["eval"] = reader(
            eval_files["annotations"], eval_image_root, **eval_options
        )
    elif data_format in ("albef", "coco"):
        reader = (
            data.albef_json_dataset
            if data_format == "albef"
            else data.coco_captions_dataset
        )
        result["train"] = reader(
            train_files["annotations"], image_root, captions="all", **train_options
        )
        result["train_captions"] = _train_captions(
            data_format, train_files["annotations"], image_root
        )
        rows = read_albef_json(eval_files["annotations"], eval_image_root)
        result["eval_references"] = [row["captions"] for row in rows]
        # One example per image, in file order, every image (no remainder
        # dropped): its references are `eval_references` in the same order.
        result["eval"] = data.albef_json_dataset(
            eval_files["annotations"],
            eval_image_root,
            captions="random",
            drop_remainder=False,
            **eval_options,
        )
    result["train"] = result["train"].repeat()
    return result


def _train_captions(data_format, annotation_file, image_root):
    """Every training caption (for the most-frequent-caption baseline)."""
    if data_format == "albef":
        rows = read_albef_json(annotation_file, image_root, validate_images=None)
        return [caption for row in rows for caption in row["captions"]]
    annotations = read_json(annotation_file).get("annotations", [])
    return [a["caption"] for a in annotations if isinstance(a.get("caption"), str)]

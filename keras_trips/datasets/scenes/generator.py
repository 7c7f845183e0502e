"""Writing scene datasets to disk and loading them through the data readers."""

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from keras_trips.datasets.scenes import catalog, language
from keras_trips.datasets.scenes.layout import sample_scene
from keras_trips.datasets.scenes.sprite_bank import SpriteBank
from keras_trips.utils.cache import cache_root

SPLITS = ("train", "val", "test")
TASKS = ("pretraining", "captions", "vqa", "refcoco", "nlvr2")
# Bump when the generator's output changes, so cached copies are rebuilt.
GENERATOR_VERSION = 3
_SEED_STREAMS = {"held_out": 0, "train": 1, "val": 2, "test": 3}


def make_scenes(
    out_dir,
    num_train=2000,
    num_val=200,
    num_test=200,
    image_size=64,
    seed=0,
    held_out_fraction=0.1,
    captions_per_image=3,
):
    """Generate the scenes dataset into `out_dir` and return its file paths.

    Writes PNG images under `images/<split>/` and, per split, annotation
    files in the formats of `keras_trips.data`: `<split>_captions.json`
    (ALBEF list), `<split>_vqa_questions.json` + `<split>_vqa_annotations.json`
    (VQA v2, ten agreeing answers), `<split>_refs.json` (referring expressions,
    COCO xywh pixel boxes, with every object's box in `"object_bboxes"`), `<split>_nlvr.jsonl` (statements about two images)
    and `<split>_scenes.json` (the scene graphs), plus `metadata.json` (the
    categories, the held-out category pairs and the VQA answer list).

    The test split holds `held_out_fraction` of all pairs of distinct
    categories: every test scene contains one of them (and its first caption
    names it), and no train or val scene contains any. Test scenes also draw
    Fashion-MNIST photos from its test set. Output is a deterministic
    function of the arguments (and of which sprite packages are installed).

    Returns:
        dict: `{"metadata": path, split: {"captions": path, "vqa_questions":
        path, "vqa_annotations": path, "refs": path, "nlvr": path, "scenes":
        path}}`, absolute paths.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    categories = catalog.available_categories()
    names = [c.name for c in categories]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    pairs = [tuple(sorted(p)) for p in pairs]
    rng = np.random.default_rng([seed, _SEED_STREAMS["held_out"]])
    num_held_out = max(1, round(held_out_fraction * len(pairs)))
    held_out = sorted(
        pairs[i] for i in rng.choice(len(pairs), num_held_out, replace=False)
    )

    counts = {"train": num_train, "val": num_val, "test": num_test}
    files = {"metadata": os.path.join(out_dir, "metadata.json")}
    for split in SPLITS:
        files[split] = _write_split(
            out_dir,
            split,
            counts[split],
            categories,
            held_out,
            image_size,
            seed,
            captions_per_image,
        )
    metadata = {
        "params": {
            "num_train": num_train,
            "num_val": num_val,
            "num_test": num_test,
            "image_size": image_size,
            "seed": seed,
            "held_out_fraction": held_out_fraction,
            "captions_per_image": captions_per_image,
        },
        "categories": names,
        "held_out_pairs": [list(p) for p in held_out],
        "answers": language.ANSWERS,
        "files": {k: v for k, v in files.items() if k != "metadata"},
    }
    _write_json(files["metadata"], metadata)
    return files


def _write_split(
    out_dir, split, count, categories, held_out, image_size, seed, captions_per_image
):
    bank = SpriteBank("t10k" if split == "test" else "train")
    held_out_partners = {}
    for a, b in held_out:
        held_out_partners.setdefault(a, set()).add(b)
        held_out_partners.setdefault(b, set()).add(a)
    image_dir = os.path.join("images", split)
    os.makedirs(os.path.join(out_dir, image_dir), exist_ok=True)
    stream = _SEED_STREAMS[split]
    caption_rows, questions, annotations, refs, scenes = [], [], [], [], []
    for index in range(count):
        rng = np.random.default_rng([seed, stream, index])
        required_pair = None
        if split == "test":
            required_pair = held_out[int(rng.integers(len(held_out)))]
        scene, image = sample_scene(
            rng, categories, image_size, bank, held_out_partners, required_pair
        )
        image_path = os.path.join(image_dir, f"{index:06d}.png")
        Image.fromarray(image).save(os.path.join(out_dir, image_path), compress_level=1)
        scene["image"] = image_path
        scenes.append(scene)
        caption_rows.append(
            {
                "image": image_path,
                "caption": language.captions(
                    scene, rng, required_pair, count=captions_per_image
                ),
            }
        )
        for k, (question, answer, kind) in enumerate(
            language.questions(scene, rng, categories)
        ):
            question_id = index * 10 + k
            questions.append(
                {
                    "question_id": question_id,
                    "image_id": index,
                    "image": image_path,
                    "question": question,
                }
            )
            annotations.append(
                {
                    "question_id": question_id,
                    "image_id": index,
                    "question_type": kind,
                    "answer_type": "yes/no" if answer in ("yes", "no") else "other",
                    "multiple_choice_answer": answer,
                    "answers": [
                        {"answer": answer, "answer_id": i + 1} for i in range(10)
                    ],
                }
            )
        object_bboxes = [_xywh(o["box"]) for o in scene["objects"]]
        for text, obj in language.referring_expressions(scene):
            refs.append(
                {
                    "image": image_path,
                    "text": text,
                    "bbox": _xywh(obj["box"]),
                    "width": image_size,
                    "height": image_size,
                    "category": obj["category"],
                    "object_bboxes": object_bboxes,
                }
            )
    statements = []
    for index in range(0, count - 1, 2):
        rng = np.random.default_rng([seed, stream, index, 1])
        for sentence, label in language.statements(
            scenes[index], scenes[index + 1], rng, categories
        ):
            statements.append(
                {
                    "images": [scenes[index]["image"], scenes[index + 1]["image"]],
                    "sentence": sentence,
                    "label": label,
                }
            )

    paths = {
        name: os.path.join(out_dir, f"{split}_{name}.{ext}")
        for name, ext in [
            ("captions", "json"),
            ("vqa_questions", "json"),
            ("vqa_annotations", "json"),
            ("refs", "json"),
            ("nlvr", "jsonl"),
            ("scenes", "json"),
        ]
    }
    _write_json(paths["captions"], caption_rows)
    _write_json(paths["vqa_questions"], {"questions": questions})
    _write_json(paths["vqa_annotations"], {"annotations": annotations})
    _write_json(paths["refs"], refs)
    _write_json(paths["scenes"], scenes)
    with open(paths["nlvr"], "w") as file:
        file.writelines(json.dumps(row) + "\n" for row in statements)
    return paths


def _xywh(box):
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def _write_json(path, data):
    # json.dumps uses the C encoder; json.dump to a file does not.
    with open(path, "w") as file:
        file.write(json.dumps(data))


def cache_dir():
    """The scenes cache root: `$KERAS_TRIPS_CACHE/scenes`, by default
    `~/.cache/keras_trips/scenes`."""
    return os.path.join(cache_root(), "scenes")


def load_scenes(**params):
    """Return the file paths of a scenes dataset (as `make_scenes`),
    generating it into the cache on first use. `params` are those of
    `make_scenes` (except `out_dir`)."""
    key = {
        "params": params,
        "version": GENERATOR_VERSION,
        "emoji": catalog.emoji_available(),
        "fashion": catalog.fashion_available(),
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    target = os.path.join(cache_dir(), digest)
    if not os.path.isfile(os.path.join(target, "metadata.json")):
        os.makedirs(cache_dir(), exist_ok=True)
        # Generate aside and rename, so a concurrent or interrupted run
        # never sees a half-written dataset.
        scratch = tempfile.mkdtemp(dir=cache_dir())
        make_scenes(scratch, **params)
        try:
            os.rename(scratch, target)
        except OSError:
            shutil.rmtree(scratch)  # another process finished first
    with open(os.path.join(target, "metadata.json")) as file:
        metadata = json.load(file)
    files = {
        split: _rebase(paths, target) for split, paths in metadata["files"].items()
    }
    files["metadata"] = os.path.join(target, "metadata.json")
    return files


def _rebase(paths, root):
    return {
        name: os.path.join(root, os.path.basename(path)) for name, path in paths.items()
    }


def scenes_dataset(
    split="train",
    task="pretraining",
    batch_size=32,
    image_size=64,
    preprocessor=None,
    training=None,
    num_train=2000,
    num_val=200,
    num_test=200,
    seed=0,
    **kwargs,
):
    """A batched `tf.data.Dataset` of the scenes dataset for one task.

    Args:
        split: `"train"`, `"val"` or `"test"` (held-out combinations).
        task: `"pretraining"` (features with MLM masking), `"captions"`
            (features, no masking, one example per caption), `"vqa"`
            (features, answer_scores), `"refcoco"` (features, boxes) or
            `"nlvr2"` (features with image pairs, label).
        batch_size, image_size: ints (images are generated at image_size).
        preprocessor: a `TRIPSTextPreprocessor`, or None for the task's
            default.
        training: shuffle and augment; defaults to `split == "train"`.
        num_train, num_val, num_test, seed: generation parameters.
        **kwargs: passed to the reader (e.g. `seed`, `cache_images`, `shard`).
    """
    from keras_trips import data

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    files = load_scenes(
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        image_size=image_size,
        seed=seed,
    )
    paths = files[split]
    training = split == "train" if training is None else training
    common = dict(
        batch_size=batch_size, image_size=image_size, training=training, **kwargs
    )
    if task == "pretraining":
        return data.albef_json_dataset(
            paths["captions"], preprocessor=preprocessor, **common
        )
    if preprocessor is None:
        preprocessor = data.TRIPSTextPreprocessor()
    if task == "captions":
        return data.albef_json_dataset(
            paths["captions"], preprocessor=preprocessor, captions="all", **common
        )
    if task == "vqa":
        with open(files["metadata"]) as file:
            answers = json.load(file)["answers"]
        return data.vqa_dataset(
            paths["vqa_questions"],
            paths["vqa_annotations"],
            answer_vocabulary=answers,
            preprocessor=preprocessor,
            **common,
        )
    if task == "refcoco":
        return data.refcoco_dataset(paths["refs"], preprocessor=preprocessor, **common)
    return data.nlvr2_dataset(paths["nlvr"], preprocessor=preprocessor, **common)

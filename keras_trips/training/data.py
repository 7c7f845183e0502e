"""The recipes' datasets: the built-in scenes or files, in a resumable order."""

import numpy as np
import tensorflow as tf

from keras_trips import data
from keras_trips.data.captions import read_albef_json, read_coco_captions
from keras_trips.data.pipeline import build_dataset
from keras_trips.datasets import scenes
from keras_trips.training.training_config import TrainingConfigError

# Longest caption the recipes tokenise (ALBEF: 30).
SEQUENCE_LENGTH = 30


def caption_files(config):
    """`(annotation file, image root)` of the run's data; builds the scenes
    (into their cache folder) on first use.

    Args:
        config: the run's `TrainingConfig`.
    """
    if config.data_format != "scenes":
        return config.annotations, config.image_root
    return _scenes(config)["train"]["captions"], None


def _scenes(config):
    return scenes.load_scenes(
        num_train=config.num_scenes,
        num_val=config.num_eval_scenes,
        num_test=config.num_eval_scenes,
        image_size=config.image_size,
        seed=0,
    )


def eval_caption_file(config, split="val"):
    """The scenes' `split` caption file (evaluation of the built-in data)."""
    return _scenes(config)[split]["captions"]


def examples_per_pass(config, captions):
    """Examples in one pass over the training data, counted from the rows
    the data reader keeps (broken ones are skipped and reported, as the
    dataset skips them); None for TFRecords, which only reading every record
    would count.

    Args:
        config: the run's `TrainingConfig`.
        captions: as the readers': "random" (one example per image) or
            "all" (one per caption).

    Raises:
        TrainingConfigError: the data holds less than one global batch.
    """
    if config.data_format == "tfrecord":
        return None
    rows = _training_rows(config)
    if captions == "random":
        count, unit = len(rows), "images"
    else:
        count, unit = sum(len(row["captions"]) for row in rows), "captions"
    if count < config.batch_size:
        # drop_remainder: not one batch, and Keras would fail in `fit`.
        raise TrainingConfigError(
            f"{{}} {config.batch_size}: the training data ({caption_files(config)[0]}) "
            f"holds {count} usable {unit}, fewer than one global batch.",
            "batch_size",
        )
    return count


def caption_text_length(config):
    """The text length of a run: `config.text_length` when given, else the
    longest training caption in tokens ([CLS] and [SEP] included), at most
    30 (ALBEF's) and the model's longest text. Shorter texts make every step
    cheaper; TFRecords, which only reading every record would measure, get
    the cap."""
    longest = min(SEQUENCE_LENGTH, config.backbone_config["max_sequence_length"])
    if config.text_length is not None:
        return config.text_length
    if config.data_format == "tfrecord":
        return longest
    captions = [text for row in _training_rows(config) for text in row["captions"]]
    tokens = data.TRIPSTextPreprocessor().tokenizer(captions)
    return min(longest, max(len(caption) for caption in tokens) + 2)


def _training_rows(config):
    """The validated rows of the run's caption file (ALBEF or COCO)."""
    annotations, image_root = caption_files(config)
    read = read_coco_captions if config.data_format == "coco" else read_albef_json
    return read(annotations, image_root)


def training_dataset_fn(config, masking=True):
    """A function that builds one pass over the training data, in an order
    fixed by `config.seed` (for `resumable_stream`).

    The files are located now; the scenes are generated on first use.

    Args:
        config: the run's `TrainingConfig`.
        masking: bool. MLM masking (pre-training); without it, one example
            per caption (fine-tuning on captions).
    """
    annotations, image_root = caption_files(config)
    crop = None if config.min_crop_area is None else (config.min_crop_area, 1.0)
    common = dict(
        preprocessor=data.TRIPSTextPreprocessor(
            sequence_length=caption_text_length(config),
            mask_rate=0.15 if masking else 0.0,
        ),
        batch_size=config.batch_size,
        image_size=config.image_size,
        training=True,
        seed=config.seed,
        deterministic=True,
    )
    captions = "random" if masking else "all"

    def one_pass():
        if config.data_format == "tfrecord":
            return data.tfrecord_dataset(annotations, **common)
        if config.data_format == "coco":
            return data.coco_captions_dataset(
                annotations,
                image_root,
                captions=captions,
                random_crop_scale=crop,
                **common,
            )
        return data.albef_json_dataset(
            annotations, image_root, captions=captions, random_crop_scale=crop, **common
        )

    return one_pass


def resumable_stream(dataset_fn, start_step):
    """The endless stream of training batches from batch `start_step` on.

    Pass `k` of the stream is the data's `k`-th shuffle, whatever ran
    before, so a resumed run sees the batches the uninterrupted run saw from
    there. The passes are built inside the stream: every iterator of it
    starts from fresh shuffle and augmentation seeds. (Iterators of one
    dataset object continue each other's reshuffling, and Keras' TensorFlow
    trainer opens a throwaway one under a distribution strategy.)

    Args:
        dataset_fn: builds one pass over the data (`training_dataset_fn`).
        start_step: int. Batches to skip.
    """
    # Plain Python (the readers check files): not for AutoGraph to convert.
    one_pass = tf.autograph.experimental.do_not_convert(lambda _: dataset_fn().repeat())
    stream = tf.data.Dataset.range(1).flat_map(one_pass)
    # One thread: the parallel maps finish in the order they start, so a
    # resumed run batches the examples as the uninterrupted one did.
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    return stream.skip(start_step).with_options(options)


def caption_eval_data(annotation_file, image_root, sequence_length, image_size):
    """A retrieval gallery: every image once, every caption once, in order.

    Rows whose image is missing or does not decode are skipped (and
    reported) when the file is read. Images come back through the pipeline
    with their row's id and are placed by it, never by position.

    Returns:
        dict: `"images"` `(N, H, W, 3)`, `"token_ids"`, `"padding_mask"`
        `(M, L)` numpy arrays and `"text_to_image"` `(M,)`, the image of
        each caption.
    """
    rows = read_albef_json(annotation_file, image_root)
    dataset = build_dataset(
        {
            "image": [row["image"] for row in rows],
            "example_id": list(range(len(rows))),
        },
        preprocessor=None,
        batch_size=256,
        image_size=image_size,
        shuffle=False,
        drop_remainder=False,
        source=annotation_file,
    )
    images = np.zeros((len(rows), image_size, image_size, 3), "float32")
    placed = np.zeros(len(rows), bool)
    for batch in dataset.as_numpy_iterator():
        images[batch["example_id"]] = batch["images"]
        placed[batch["example_id"]] = True
    if not placed.all():
        missing = np.flatnonzero(~placed)
        raise RuntimeError(
            f"The gallery of {annotation_file} lost {missing.size} of its "
            f"{len(rows)} images in the input pipeline (rows "
            f"{[rows[i]['row_id'] for i in missing[:5]]})."
        )
    preprocessor = data.TRIPSTextPreprocessor(
        sequence_length=min(SEQUENCE_LENGTH, sequence_length)
    )
    captions = [caption for row in rows for caption in row["captions"]]
    text = list(
        tf.data.Dataset.from_tensor_slices(captions)
        .batch(256)
        .map(preprocessor)
        .as_numpy_iterator()
    )
    return {
        "images": images,
        "token_ids": np.concatenate([batch["token_ids"] for batch in text]),
        "padding_mask": np.concatenate([batch["padding_mask"] for batch in text]),
        "text_to_image": np.repeat(
            np.arange(len(rows)), [len(row["captions"]) for row in rows]
        ),
    }


def eval_files(config):
    """`(captions, phrases)`: the held-out files the run is evaluated on at
    its end (None where there is none, or with `skip_evaluation`): the
    options', else the scenes' test split."""
    if config.skip_evaluation:
        return None, None
    captions, phrases = config.eval_annotations, config.eval_phrases
    if config.data_format == "scenes":
        test = _scenes(config)["test"]
        captions = captions or test["captions"]
        phrases = phrases or test["refs"]
    return captions, phrases

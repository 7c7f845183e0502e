"""The shared tf.data builder behind every reader.

Readers turn annotation files into in-memory columns (image paths, texts,
targets), validated row by row; `build_dataset` turns those columns into a
batched, prefetched `tf.data.Dataset` with images decoded, augmented and
normalised per example and text tokenised per batch, all inside the graph.

The readers have already dropped (and counted) every row whose image does
not decode, so nothing is dropped here: an error inside the graph (a file
changed since it was checked, a bug) stops the iteration rather than
shifting the examples behind it or emptying the dataset.
"""

import numbers

import tensorflow as tf

from keras_trips.data import image_ops

AUTOTUNE = tf.data.AUTOTUNE
# Largest shuffle buffer of decoded images (64 px: ~12 KB each).
_MAX_IMAGE_SHUFFLE_BUFFER = 10_000
_MAX_PATH_SHUFFLE_BUFFER = 100_000


def build_dataset(
    columns,
    preprocessor,
    batch_size,
    image_size,
    target_key=None,
    num_answers=None,
    random_crop_scale=None,
    random_flip=False,
    shuffle=True,
    seed=None,
    deterministic=None,
    cache_images=False,
    shard=None,
    drop_remainder=True,
    source=None,
):
    """Build the batched dataset from validated columns.

    Args:
        columns: a `tf.data.Dataset` of such rows (with `"image_bytes"`,
            encoded images, in place of `"image"`), or a dict of equal-length
            sequences: `"image"` (paths; or pairs of
            paths, shape `(N, 2)`), `"text"` (str, or a list of str per row, one
            of which is drawn at random each time; optional), and optional
            `"boxes"` (normalised xyxy, `(N, 4)`), `"label"` (int),
            `"answer_indices"` with `"answer_weights"` (`(N, K)`, index -1
            pads) or `"example_id"` (int, passed through to the features so
            that a consumer aligns examples by id, never by position).
        preprocessor: a `TRIPSTextPreprocessor` (maps a batch of strings to
            the text features); unused without `"text"`.
        batch_size: int. Batches are static-shaped (`drop_remainder`).
        image_size: int. Output images are `image_size` square.
        target_key: None, `"answer_scores"`, `"label"` or `"boxes"`: what the
            dataset yields as targets next to the features dict.
        num_answers: int. Width of the dense `"answer_scores"`.
        random_crop_scale: None or `(min, max)` area fraction of a random
            resized crop; None resizes the whole image.
        random_flip: bool. Mirror half the examples, swapping "left" and
            "right" in the text and mirroring boxes.
        shuffle: bool. Shuffle (reshuffled every epoch).
        seed: int or None. Seeds shuffling and augmentation.
        deterministic: bool. Keep the element order fixed under parallel
            map; defaults to `not shuffle` (evaluation keeps file order).
        cache_images: bool. Keep decoded images in memory after the first
            epoch (for small datasets).
        shard: None or `(num_workers, worker_index)`: this worker's share.
        drop_remainder: bool. Drop the last incomplete batch.
        source: str or None. What the rows come from, for error messages.

    Raises:
        ValueError: for a `batch_size` or `image_size` that is not a
            positive int, and when the rows (of this shard) are fewer than
            one batch while `drop_remainder` is set: the dataset would yield
            nothing.
    """
    for name, value in (("batch_size", batch_size), ("image_size", image_size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise ValueError(f"`{name}` must be a positive int. Received: {value!r}")
        if value < 1:
            raise ValueError(f"`{name}` must be a positive int. Received: {value}")
    if isinstance(columns, tf.data.Dataset):
        dataset = columns
        num_rows = _MAX_IMAGE_SHUFFLE_BUFFER
    else:
        num_rows = len(columns["image"])
        _check_one_batch(num_rows, batch_size, shard, drop_remainder, source)
        text = columns.get("text")
        if text and not isinstance(text[0], str):
            # from_row_lengths is fast; tf.ragged.constant walks Python lists.
            text = tf.RaggedTensor.from_row_lengths(
                tf.constant([t for texts in text for t in texts], tf.string),
                [len(texts) for texts in text],
            )
        if text is not None:
            columns = {**columns, "text": text}
        dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shard is not None:
        dataset = dataset.shard(*shard)

    if cache_images:
        dataset = dataset.map(_read_images, num_parallel_calls=AUTOTUNE).cache()
        buffer_size = min(num_rows, _MAX_IMAGE_SHUFFLE_BUFFER)
    else:
        buffer_size = min(num_rows, _MAX_PATH_SHUFFLE_BUFFER)
    if shuffle:
        dataset = dataset.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)

    random = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip(dataset, random)

    def prepare_example(row, random_int):
        if not cache_images:
            row = _read_images(row)
        return _augment(
            row,
            random_int,
            image_size=image_size,
            random_crop_scale=random_crop_scale,
            random_flip=random_flip,
            num_answers=num_answers,
        )

    dataset = dataset.map(prepare_example, num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    def prepare_batch(batch):
        features = {"images": image_ops.normalize_images(batch.pop("images"))}
        if "text" in batch:
            features.update(preprocessor(batch.pop("text"), batch.pop("mask_seed")))
        if "example_id" in batch:
            features["example_id"] = batch.pop("example_id")
        if target_key is None:
            return features
        return features, batch[target_key]

    dataset = dataset.map(prepare_batch, num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = (not shuffle) if deterministic is None else deterministic
    return dataset.with_options(options).prefetch(AUTOTUNE)


def _check_one_batch(num_rows, batch_size, shard, drop_remainder, source):
    """Raise when `drop_remainder` would leave no batch at all."""
    if shard is not None:
        num_workers, index = shard
        num_rows = len(range(index, num_rows, num_workers))
    if drop_remainder and num_rows < batch_size:
        where = f" of {source}" if source else ""
        share = f" (worker {shard[1]} of {shard[0]})" if shard else ""
        raise ValueError(
            f"The dataset{where} has {num_rows} usable examples{share}, fewer than "
            f"one batch of batch_size={batch_size}: with drop_remainder it would "
            "yield no batch. Use a smaller batch_size or more data."
        )


def _read_images(row):
    """Replace the path(s) in `row["image"]` (or the bytes in
    `row["image_bytes"]`) by decoded uint8 image(s)."""
    row = dict(row)
    if "image_bytes" in row:
        row["images"] = image_ops.decode_image(row.pop("image_bytes"))
        return row
    paths = row.pop("image")
    if paths.shape.rank == 0:
        row["images"] = image_ops.decode_image(tf.io.read_file(paths))
    else:
        # Image pairs may differ in size: keep them apart until resized.
        row["images"] = tuple(
            image_ops.decode_image(tf.io.read_file(paths[i]))
            for i in range(paths.shape[0])
        )
    return row


def _augment(row, random_int, image_size, random_crop_scale, random_flip, num_answers):
    seeds = tf.random.experimental.stateless_split(tf.stack([random_int, 0]), num=4)
    text = row.get("text")
    if text is not None and text.shape.rank == 1:
        index = tf.random.stateless_uniform(
            [], seeds[0], maxval=tf.size(text), dtype=tf.int32
        )
        text = text[index]
    boxes = row.get("boxes")
    images = row["images"]
    if isinstance(images, tuple):
        images = tf.stack([image_ops.resize(image, image_size) for image in images])
    elif random_crop_scale is not None:
        images, boxes = image_ops.random_resized_crop(
            images, image_size, seeds[1], scale=random_crop_scale, boxes=boxes
        )
    else:
        images = image_ops.resize(images, image_size)
    if random_flip:
        images, text, boxes = image_ops.random_flip(images, text, seeds[2], boxes=boxes)

    example = {"images": images}
    if text is not None:
        example["text"] = text
        # Masking is drawn per batch from these: a function of the data seed.
        example["mask_seed"] = seeds[3]
    if "example_id" in row:
        example["example_id"] = row["example_id"]
    if boxes is not None:
        example["boxes"] = boxes
    if "label" in row:
        example["label"] = row["label"]
    if "answer_indices" in row:
        # Dense soft-score target from the (index, score) pairs; index -1 pads.
        one_hot = tf.one_hot(row["answer_indices"], num_answers)
        example["answer_scores"] = tf.reduce_sum(
            one_hot * row["answer_weights"][:, None], axis=0
        )
    return example

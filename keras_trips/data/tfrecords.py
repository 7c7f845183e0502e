"""Sharded TFRecords of image-caption pairs, for corpora too large for JSON.

Each record is a `tf.train.Example` with `"image"` (the encoded JPEG/PNG
bytes, as on disk) and `"captions"` (one or more UTF-8 strings). The reader
yields pre-training `features` as in `captions.py`.
"""

import os

import tensorflow as tf

from keras_trips.data.captions import read_albef_json
from keras_trips.data.pipeline import build_dataset
from keras_trips.data.trips_text_preprocessor import TRIPSTextPreprocessor

_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "captions": tf.io.VarLenFeature(tf.string),
}


def write_tfrecords(
    annotation_file,
    output_prefix,
    image_root=None,
    num_shards=8,
    validate_images="full",
):
    """Write the pairs of an ALBEF-style JSON list to `num_shards` files
    `<output_prefix>-00000-of-00008.tfrecord` ...; broken rows and images are
    skipped and reported (images fully decoded by default, so the reader
    never meets a corrupt one). Returns the shard paths."""
    rows = read_albef_json(annotation_file, image_root, validate_images)
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    paths = [
        f"{output_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord"
        for i in range(num_shards)
    ]
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    for index, row in enumerate(rows):
        with open(row["image"], "rb") as file:
            image = file.read()
        example = tf.train.Example(
            features=tf.train.Features(
                feature={
                    "image": tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[image])
                    ),
                    "captions": tf.train.Feature(
                        bytes_list=tf.train.BytesList(
                            value=[c.encode("utf-8") for c in row["captions"]]
                        )
                    ),
                }
            )
        )
        writers[index % num_shards].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return paths


def tfrecord_dataset(
    file_pattern,
    preprocessor=None,
    batch_size=32,
    image_size=64,
    training=True,
    shard=None,
    **kwargs,
):
    """Read TFRecord shards (a glob pattern or list of files) into batched
    pre-training features; one caption per record is drawn at random.

    Records are not checked again (`write_tfrecords` decodes every image
    before writing it): an image that does not decode stops the iteration
    with TensorFlow's decode error rather than being dropped unseen.

    Args:
        file_pattern: str or list of str.
        preprocessor: defaults to MLM masking (`mask_rate=0.15`).
        training: bool. Shuffle files and records, crop and flip.
        shard: None or `(num_workers, worker_index)`: workers read disjoint
            files (there must be at least `num_workers` files).
        batch_size, image_size, **kwargs: as in `albef_json_dataset`.
    """
    files = (
        tf.io.gfile.glob(file_pattern)
        if isinstance(file_pattern, str)
        else file_pattern
    )
    if not files:
        raise FileNotFoundError(f"No TFRecord files match {file_pattern}.")
    files = sorted(files)
    seed = kwargs.get("seed")
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shard is not None:
        if len(files) < shard[0]:
            raise ValueError(
                f"{len(files)} TFRecord files cannot feed {shard[0]} workers."
            )
        dataset = dataset.shard(*shard)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=kwargs.get("deterministic", not training),
    )

    def parse(record):
        parsed = tf.io.parse_single_example(record, _FEATURES)
        return {
            "image_bytes": parsed["image"],
            "text": tf.sparse.to_dense(parsed["captions"]),
        }

    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return build_dataset(
        dataset,
        preprocessor or TRIPSTextPreprocessor(mask_rate=0.15),
        batch_size,
        image_size,
        random_crop_scale=(0.5, 1.0) if training else None,
        random_flip=training,
        shuffle=kwargs.pop("shuffle", training),
        **kwargs,
    )

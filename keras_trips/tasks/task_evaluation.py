"""Evaluating a fine-tuned task model: its metrics, speed and baselines."""

import collections
import time

import keras
import numpy as np
import tensorflow as tf

from keras_trips.metrics.box_iou import box_iou
from keras_trips.metrics.corpus_bleu import corpus_bleu
from keras_trips.metrics.corpus_cider import corpus_cider

# Images per example: NLVR2 reads two.
_IMAGES_PER_EXAMPLE = {"nlvr2": 2}
# Training batches a majority baseline looks at.
_BASELINE_BATCHES = 50


def _concatenated(batches):
    """The batches joined along the batch axis, in their structure."""
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *batches)


def in_memory(dataset):
    """The batches of `dataset` read once into memory, as a dataset again
    (so that timing measures the model, not the image decoding), and the
    number of examples."""
    batches = list(dataset.as_numpy_iterator())
    if not batches:
        raise ValueError("The evaluation set holds no complete batch.")
    examples = _concatenated(batches)
    count = len(keras.tree.flatten(examples)[0])
    batch_size = len(keras.tree.flatten(batches[0])[0])
    # Its length is known: Keras counts the steps instead of warning that
    # the data ran out.
    return tf.data.Dataset.from_tensor_slices(examples).batch(batch_size), count


def caption_texts(token_ids, tokenizer, end_token_id):
    """Generated token ids `(B, L)` as strings, cut at the end token."""
    texts = []
    for row in np.asarray(token_ids):
        ends = np.flatnonzero(row == end_token_id)
        row = row[: ends[0]] if len(ends) else row
        row = row[row > 0]
        texts.append(str(tokenizer.detokenize(row[None])[0]) if len(row) else "")
    return [t.decode() if isinstance(t, bytes) else t for t in texts]


def evaluate_task(
    model,
    task,
    dataset,
    count,
    references=None,
    tokenizer=None,
    max_length=20,
    sampler="greedy",
):
    """The metrics of `model` on an evaluation set, and its speed.

    Args:
        model: a compiled task model (its keep rate as set).
        task: `"vqa"`, `"nlvr2"`, `"grounding"` or `"captioning"`.
        dataset: the evaluation batches (`in_memory`), `count` examples.
        references: captioning: the reference captions of each image.
        tokenizer: captioning: detokenises the generated ids.
        max_length, sampler: captioning: of `model.generate`.

    Returns:
        dict: the metrics (VQA accuracy; accuracy; accuracy at IoU >= 0.5;
        BLEU-4 and CIDEr-D), `"images_per_s"` and `"seconds"` (after a
        warm-up batch that compiles).
    """
    # Timed on numpy batches: a tf.data iterator inside the timed loop
    # stalled whole evaluations (~10 s beside ~6 s) under JAX on 2 cores.
    batches = list(dataset.as_numpy_iterator())
    if task == "captioning":
        model.generate(batches[0]["images"], max_length=max_length, sampler=sampler)
        captions = []
        started = time.perf_counter()
        for batch in batches:
            ids = model.generate(
                batch["images"], max_length=max_length, sampler=sampler
            )
            captions += caption_texts(
                keras.ops.convert_to_numpy(ids), tokenizer, model.end_token_id
            )
        seconds = time.perf_counter() - started
        results = {
            "BLEU-4": corpus_bleu(captions, references)[3],
            "CIDEr": corpus_cider(captions, references)[0],
        }
    else:
        x, y = _concatenated(batches)
        batch_size = len(batches[0][1])
        model.evaluate(x, y, batch_size=batch_size, steps=1, verbose=0)
        started = time.perf_counter()
        logs = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
        seconds = time.perf_counter() - started
        results = {name: value for name, value in logs.items() if name != "loss"}
    images = count * _IMAGES_PER_EXAMPLE.get(task, 1)
    results["images_per_s"] = images / seconds
    results["seconds"] = seconds
    return results


def majority_baseline(task, train, dataset, references=None, train_captions=None):
    """The chance or majority baseline of a task, with its metric.

    VQA: the most frequent training answer for every question; NLVR2: the
    most frequent training label; grounding: the mean training box;
    captioning: the most frequent training caption, for every image.

    Args:
        task: the task. train: the training stream (the first batches are
            read). dataset: the evaluation batches.
        references, train_captions: captioning's reference and training
            captions.

    Returns:
        dict: `"baseline"` (what it predicts) and the task's metrics.
    """
    if task == "captioning":
        caption, _ = collections.Counter(train_captions).most_common(1)[0]
        candidates = [caption] * len(references)
        return {
            "baseline": f"the most frequent training caption, {caption!r}",
            "BLEU-4": corpus_bleu(candidates, references)[3],
            "CIDEr": corpus_cider(candidates, references)[0],
        }
    train_targets = np.concatenate(
        [np.asarray(y) for _, y in train.take(_BASELINE_BATCHES).as_numpy_iterator()]
    )
    eval_targets = np.concatenate(
        [np.asarray(y) for _, y in dataset.as_numpy_iterator()]
    )
    if task == "vqa":
        answer = np.bincount(np.argmax(train_targets, axis=-1)).argmax()
        return {
            "baseline": f"the most frequent training answer (#{answer})",
            "vqa_accuracy": float(np.mean(eval_targets[:, answer])),
        }
    if task == "nlvr2":
        label = np.bincount(train_targets.astype("int64")).argmax()
        return {
            "baseline": f"the most frequent training label ({label})",
            "accuracy": float(np.mean(eval_targets == label)),
        }
    box = train_targets.mean(axis=0)
    iou = keras.ops.convert_to_numpy(
        box_iou(eval_targets, np.broadcast_to(box, eval_targets.shape))
    )
    return {
        "baseline": "the mean training box " + np.array2string(box, precision=2),
        "accuracy_iou_0.5": float(np.mean(iou >= 0.5)),
    }

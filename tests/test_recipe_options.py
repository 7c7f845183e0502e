"""recipes/pretrain.py options end to end, on the micro configuration.

The model options (momentum, gradient accumulation, keep-rate warm-up, mixed
precision) share one run per backend, a compile costing more than the steps;
the data formats (ALBEF JSON, COCO captions, TFRecords) run once, under
tensorflow.
"""

import contextlib
import json
import os

import keras
import numpy as np
import pytest
from backend_utils import end_to_end
from PIL import Image
from test_recipes import load_recipe, micro_arguments

from keras_trips import data, training
from keras_trips.models import TRIPSVisionEncoder

LOSSES = ("loss", "itc_loss", "itm_loss", "mlm_loss")
STEPS = 4
BATCH_SIZE = 8  # micro_arguments'
QUEUE_SIZE = 12  # not a multiple of the batch: the pointer wraps mid-batch

pytestmark = [pytest.mark.usefixtures("scenes_cache"), end_to_end]
training_options = load_recipe("training_options")


def numpy(x):
    return keras.ops.convert_to_numpy(x)


class RecordTraining(keras.callbacks.Callback):
    """The weights at the start and the trainable ones after every epoch (the
    JAX trainer syncs them back at epoch ends only), and the vision encoders'
    keep rates at every batch, as the run's KeepRateScheduler, placed before
    this callback, set them."""

    def on_train_begin(self, logs=None):
        self.start = {v.path: numpy(v) for v in self.model.weights}
        self.trainable = [self.trainable_snapshot()]
        self.keep_rates = []

    def trainable_snapshot(self):
        return [numpy(v) for v in self.model.trainable_weights]

    def on_train_batch_begin(self, batch, logs=None):
        self.keep_rates.append(
            [
                layer.keep_rate
                for layer in self.model._flatten_layers(include_self=False)
                if isinstance(layer, TRIPSVisionEncoder)
            ]
        )

    def on_epoch_end(self, epoch, logs=None):
        self.trainable.append(self.trainable_snapshot())


@pytest.fixture(scope="module")
def options_run(scenes_cache, tmp_path_factory):
    """A run with every model option: 4 batches, each one epoch."""
    record = RecordTraining()
    result = load_recipe("pretrain").main(
        micro_arguments(
            tmp_path_factory.mktemp("options"),
            f"--steps={STEPS}",
            "--steps-per-epoch=1",
            "--momentum",
            f"--queue-size={QUEUE_SIZE}",
            "--grad-accumulation=2",
            "--keep-rate-warmup=2",
            "--itc-only-fraction=0.5",
            "--mixed-precision",
        ),
        extra_callbacks=[record],
    )
    return result, record


def test_gradient_accumulation_updates_every_second_batch(options_run):
    result, record = options_run
    changed = [
        any(not np.array_equal(a, b) for a, b in zip(before, after))
        for before, after in zip(record.trainable, record.trainable[1:])
    ]
    assert changed == [False, True, False, True]
    # Keras' `iterations` counts the updates; the step log counts batches.
    assert int(numpy(result["model"].optimizer.iterations)) == STEPS // 2
    log = training.read_step_log(os.path.join(result["config"].output_dir, "steps.csv"))
    assert log["step"] == [1.0, 2.0, 3.0, 4.0]


def test_keep_rate_warms_up_over_batches_then_reaches_the_target(options_run):
    result, record = options_run
    # Warm-up: 2 batches at 1.0; the cosine then starts at 1.0 (batch 2) and
    # reaches --keep-rate 0.5 at batch max(2 + 1, 4 // 2) = 3, in the online
    # and the momentum vision encoder alike. Counted in batches, not in
    # updates, under gradient accumulation too.
    assert record.keep_rates == [[(1.0,), (1.0,)]] * 3 + [[(0.5,), (0.5,)]]
    assert result["model"].backbone.vision_encoder.keep_rate == (0.5,)


def test_keep_rate_warmup_targets_the_models_keep_rate(tmp_path, capsys):
    def parse(*argv):
        parser = training_options.training_parser("test", str(tmp_path))
        return training_options.parse_training_options(parser, list(argv))[1]

    config = parse("--backbone-overrides", '{"keep_rate": 0.4}', "--keep-rate-warmup=2")
    scheduler = training.training_callbacks(config, total_steps=10)[-1]
    assert scheduler.keep_rate == 0.4
    with pytest.raises(SystemExit):
        parse(
            "--backbone-overrides",
            '{"keep_rate": [0.5, 0.6]}',
            "--keep-rate-warmup=2",
        )
    assert "one keep rate for all stages" in capsys.readouterr().err


def test_momentum_model_and_queues_follow_training(options_run):
    result, record = options_run
    model = result["model"]
    assert model.use_momentum
    momentum_model = model.momentum_model
    # 4 batches of 8 written from slot 0 into 12 slots: every slot, twice
    # over for some, and the pointer wrapped around to 32 % 12.
    assert int(numpy(momentum_model.queue_pointer)) == STEPS * BATCH_SIZE % QUEUE_SIZE
    for queue in (momentum_model.image_queue, momentum_model.text_queue):
        rows = numpy(queue)
        assert not np.isclose(rows, record.start[queue.path]).all(axis=-1).any()
        np.testing.assert_allclose(np.linalg.norm(rows, axis=-1), 1.0, rtol=1e-3)
    # The EMA copy started as the online encoder and follows it, slowly.
    online = model.backbone.text_encoder.weights
    momentum = momentum_model.text_encoder.weights
    assert len(online) == len(momentum)
    for online_weight, momentum_weight in zip(online, momentum):
        start = record.start[online_weight.path]
        np.testing.assert_array_equal(record.start[momentum_weight.path], start)
        online_moved = np.abs(numpy(online_weight) - start).sum()
        momentum_moved = np.abs(numpy(momentum_weight) - start).sum()
        if online_moved:
            assert 0 < momentum_moved < online_moved


def test_mixed_precision_computes_in_bfloat16_with_float32_weights(options_run):
    result, _ = options_run
    backbone = result["model"].backbone
    assert backbone.dtype_policy.name == "mixed_bfloat16"
    assert backbone.vision_encoder.compute_dtype == "bfloat16"
    assert {v.dtype for v in result["model"].trainable_weights} == {"float32"}
    log = training.read_step_log(os.path.join(result["config"].output_dir, "steps.csv"))
    # ITM and MLM join halfway (--itc-only-fraction 0.5).
    for name in LOSSES:
        start = STEPS // 2 if name in ("itm_loss", "mlm_loss") else 0
        assert np.isfinite(log[name][start:]).all(), name


def test_saved_pretrainer_keeps_the_options(options_run):
    result, _ = options_run
    saved = keras.saving.load_model(result["files"]["pretrainer"], compile=False)
    assert saved.use_momentum and saved.queue_size == QUEUE_SIZE
    for name in ("queue_pointer", "image_queue"):
        np.testing.assert_array_equal(
            numpy(getattr(saved.momentum_model, name)),
            numpy(getattr(result["model"].momentum_model, name)),
        )
    assert saved.backbone.dtype_policy.name == "mixed_bfloat16"
    assert saved.backbone.vision_encoder.keep_rate == (0.5,)


WORDS = ["a", "red", "blue", "circle", "square", "left", "right", "of", "above"]


@pytest.fixture(scope="module")
def caption_files(tmp_path_factory):
    """16 small images (PNG and JPEG, varied sizes) in images/, and the
    `--data-format`/`--annotations` options of each format naming them. The
    COCO file also names a missing image, which the run skips and reports."""
    root = tmp_path_factory.mktemp("captions")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    names, captions = [], []
    for i in range(16):
        pixels = rng.integers(0, 255, (24 + i, 40 - i, 3), dtype=np.uint8)
        names.append(f"{i}.{'png' if i % 2 else 'jpg'}")
        Image.fromarray(pixels).save(root / "images" / names[-1])
        captions.append([" ".join(rng.choice(WORDS, 4 + j)) for j in range(1 + i % 3)])

    albef = root / "albef.json"
    albef.write_text(
        json.dumps(
            [
                {"image": name, "caption": texts[0] if len(texts) == 1 else texts}
                for name, texts in zip(names, captions)
            ]
        )
    )
    coco = root / "coco.json"
    coco.write_text(
        json.dumps(
            {
                "images": [
                    {"id": i, "file_name": f"images/{name}"}
                    for i, name in enumerate([*names, "missing.png"])
                ],
                "annotations": [
                    {"image_id": i, "caption": text}
                    for i, texts in enumerate([*captions, ["gone"]])
                    for text in texts
                ],
            }
        )
    )
    data.write_tfrecords(
        str(albef), str(root / "records" / "pairs"), root / "images", num_shards=2
    )
    return {
        "albef": [f"--annotations={albef}", f"--image-root={root / 'images'}"],
        "coco": [f"--annotations={coco}"],
        "tfrecord": [f"--annotations={root / 'records' / 'pairs-*.tfrecord'}"],
    }


@pytest.mark.parametrize("data_format", ["albef", "coco", "tfrecord"])
def test_pretraining_on_caption_files(data_format, caption_files, tmp_path):
    # An epoch is one pass over an annotation file: 16 images, batches of 8.
    # TFRecords are not counted: they need --steps or --steps-per-epoch.
    length = "--steps=2" if data_format == "tfrecord" else "--epochs=1"
    argv = micro_arguments(
        tmp_path,
        length,
        "--itc-only-fraction=0.5",
        f"--data-format={data_format}",
        *caption_files[data_format],
    )
    reports_missing_image = (
        # The count covers both lists: 17 images and 32 annotations.
        pytest.warns(UserWarning, match=r"Skipped 1 of 49 rows of .*coco\.json")
        if data_format == "coco"
        else contextlib.nullcontext()
    )
    with reports_missing_image:
        result = load_recipe("pretrain").main(argv)
    assert result["timing"]["steps"] == 2
    log = training.read_step_log(tmp_path / "steps.csv")
    assert log["step"] == [1.0, 2.0]
    # ITC alone for the first half of the run, then every objective.
    assert np.isfinite(log["itc_loss"]).all()
    for name in ("itm_loss", "mlm_loss"):
        assert np.isnan(log[name][0]) and np.isfinite(log[name][1]), name
    assert os.path.isfile(result["files"]["pretrainer"])

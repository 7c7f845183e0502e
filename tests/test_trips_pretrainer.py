import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from pretraining_utils import MICRO, pretraining_batch

from keras_trips.callbacks import KeepRateScheduler
from keras_trips.models import TRIPSBackbone, TRIPSPretrainer, TRIPSVisionEncoder
from keras_trips.models.trips_pretrainer import unmasked_token_ids


def micro_pretrainer(**kwargs):
    return TRIPSPretrainer(TRIPSBackbone(**MICRO), embedding_dim=16, **kwargs)


def numpy(x):
    return ops.convert_to_numpy(x)


def overfit_one_batch(pretrainer, steps):
    """Fits `steps` times on one batch: (logs before, fit history, logs after)."""
    dataset = tf.data.Dataset.from_tensors(pretraining_batch()).repeat(steps)
    before = pretrainer.evaluate(dataset.take(1), verbose=0, return_dict=True)
    history = pretrainer.fit(dataset, verbose=0).history
    after = pretrainer.evaluate(dataset.take(1), verbose=0, return_dict=True)
    return before, history, after


def test_loss_falls_when_overfitting_one_batch():
    # A fast momentum model: its MLM soft targets sharpen within the 40 steps.
    pretrainer = micro_pretrainer(use_momentum=True, momentum=0.9, queue_size=6)
    pretrainer.compile(learning_rate=2e-3)
    before, history, after = overfit_one_batch(pretrainer, steps=40)
    for name in ("loss", "itc_loss", "itm_loss", "mlm_loss", "itm_accuracy"):
        assert name in history
    assert after["loss"] < 0.75 * before["loss"]
    assert after["mlm_loss"] < 0.6 * before["mlm_loss"]


class ContrastiveOnlyPretrainer(TRIPSPretrainer):
    """Trains on the ITC loss alone."""

    def compute_loss(self, x, y, y_pred, *args, **kwargs):
        return y_pred["itc_loss"]


def test_itc_alone_separates_the_pairs_of_one_batch():
    # Without dropout: the text [CLS] states of different captions start
    # nearly identical, and dropout's noise hides their differences (README).
    pretrainer = ContrastiveOnlyPretrainer(
        TRIPSBackbone(**{**MICRO, "dropout": 0.0}), embedding_dim=16
    )
    pretrainer.compile(learning_rate=1e-3)
    before, _, after = overfit_one_batch(pretrainer, steps=60)
    # ln 4 (uniform over the batch) at the start.
    assert before["itc_loss"] == pytest.approx(np.log(4), abs=0.1)
    assert after["itc_loss"] < 0.7 * before["itc_loss"]


def test_unmasked_token_ids_restores_the_masked_positions():
    batch = pretraining_batch()
    batch["mask_weights"][0, 1] = 0.0  # a padded prediction slot
    restored = numpy(unmasked_token_ids(batch))
    expected = batch["token_ids"].copy()
    expected[:, 1:3] = batch["mask_ids"]
    expected[0, 2] = 3  # the padded slot restores nothing
    np.testing.assert_array_equal(restored, expected)


def test_hard_negatives_never_pick_the_positive():
    pretrainer = micro_pretrainer()
    # The positive is by far the most similar: an unmasked sampler takes it.
    similarity = np.eye(6, dtype="float32") * 30.0
    for _ in range(20):
        texts, images = pretrainer.sample_hard_negatives(similarity, similarity)
        assert not np.any(numpy(texts) == np.arange(6))
        assert not np.any(numpy(images) == np.arange(6))


def test_hard_negatives_follow_the_similarity():
    pretrainer = micro_pretrainer()
    similarity = np.zeros((3, 3), "float32")
    similarity[0, 2] = 5.0  # for item 0, item 2 is the hard negative
    draws = [
        numpy(pretrainer.sample_hard_negatives(similarity, similarity)[0])[0]
        for _ in range(30)
    ]
    # p(2) = e^5 / (e^5 + 1) = 0.993 for item 0.
    assert np.mean(np.array(draws) == 2) > 0.85


def test_queue_wraps_around_exactly():
    pretrainer = micro_pretrainer(use_momentum=True, queue_size=5)
    queue = numpy(pretrainer.image_queue).copy()
    pointer = 0
    for step in range(4):  # batches of 3 into 5 slots: wraps every step
        rows = np.full((3, 16), step + 1.0, "float32") + np.arange(3)[:, None] / 10
        pretrainer._enqueue(rows, rows)
        for row in rows:
            queue[pointer] = row
            pointer = (pointer + 1) % 5
        np.testing.assert_array_equal(numpy(pretrainer.image_queue), queue)
        np.testing.assert_array_equal(numpy(pretrainer.text_queue), queue)
        assert int(numpy(pretrainer.queue_pointer)) == pointer
    # A batch larger than the queue leaves its last rows.
    rows = np.arange(7 * 16, dtype="float32").reshape(7, 16)
    pretrainer._enqueue(rows, rows)
    for row in rows:
        queue[pointer] = row
        pointer = (pointer + 1) % 5
    np.testing.assert_array_equal(numpy(pretrainer.image_queue), queue)


def test_momentum_update_is_an_exact_ema():
    pretrainer = micro_pretrainer(use_momentum=True, momentum=0.9, queue_size=4)
    pairs = pretrainer._momentum_pairs()
    # Move the online weights away from their momentum copies.
    for online, _ in pairs:
        online.assign(online + 1.0)
    online_before = [numpy(online).copy() for online, _ in pairs]
    target_before = [numpy(target).copy() for _, target in pairs]
    pretrainer(pretraining_batch(), training=True)
    for (_, target), online, old in zip(pairs, online_before, target_before):
        np.testing.assert_allclose(
            numpy(target), 0.9 * old + 0.1 * online, rtol=1e-6, atol=1e-6
        )
    # Inference leaves the momentum model and the queue alone.
    queue = numpy(pretrainer.image_queue).copy()
    target_now = [numpy(target).copy() for _, target in pairs]
    pretrainer(pretraining_batch(), training=False)
    np.testing.assert_array_equal(numpy(pretrainer.image_queue), queue)
    for (_, target), before in zip(pairs, target_now):
        np.testing.assert_array_equal(numpy(target), before)


def test_momentum_model_copies_every_online_weight_once():
    pretrainer = micro_pretrainer(use_momentum=True, queue_size=4)
    pairs = pretrainer._momentum_pairs()
    momentum_layers = [
        layer for layer in pretrainer._layers if layer.name.startswith("momentum_")
    ]
    momentum_weights = {id(w) for layer in momentum_layers for w in layer.weights}
    assert len(momentum_layers) == 6
    assert {id(target) for _, target in pairs} == momentum_weights
    online = {id(w) for w, _ in pairs}
    assert len(online) == len(pairs) == len(momentum_weights)
    for online_weight, target in pairs:
        np.testing.assert_array_equal(numpy(target), numpy(online_weight))


def test_mlm_distills_the_momentum_models_predictions():
    alpha = 0.4
    pretrainer = micro_pretrainer(
        use_momentum=True, queue_size=4, distillation_alpha=alpha
    )
    # The momentum MLM head now predicts token 7 wherever it looks.
    bias = numpy(pretrainer.momentum_mlm_head._bias)
    pretrainer.momentum_mlm_head._bias.assign(bias + 100.0 * (np.arange(100) == 7))
    batch = pretraining_batch()
    loss = numpy(pretrainer(batch, training=False)["mlm_loss"])

    backbone = pretrainer.backbone
    padding_mask = batch["padding_mask"]
    text = backbone.encode_text(unmasked_token_ids(batch), padding_mask)
    image = backbone.encode_image(batch["images"], text[:, 0])
    masked_text = backbone.encode_text(batch["token_ids"], padding_mask)
    fused = backbone.fuse(masked_text, image, padding_mask)
    logits = numpy(pretrainer.mlm_head(fused, batch["mask_positions"]))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    true_tokens = np.take_along_axis(log_probs, batch["mask_ids"][..., None], -1)
    expected = -((1 - alpha) * true_tokens[..., 0] + alpha * log_probs[..., 7])
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-4)


def test_saved_and_loaded_pretrainer_gives_identical_losses(tmp_path):
    pretrainer = micro_pretrainer(use_momentum=True, queue_size=6)
    pretrainer.compile(learning_rate=1e-3, jit_compile=False)
    dataset = tf.data.Dataset.from_tensors(pretraining_batch()).repeat(3)
    pretrainer.fit(dataset, verbose=0)
    path = str(tmp_path / "pretrainer.keras")
    pretrainer.save(path)
    restored = keras.saving.load_model(path)
    batch = pretraining_batch(seed=1)
    expected = {k: numpy(v) for k, v in pretrainer(batch).items()}
    actual = {k: numpy(v) for k, v in restored(batch).items()}
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(
            actual[name], expected[name], atol=1e-6, err_msg=name
        )
    np.testing.assert_array_equal(
        numpy(restored.image_queue), numpy(pretrainer.image_queue)
    )


def test_keep_rate_schedule_compiles_few_token_counts():
    scheduler = KeepRateScheduler(0.5, warmup_steps=2, total_steps=10, num_levels=3)
    rates = [scheduler.rate(step) for step in range(14)]
    assert rates[:2] == [1.0, 1.0]
    assert rates[-1] == 0.5
    assert sorted(set(rates)) == [0.5, 0.75, 1.0]
    assert rates == sorted(rates, reverse=True)

    # Any model holding a TRIPSVisionEncoder follows the schedule.
    encoder = TRIPSVisionEncoder(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=16,
        selection_layers=(0,),
    )
    images = keras.Input((32, 32, 3))
    model = keras.Model(images, keras.layers.Dense(2)(encoder(images)[:, 0]))
    model.compile(optimizer="sgd", loss="mse")
    lengths = []

    class RecordLength(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            lengths.append(encoder.sequence_lengths()[-1])

    data = np.zeros((12, 32, 32, 3), "float32"), np.zeros((12, 2), "float32")
    model.fit(*data, batch_size=1, verbose=0, callbacks=[scheduler, RecordLength()])
    # 16 patches: keep 1.0 -> 17 tokens, 0.75 -> 1 + 12 + 1, 0.5 -> 1 + 8 + 1.
    tokens = {1.0: 17, 0.75: 14, 0.5: 10}
    assert lengths == [tokens[scheduler.rate(step)] for step in range(12)]
    assert len(scheduler._train_functions) == 2  # the levels left behind


def test_bad_inputs():
    pretrainer = micro_pretrainer()
    batch = pretraining_batch()
    with pytest.raises(ValueError, match="vocabulary"):
        pretrainer({**batch, "token_ids": batch["token_ids"] + 1000})
    with pytest.raises(ValueError, match="padding_mask"):
        pretrainer({**batch, "padding_mask": batch["padding_mask"][:, :5]})
    with pytest.raises(ValueError, match="at least 2 pairs"):
        pretrainer({k: v[:1] for k, v in batch.items()})
    with pytest.raises(ValueError, match="must match the vision width"):
        TRIPSBackbone(**MICRO, text_hidden_dim=48)
    with pytest.raises(ValueError, match="queue_size"):
        micro_pretrainer(use_momentum=True, queue_size=0)

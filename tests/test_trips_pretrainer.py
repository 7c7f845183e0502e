import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from pretraining_utils import MICRO, pretraining_batch

from keras_trips.callbacks import KeepRateScheduler
from keras_trips.models import TRIPSBackbone, TRIPSPretrainer, TRIPSVisionEncoder


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


def test_mlm_distills_the_momentum_models_predictions():
    alpha = 0.4
    pretrainer = micro_pretrainer(
        use_momentum=True, queue_size=4, distillation_alpha=alpha
    )
    # The momentum MLM head now predicts token 7 wherever it looks.
    momentum_head = pretrainer.momentum_model.mlm_head
    momentum_head._bias.assign(
        numpy(momentum_head._bias) + 100.0 * (np.arange(100) == 7)
    )
    batch = pretraining_batch()
    loss = numpy(pretrainer(batch, training=False)["mlm_loss"])

    backbone = pretrainer.backbone
    padding_mask = batch["padding_mask"]
    text = backbone.encode_text(batch["token_ids"], padding_mask)
    image = backbone.encode_image(batch["images"], text[:, 0])
    masked_text = backbone.encode_text(batch["masked_token_ids"], padding_mask)
    fused = backbone.fuse(masked_text, image, padding_mask)
    logits = numpy(pretrainer.mlm_head(fused, batch["mask_positions"]))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    true_tokens = np.take_along_axis(log_probs, batch["mask_ids"][..., None], -1)
    expected = -((1 - alpha) * true_tokens[..., 0] + alpha * log_probs[..., 7])
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-4)


def test_match_probability_is_the_itm_head_on_the_fused_cls():
    pretrainer = micro_pretrainer()
    batch = pretraining_batch()
    backbone = pretrainer.backbone
    text = backbone.encode_text(batch["token_ids"], batch["padding_mask"])
    image = backbone.encode_image(batch["images"], text[:, 0])
    fused = backbone.fuse(text, image, batch["padding_mask"])
    logits = numpy(pretrainer.itm_head(fused[:, 0]))
    expected = np.exp(logits[:, 1]) / np.exp(logits).sum(-1)
    probability, returned_logits = pretrainer.match_probability(
        text, image, batch["padding_mask"], return_logits=True
    )
    np.testing.assert_allclose(numpy(returned_logits), logits, rtol=1e-6)
    np.testing.assert_allclose(numpy(probability), expected, rtol=1e-5)
    np.testing.assert_allclose(
        numpy(pretrainer.match_probability(text, image, batch["padding_mask"])),
        expected,
        rtol=1e-5,
    )


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
        numpy(restored.momentum_model.image_queue),
        numpy(pretrainer.momentum_model.image_queue),
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
    with pytest.raises(ValueError, match="need a `padding_mask`"):
        pretrainer({k: v for k, v in batch.items() if k != "padding_mask"})
    # The masked text in `token_ids`, as the first data format had it.
    with pytest.raises(ValueError, match="need `masked_token_ids`"):
        pretrainer(
            {
                **{k: v for k, v in batch.items() if k != "masked_token_ids"},
                "token_ids": batch["masked_token_ids"],
            }
        )
    with pytest.raises(ValueError, match="must match the vision width"):
        TRIPSBackbone(**MICRO, text_hidden_dim=48)
    with pytest.raises(ValueError, match="queue_size"):
        micro_pretrainer(use_momentum=True, queue_size=0)

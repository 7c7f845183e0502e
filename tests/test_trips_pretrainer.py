import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from pretraining_utils import MICRO, pretraining_batch

from keras_trips.callbacks import KeepRateScheduler
from keras_trips.losses import (
    hard_negative_triples,
    image_text_contrastive_loss,
    image_text_matching_loss,
    patch_relevance,
    sample_random_negatives,
    selection_distillation_loss,
)
from keras_trips.models import TRIPSBackbone, TRIPSPretrainer, TRIPSVisionEncoder


def micro_pretrainer(**kwargs):
    return TRIPSPretrainer(TRIPSBackbone(**MICRO), embedding_dim=16, **kwargs)


def numpy(x):
    return ops.convert_to_numpy(x)


def overfit_one_batch(pretrainer, steps):
    """Fits `steps` times on one batch: (losses before, fit history, losses
    after); the losses by a direct call, which needs no compiled function."""
    batch = pretraining_batch()

    def losses():
        outputs = pretrainer(batch, training=False)
        logs = {name: float(numpy(value)) for name, value in outputs.items()}
        logs["loss"] = float(numpy(pretrainer.compute_loss(None, None, outputs)))
        return logs

    before = losses()
    history = pretrainer.fit(
        tf.data.Dataset.from_tensors(batch).repeat(steps), verbose=0
    ).history
    return before, history, losses()


def test_loss_falls_when_overfitting_one_batch():
    # A fast momentum model: its MLM soft targets sharpen within the 40 steps.
    pretrainer = micro_pretrainer(
        use_momentum=True, momentum=0.9, queue_size=6, selection_distillation=1.0
    )
    pretrainer.compile(learning_rate=2e-3)
    before, history, after = overfit_one_batch(pretrainer, steps=40)
    for name in ("loss", "itc_loss", "itm_loss", "mlm_loss", "selection_loss"):
        assert name in history
    assert after["loss"] < 0.75 * before["loss"]
    assert after["mlm_loss"] < 0.6 * before["mlm_loss"]
    assert after["selection_loss"] < 0.5 * before["selection_loss"]


def test_selection_distillation_is_the_first_stage_against_itc_relevance():
    pretrainer = micro_pretrainer(embedding_pooling="mean", selection_distillation=0.5)
    batch = pretraining_batch()
    losses = pretrainer(batch, training=False)
    backbone = pretrainer.backbone
    text = backbone.encode_text(batch["token_ids"], batch["padding_mask"])
    _, scores = backbone.encode_image(batch["images"], text[:, 0], return_scores=True)
    tokens = backbone.encode_image(batch["images"], keep_rate=1.0)
    relevance = patch_relevance(
        pretrainer.embed_text(text, batch["padding_mask"]),
        pretrainer.vision_projection(tokens[:, 1:]),
    )
    # MICRO selects once, in block 0, at keep 0.5.
    assert len(scores) == 1 and tuple(scores[0].shape) == (4, 16)
    expected = 0.5 * selection_distillation_loss(scores[0], relevance, 0.5)
    assert float(numpy(losses["selection_loss"])) == pytest.approx(
        float(np.mean(numpy(expected))), rel=1e-5
    )
    # The paper's pretrainer has no such loss.
    assert "selection_loss" not in micro_pretrainer()(batch, training=False)
    with pytest.raises(ValueError, match="selection_distillation"):
        micro_pretrainer(selection_distillation=-1.0)


class PenalisedPretrainer(TRIPSPretrainer):
    """Adds `100 * temperature**2` with `add_loss`, as a user's regulariser."""

    def call(self, inputs, training=None):
        outputs = super().call(inputs, training)
        self.add_loss(100.0 * ops.square(self.temperature.value))
        return outputs


def test_fit_adds_the_losses_of_add_loss():
    pretrainer = PenalisedPretrainer(TRIPSBackbone(**MICRO), embedding_dim=16)
    pretrainer.compile(learning_rate=1e-3)
    history = pretrainer.fit(
        tf.data.Dataset.from_tensors(pretraining_batch()), verbose=0
    ).history
    # One step: the logged losses are those before the update; the
    # temperature starts at 0.07.
    objectives = sum(history[name][0] for name in ("itc_loss", "itm_loss", "mlm_loss"))
    assert history["loss"][0] == pytest.approx(objectives + 100 * 0.07**2, rel=1e-4)


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
    # Training calls fill the queues and move the momentum model (`fit`,
    # tested elsewhere, does the same through a traced step).
    for seed in range(3):
        pretrainer(pretraining_batch(seed=seed), training=True)
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
    traced_lengths = []

    class RecordingEncoder(TRIPSVisionEncoder):
        def call(self, *args, **kwargs):
            tokens = super().call(*args, **kwargs)
            traced_lengths.append(tokens.shape[1])
            return tokens

    encoder = RecordingEncoder(
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
    # Each level's train function ran its own token count (under JAX, a
    # new train function once reused the first one's trace).
    assert set(tokens.values()) <= set(traced_lengths)
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
    with pytest.raises(ValueError, match="guidance_projection=True"):
        TRIPSBackbone(**MICRO, text_hidden_dim=48)
    with pytest.raises(ValueError, match="embedding_pooling"):
        micro_pretrainer(embedding_pooling="max")
    with pytest.raises(ValueError, match="contrastive_guidance"):
        micro_pretrainer(contrastive_guidance="random")
    with pytest.raises(ValueError, match="itm_negatives"):
        micro_pretrainer(itm_negatives="easy")
    with pytest.raises(ValueError, match="fusion_objectives_start_step"):
        micro_pretrainer(fusion_objectives_start_step=-1)
    with pytest.raises(ValueError, match="queue_size"):
        micro_pretrainer(use_momentum=True, queue_size=0)


def test_mean_pooled_embeddings_leave_out_cls_and_padding():
    pretrainer = micro_pretrainer(embedding_pooling="mean")
    batch = pretraining_batch()
    states = np.random.default_rng(0).normal(size=(4, 8, 32)).astype("float32")
    mask = batch["padding_mask"]
    pooled = (states[:, 1:] * mask[:, 1:, None]).sum(1) / mask[:, 1:].sum(1)[:, None]
    projected = numpy(pretrainer.text_projection(pooled))
    expected = projected / np.linalg.norm(projected, axis=-1, keepdims=True)
    np.testing.assert_allclose(
        numpy(pretrainer.embed_text(states, mask)), expected, rtol=1e-5, atol=1e-6
    )
    # Images: every token after [CLS] (kept and fused) counts.
    projected = numpy(pretrainer.vision_projection(states[:, 1:].mean(1)))
    expected = projected / np.linalg.norm(projected, axis=-1, keepdims=True)
    np.testing.assert_allclose(
        numpy(pretrainer.embed_image(states)), expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("guidance", ["text", "image"])
def test_itc_embeds_the_vision_pass_of_contrastive_guidance(guidance):
    pretrainer = micro_pretrainer(
        embedding_pooling="mean", contrastive_guidance=guidance
    )
    batch = pretraining_batch()
    backbone = pretrainer.backbone
    text = backbone.encode_text(batch["token_ids"], batch["padding_mask"])
    text_embedding = text[:, 0] if guidance == "text" else None
    image = backbone.encode_image(batch["images"], text_embedding)
    image_embeddings = pretrainer.embed_image(image)
    text_embeddings = pretrainer.embed_text(text, batch["padding_mask"])
    per_pair, _, _ = image_text_contrastive_loss(
        image_embeddings,
        text_embeddings,
        image_embeddings,
        text_embeddings,
        np.arange(4),
        ops.clip(pretrainer.temperature, 0.001, 0.5),
    )
    outputs = pretrainer(batch)
    np.testing.assert_allclose(
        numpy(outputs["itc_loss"]), numpy(ops.mean(per_pair)), rtol=1e-5
    )
    # The logged collapse signals: mean cosine between different rows.
    for name, embeddings in (
        ("image_similarity", numpy(image_embeddings)),
        ("text_similarity", numpy(text_embeddings)),
    ):
        cosines = embeddings @ embeddings.T
        expected = cosines[~np.eye(4, dtype=bool)].mean()
        np.testing.assert_allclose(numpy(outputs[name]), expected, rtol=1e-5)


def test_itm_with_random_negatives():
    pretrainer = micro_pretrainer(itm_negatives="random")
    batch = pretraining_batch()
    backbone = pretrainer.backbone
    text = backbone.encode_text(batch["token_ids"], batch["padding_mask"])
    image = backbone.encode_image(batch["images"], text[:, 0])
    mask = batch["padding_mask"]
    # The pretrainer's draws: its seed generator starts from seed 0.
    negatives = sample_random_negatives(np.arange(4), 4, keras.random.SeedGenerator(0))
    everything = {"text": text, "image": image, "padding_mask": mask}
    texts, images, masks, labels = hard_negative_triples(
        text, image, mask, everything, *negatives
    )
    _, logits = pretrainer.match_probability(texts, images, masks, return_logits=True)
    expected, _ = image_text_matching_loss(logits, labels)
    outputs = pretrainer(batch)
    np.testing.assert_allclose(
        numpy(outputs["itm_loss"]), numpy(ops.mean(expected)), rtol=1e-5
    )
    assert pretrainer.get_config()["itm_negatives"] == "random"


def test_itm_negatives_selected_by_their_pairs_text():
    pretrainer = micro_pretrainer(itm_negatives="random", itm_guidance="pair")
    batch = pretraining_batch()
    backbone = pretrainer.backbone
    text = backbone.encode_text(batch["token_ids"], batch["padding_mask"])
    image = backbone.encode_image(batch["images"], text[:, 0])
    mask = batch["padding_mask"]
    negative_text, negative_image = sample_random_negatives(
        np.arange(4), 4, keras.random.SeedGenerator(0)
    )
    # (image i, text j) selected by text j; (image j, text i) by text i.
    guided = [
        backbone.encode_image(batch["images"], ops.take(text[:, 0], negative_text, 0)),
        backbone.encode_image(ops.take(batch["images"], negative_image, 0), text[:, 0]),
    ]
    texts = ops.concatenate([text, ops.take(text, negative_text, 0), text])
    masks = ops.concatenate([mask, ops.take(mask, negative_text, 0), mask])
    _, logits = pretrainer.match_probability(
        texts, ops.concatenate([image, *guided]), masks, return_logits=True
    )
    expected, _ = image_text_matching_loss(logits, np.repeat([1, 0, 0], 4))
    outputs = pretrainer(batch)
    np.testing.assert_allclose(
        numpy(outputs["itm_loss"]), numpy(ops.mean(expected)), rtol=1e-5
    )
    assert pretrainer.get_config()["itm_guidance"] == "pair"
    with pytest.raises(ValueError, match="itm_guidance"):
        micro_pretrainer(itm_guidance="negative")


def test_fusion_objectives_join_at_their_start_step():
    pretrainer = micro_pretrainer(fusion_objectives_start_step=2)
    pretrainer.compile()
    batch = pretraining_batch()
    losses = []
    for _ in range(3):
        outputs = pretrainer(batch, training=True)
        losses.append((numpy(pretrainer.compute_loss(y_pred=outputs)), outputs))
    # Optimizer steps 0 and 1 train ITC alone; step 2 adds ITM and MLM.
    for step, (loss, outputs) in enumerate(losses):
        expected = numpy(outputs["itc_loss"])
        if step >= 2:
            expected += numpy(outputs["itm_loss"]) + numpy(outputs["mlm_loss"])
        np.testing.assert_allclose(loss, expected, rtol=1e-6, err_msg=step)
    assert int(numpy(pretrainer.training_steps)) == 3


class BatchLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(set(logs))


def test_fit_trains_itc_alone_before_the_start_step():
    pretrainer = micro_pretrainer(fusion_objectives_start_step=2)
    # Without weight decay, a weight that gets no gradient stays as it is.
    pretrainer.compile(
        learning_rate=1e-3,
        weight_decay=0.0,
        run_eagerly=keras.backend.backend() == "tensorflow",
    )
    fusion_weights = [
        *pretrainer.backbone.fusion_encoder.weights,
        *pretrainer.itm_head.weights,
    ]

    def values(weights):
        return [numpy(w).copy() for w in weights]

    initial = values(fusion_weights)
    vision_initial = values(pretrainer.backbone.vision_encoder.weights)
    batch_logs = BatchLogs()
    dataset = tf.data.Dataset.from_tensors(pretraining_batch()).repeat(2)
    pretrainer.fit(dataset, callbacks=[batch_logs], verbose=0)
    # Batches 0 and 1 ran the ITC-only function: no ITM or MLM, not even
    # logged as zeros, and no update of the fusion encoder or the ITM head.
    for logs in batch_logs.logs:
        assert {"itc_loss", "image_similarity", "loss"} <= logs
        assert not logs & {"itm_loss", "itm_accuracy", "mlm_loss", "mlm_accuracy"}
    for before, after in zip(initial, values(fusion_weights)):
        np.testing.assert_array_equal(after, before)
    changed = zip(vision_initial, values(pretrainer.backbone.vision_encoder.weights))
    assert any(not np.array_equal(a, b) for a, b in changed)
    # A later fit picks the count up: batch 2 trains every objective.
    pretrainer.fit(dataset.take(1), callbacks=[batch_logs], verbose=0)
    assert {"itm_loss", "itm_accuracy", "mlm_loss"} <= batch_logs.logs[-1]
    moved = zip(initial, values(fusion_weights))
    assert any(not np.array_equal(a, b) for a, b in moved)
    assert int(numpy(pretrainer.training_steps)) == 3


def test_text_tower_wider_than_the_vision_tower(tmp_path):
    # A 64-wide text tower guides the 32-wide ViT through a projection; the
    # momentum model copies the projection too.
    backbone = TRIPSBackbone(
        **{**MICRO, "text_hidden_dim": 64, "text_num_heads": 4},
        guidance_projection=True,
        text_trainable=False,
    )
    text_weights = {id(v) for v in backbone.text_encoder.weights}
    assert not text_weights & {id(v) for v in backbone.trainable_weights}
    pretrainer = TRIPSPretrainer(
        backbone,
        embedding_dim=16,
        use_momentum=True,
        queue_size=8,
        embedding_pooling="mean",
        contrastive_guidance="image",
        fusion_objectives_start_step=1,
    )
    assert pretrainer.momentum_model.guidance_dense.kernel.shape == (64, 32)
    # TensorFlow runs the two steps eagerly: tracing them (the recipes' tests
    # do) would cost more than the rest of this test.
    pretrainer.compile(
        learning_rate=1e-3, run_eagerly=keras.backend.backend() == "tensorflow"
    )
    dataset = tf.data.Dataset.from_tensors(pretraining_batch()).repeat(2)
    history = pretrainer.fit(dataset, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    path = str(tmp_path / "wide.keras")
    pretrainer.save(path)
    restored = keras.saving.load_model(path)
    batch = pretraining_batch(seed=1)
    expected = {k: numpy(v) for k, v in pretrainer(batch).items()}
    actual = {k: numpy(v) for k, v in restored(batch).items()}
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5)
    assert restored.get_config()["contrastive_guidance"] == "image"
    assert not restored.backbone.text_encoder.trainable
    assert len(restored.trainable_weights) == len(pretrainer.trainable_weights)


@pytest.mark.parametrize("floor", [0.0, 0.2])
def test_the_default_schedule_warms_up_then_decays_to_its_floor(floor):
    pretrainer = micro_pretrainer()
    pretrainer.compile(
        learning_rate=1e-3, warmup_steps=10, total_steps=110, learning_rate_floor=floor
    )
    optimizer = pretrainer.optimizer

    def rate_at(step):
        optimizer.iterations.assign(step)
        return float(numpy(optimizer.learning_rate))

    # Linear warm-up to the peak, then a cosine from the peak to floor * peak
    # over the other 100 steps; it stays at the floor after them.
    assert rate_at(5) == pytest.approx(5e-4)
    assert rate_at(10) == pytest.approx(1e-3)
    assert rate_at(60) == pytest.approx(1e-3 * (floor + (1 - floor) / 2))
    assert rate_at(110) == pytest.approx(1e-3 * floor, abs=1e-9)
    assert rate_at(500) == pytest.approx(1e-3 * floor, abs=1e-9)


def test_a_learning_rate_floor_outside_the_unit_interval_fails():
    with pytest.raises(ValueError, match=r"`learning_rate_floor` .* \[0, 1\)"):
        micro_pretrainer().compile(total_steps=110, learning_rate_floor=1.0)

import numpy as np
from keras import ops
from pretraining_utils import MICRO, pretraining_batch

from keras_trips.models import TRIPSBackbone, TRIPSPretrainer


def numpy(x):
    return ops.convert_to_numpy(x)


def micro_pretrainer(**kwargs):
    return TRIPSPretrainer(
        TRIPSBackbone(**MICRO), embedding_dim=16, use_momentum=True, **kwargs
    )


def test_queue_wraps_around_exactly():
    momentum_model = micro_pretrainer(queue_size=5).momentum_model
    queue = numpy(momentum_model.image_queue).copy()
    pointer = 0
    for step in range(4):  # batches of 3 into 5 slots: wraps every step
        rows = np.full((3, 16), step + 1.0, "float32") + np.arange(3)[:, None] / 10
        momentum_model.enqueue(rows, rows)
        for row in rows:
            queue[pointer] = row
            pointer = (pointer + 1) % 5
        np.testing.assert_array_equal(numpy(momentum_model.image_queue), queue)
        np.testing.assert_array_equal(numpy(momentum_model.text_queue), queue)
        assert int(numpy(momentum_model.queue_pointer)) == pointer
    # A batch larger than the queue leaves its last rows.
    rows = np.arange(7 * 16, dtype="float32").reshape(7, 16)
    momentum_model.enqueue(rows, rows)
    for row in rows:
        queue[pointer] = row
        pointer = (pointer + 1) % 5
    np.testing.assert_array_equal(numpy(momentum_model.image_queue), queue)


def test_keys_are_followed_by_the_queues():
    momentum_model = micro_pretrainer(queue_size=4).momentum_model
    keys = np.ones((2, 16), "float32")
    image_keys, text_keys = momentum_model.keys_with_queues(keys, 2 * keys)
    np.testing.assert_array_equal(numpy(image_keys)[:2], keys)
    np.testing.assert_array_equal(numpy(text_keys)[:2], 2 * keys)
    np.testing.assert_array_equal(
        numpy(image_keys)[2:], numpy(momentum_model.image_queue)
    )
    # The queues start as random unit rows.
    np.testing.assert_allclose(
        np.linalg.norm(numpy(momentum_model.text_queue), axis=-1), 1.0, rtol=1e-5
    )


def test_momentum_update_is_an_exact_ema():
    pretrainer = micro_pretrainer(momentum=0.9, queue_size=4)
    pairs = pretrainer.momentum_model.weight_pairs(pretrainer.online_layers())
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
    queue = numpy(pretrainer.momentum_model.image_queue).copy()
    target_now = [numpy(target).copy() for _, target in pairs]
    pretrainer(pretraining_batch(), training=False)
    np.testing.assert_array_equal(numpy(pretrainer.momentum_model.image_queue), queue)
    for (_, target), before in zip(pairs, target_now):
        np.testing.assert_array_equal(numpy(target), before)


def test_momentum_model_copies_every_online_weight_once():
    pretrainer = micro_pretrainer(queue_size=4)
    momentum_model = pretrainer.momentum_model
    pairs = momentum_model.weight_pairs(pretrainer.online_layers())
    copies = momentum_model.copies()
    assert len(copies) == 6
    assert all(layer.name.startswith("momentum_") for layer in copies)
    momentum_weights = {id(w) for layer in copies for w in layer.weights}
    assert {id(target) for _, target in pairs} == momentum_weights
    online = {id(w) for w, _ in pairs}
    assert len(online) == len(pairs) == len(momentum_weights)
    for online_weight, target in pairs:
        assert not target.trainable
        np.testing.assert_array_equal(numpy(target), numpy(online_weight))
    # The momentum MLM head is tied to the momentum token embedding.
    assert (
        momentum_model.mlm_head.token_embedding
        is momentum_model.text_encoder.token_embedding
    )
    # Only the online model trains.
    trainable = {id(w) for w in pretrainer.trainable_weights}
    assert not trainable & {id(w) for w in momentum_model.weights}


def test_encode_gives_the_momentum_features_without_gradient():
    pretrainer = micro_pretrainer(queue_size=4)
    batch = pretraining_batch()
    image, (image_embedding, text_embedding) = pretrainer.momentum_model.encode(
        batch["images"], batch["token_ids"], batch["padding_mask"]
    )
    # A fresh copy: the online model's features.
    backbone = pretrainer.backbone
    text = backbone.encode_text(batch["token_ids"], batch["padding_mask"])
    online_image = backbone.encode_image(batch["images"], text[:, 0])
    np.testing.assert_allclose(numpy(image), numpy(online_image), atol=1e-5)
    np.testing.assert_allclose(
        numpy(image_embedding), numpy(pretrainer.embed_image(online_image)), atol=1e-5
    )
    np.testing.assert_allclose(
        numpy(text_embedding), numpy(pretrainer.embed_text(text)), atol=1e-5
    )

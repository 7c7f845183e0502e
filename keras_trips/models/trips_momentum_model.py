import keras
import keras_hub
from keras import ops

from keras_trips.losses.image_text_contrastive import contrastive_embedding


def masked_lm_head(token_embedding, dtype, name):
    """The MLM head: BERT's transform, then logits tied to `token_embedding`."""
    return keras_hub.layers.MaskedLMHead(
        token_embedding=token_embedding,
        intermediate_activation="gelu",
        layer_norm_epsilon=1e-12,
        dtype=dtype,
        name=name,
    )


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSMomentumModel(keras.layers.Layer):
    """ALBEF's momentum model: an EMA copy of the online model, and queues.

    Copies of the online text, vision and fusion encoders, ITC projections
    and MLM head, which follow the online weights by an exponential moving
    average (`update`) and never train, and two queues of past momentum ITC
    embeddings that serve as extra contrastive negatives (`enqueue`). Their
    outputs are distillation targets: soft ITC targets (`encode`) and soft
    MLM targets (`masked_lm_logits`), all without gradient.

    `TRIPSPretrainer` builds it from its online layers (with
    `use_momentum=True`); it is saved with the pretrainer, not alone.

    Args:
        online_layers: the online `(text_encoder, vision_encoder,
            fusion_encoder, vision_projection, text_projection, mlm_head)`
            and, when the text guides the vision tower through one, the
            guidance projection; copied (weights included) at construction.
        momentum: float. EMA decay.
        queue_size: int. Rows of each queue; any size works, also one the
            batch does not divide or one smaller than the batch.
        embedding_pooling, contrastive_guidance: as the pretrainer's.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    momentum_model = TRIPSMomentumModel(pretrainer.online_layers(), 0.995, 4096)
    momentum_model.update(pretrainer.online_layers())  # after an optimizer step
    image, image_embedding, text_embedding = momentum_model.encode(
        images, token_ids, padding_mask
    )
    ```
    """

    def __init__(
        self,
        online_layers,
        momentum=0.995,
        queue_size=65536,
        embedding_pooling="cls",
        contrastive_guidance="text",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if queue_size < 1:
            raise ValueError(f"`queue_size` must be positive. Received: {queue_size}")
        text_encoder, vision_encoder, fusion_encoder = online_layers[:3]
        vision_projection, text_projection, mlm_head = online_layers[3:6]
        guidance_dense = online_layers[6] if len(online_layers) > 6 else None
        hidden_dim = text_encoder.hidden_dim
        embedding_dim = vision_projection.units
        sequence_shape = (None, None, hidden_dim)
        image_shape = (None, None, fusion_encoder.image_dim)

        # === Layers ===
        self.text_encoder = _copy(text_encoder)
        self.text_encoder.build((None, None))
        self.vision_encoder = _copy(vision_encoder)
        self.fusion_encoder = _copy(fusion_encoder)
        self.fusion_encoder.build(sequence_shape, image_shape)
        self.guidance_dense = None
        if guidance_dense is not None:
            self.guidance_dense = _copy(guidance_dense)
            self.guidance_dense.build((None, hidden_dim))
        self.mlm_head = masked_lm_head(
            self.text_encoder.token_embedding,
            mlm_head.dtype_policy,
            f"momentum_{mlm_head.name}",
        )
        self.mlm_head.build(sequence_shape)
        self.vision_projection = _copy(vision_projection)
        self.text_projection = _copy(text_projection)
        self.vision_projection.build((None, fusion_encoder.image_dim))
        self.text_projection.build((None, hidden_dim))
        for online, target in self.weight_pairs(online_layers):
            target.trainable = False
            # A copy: JAX must not see one buffer behind two variables.
            target.assign(ops.copy(online.value))

        def unit_rows(shape, dtype=None):
            rows = keras.random.normal(shape, seed=1)
            return rows / ops.norm(rows, axis=-1, keepdims=True)

        self.image_queue = self.add_weight(
            shape=(queue_size, embedding_dim),
            initializer=unit_rows,
            trainable=False,
            name="image_queue",
        )
        self.text_queue = self.add_weight(
            shape=(queue_size, embedding_dim),
            initializer=unit_rows,
            trainable=False,
            name="text_queue",
        )
        self.queue_pointer = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            name="queue_pointer",
        )
        self.built = True

        # === Config ===
        self.momentum = momentum
        self.queue_size = queue_size
        self.embedding_pooling = embedding_pooling
        self.contrastive_guidance = contrastive_guidance

    def copies(self):
        """The momentum layers, in the order of the online layers."""
        layers = (
            self.text_encoder,
            self.vision_encoder,
            self.fusion_encoder,
            self.vision_projection,
            self.text_projection,
            self.mlm_head,
        )
        if self.guidance_dense is not None:
            layers += (self.guidance_dense,)
        return layers

    def weight_pairs(self, online_layers):
        """`(online variable, momentum variable)` for every EMA'd weight."""
        pairs = {}
        for online, target in zip(online_layers, self.copies()):
            # The MLM heads list their tied token embeddings again: once each.
            for pair in zip(online.weights, target.weights):
                pairs.setdefault(id(pair[1]), pair)
        return list(pairs.values())

    def update(self, online_layers):
        """One EMA step towards the online weights."""
        for online, target in self.weight_pairs(online_layers):
            target.assign(
                self.momentum * target
                + (1.0 - self.momentum) * ops.stop_gradient(online)
            )

    def encode(self, images, token_ids, padding_mask):
        """The momentum image tokens and `(image, text)` ITC embeddings of
        the pairs (one text-guided vision pass, as the online model's)."""
        text = self.text_encoder(token_ids, padding_mask=padding_mask)
        guidance = text[:, 0]
        if self.guidance_dense is not None:
            guidance = self.guidance_dense(guidance)
        image = self.vision_encoder({"images": images, "text_embedding": guidance})
        contrasted_image = image
        if self.contrastive_guidance == "image":
            contrasted_image = self.vision_encoder({"images": images})
        image_embedding = contrastive_embedding(
            self.vision_projection, contrasted_image, pooling=self.embedding_pooling
        )
        text_embedding = contrastive_embedding(
            self.text_projection, text, padding_mask, self.embedding_pooling
        )
        return ops.stop_gradient(image), (
            ops.stop_gradient(image_embedding),
            ops.stop_gradient(text_embedding),
        )

    def masked_lm_logits(self, masked_token_ids, image, padding_mask, mask_positions):
        """The momentum model's MLM logits on the masked text (soft targets)."""
        text = self.text_encoder(masked_token_ids, padding_mask=padding_mask)
        fused = self.fusion_encoder(text, image, padding_mask=padding_mask)
        logits = self.mlm_head(fused, mask_positions)
        return ops.stop_gradient(ops.cast(logits, "float32"))

    def keys_with_queues(self, image_keys, text_keys):
        """The ITC keys followed by the queued ones, `(K + queue_size, E)`."""
        return (
            ops.concatenate([image_keys, self.image_queue.value], axis=0),
            ops.concatenate([text_keys, self.text_queue.value], axis=0),
        )

    def enqueue(self, image_keys, text_keys):
        """Writes the keys at the queue pointer, wrapping around the end.

        Slot s receives the last key row that lands on it, so any queue size
        works, also one smaller than the batch or not dividing it.
        """
        size = self.queue_size
        batch = ops.shape(image_keys)[0]
        pointer = self.queue_pointer.value
        # Row `offset` of the batch is the first to land on each slot.
        offset = ops.mod(ops.arange(size, dtype="int32") - pointer, size)
        written = offset < batch
        last = offset + size * ops.floor_divide(batch - 1 - offset, size)
        last = ops.clip(last, 0, batch - 1)
        for queue, rows in (
            (self.image_queue, image_keys),
            (self.text_queue, text_keys),
        ):
            queue.assign(
                ops.where(written[:, None], ops.take(rows, last, axis=0), queue.value)
            )
        self.queue_pointer.assign(ops.mod(pointer + batch, size))

    def get_config(self):
        # Built from the online layers by `TRIPSPretrainer`, which saves it.
        raise NotImplementedError(
            "TRIPSMomentumModel is saved as part of its TRIPSPretrainer."
        )


def _copy(layer):
    """A new layer of `layer`'s configuration, named `momentum_<name>`."""
    return layer.__class__.from_config(
        {**layer.get_config(), "name": f"momentum_{layer.name}"}
    )

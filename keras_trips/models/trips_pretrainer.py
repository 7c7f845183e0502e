import keras
import keras_hub
from keras import ops

from keras_trips.layers.trips_fusion_encoder import TRIPSFusionEncoder
from keras_trips.layers.trips_text_encoder import TRIPSTextEncoder
from keras_trips.models.default_optimizer import default_optimizer
from keras_trips.models.trips_vision_encoder import TRIPSVisionEncoder
from keras_trips.utils import replicas

LOSSES = ("itc_loss", "itm_loss", "mlm_loss")
ACCURACIES = ("itm_accuracy", "mlm_accuracy")


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSPretrainer(keras.Model):
    """TRIPS pre-training task: ITC, ITM with hard negatives and MLM (ALBEF).

    One text-guided vision pass per pair: the caption's text [CLS] guides the
    patch selection of its own image; ITM negatives and MLM reuse those image
    tokens (SPEC §3). With `use_momentum=True`, an EMA copy of the model (as
    ALBEF's: text, vision and fusion encoders, ITC projections and MLM head)
    provides distillation targets for ITC and MLM, and feature queues add ITC
    negatives.

    Inputs are the pre-training batches of `keras_trips.data`:
    `{"images", "token_ids", "padding_mask"}` and, for MLM,
    `"mask_positions"`, `"mask_ids"`, `"mask_weights"` (then `token_ids`
    holds the masked text; the unmasked text for ITC and ITM is restored from
    `mask_ids`). Calling the model returns the losses and accuracies;
    `fit()` logs each of them beside the total `loss`.

    Args:
        backbone: a `TRIPSBackbone`.
        embedding_dim: int. Width of the ITC embeddings.
        temperature: float. Initial ITC temperature (learned, clamped to
            [0.001, 0.5]).
        use_momentum: bool. Use the momentum model, queues and distillation.
        momentum: float. EMA decay of the momentum model.
        queue_size: int. Length of the feature queues (any size).
        distillation_alpha: float. Weight of the momentum model's soft
            targets in ITC and MLM.
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    backbone = keras_trips.models.TRIPSBackbone.from_preset("tiny")
    pretrainer = keras_trips.models.TRIPSPretrainer(backbone)
    pretrainer.compile(total_steps=1000)
    pretrainer.fit(keras_trips.datasets.scenes.scenes_dataset("train"))
    ```
    """

    def __init__(
        self,
        backbone,
        embedding_dim=256,
        temperature=0.07,
        use_momentum=False,
        momentum=0.995,
        queue_size=65536,
        distillation_alpha=0.4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if queue_size < 1:
            raise ValueError(f"`queue_size` must be positive. Received: {queue_size}")

        # === Layers ===
        self.backbone = backbone
        self.vision_projection = self._projection(embedding_dim, "vision_projection")
        self.text_projection = self._projection(embedding_dim, "text_projection")
        self.itm_head = keras.layers.Dense(
            2, dtype=backbone.dtype_policy, name="itm_head"
        )
        self.mlm_head = self._masked_lm_head(backbone.token_embedding, "mlm_head")
        self.seed_generator = keras.random.SeedGenerator(seed=0)
        hidden_dim = backbone.hidden_dim
        self.vision_projection.build((None, hidden_dim))
        self.text_projection.build((None, hidden_dim))
        self.itm_head.build((None, hidden_dim))
        self.mlm_head.build((None, None, hidden_dim))
        self.temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(temperature),
            name="temperature",
        )
        if use_momentum:
            self._build_momentum_model(embedding_dim, queue_size)
        # Every weight exists now: loading and exporting need it said.
        self.built = True

        # === Config ===
        self.embedding_dim = embedding_dim
        self.initial_temperature = temperature
        self.use_momentum = use_momentum
        self.momentum = momentum
        self.queue_size = queue_size
        self.distillation_alpha = distillation_alpha
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in LOSSES + ACCURACIES
        }

    def _projection(self, embedding_dim, name):
        return keras.layers.Dense(
            embedding_dim, dtype=self.backbone.dtype_policy, name=name
        )

    def _masked_lm_head(self, token_embedding, name):
        return keras_hub.layers.MaskedLMHead(
            token_embedding=token_embedding,
            intermediate_activation="gelu",
            layer_norm_epsilon=1e-12,
            dtype=self.backbone.dtype_policy,
            name=name,
        )

    def _build_momentum_model(self, embedding_dim, queue_size):
        def clone(layer, cls):
            return cls.from_config(
                {**layer.get_config(), "name": f"momentum_{layer.name}"}
            )

        backbone = self.backbone
        self.momentum_text_encoder = clone(backbone.text_encoder, TRIPSTextEncoder)
        self.momentum_text_encoder.build((None, None))
        self.momentum_vision_encoder = clone(
            backbone.vision_encoder, TRIPSVisionEncoder
        )
        self.momentum_fusion_encoder = clone(
            backbone.fusion_encoder, TRIPSFusionEncoder
        )
        sequence_shape = (None, None, backbone.hidden_dim)
        self.momentum_fusion_encoder.build(sequence_shape, sequence_shape)
        self.momentum_mlm_head = self._masked_lm_head(
            self.momentum_text_encoder.token_embedding, "momentum_mlm_head"
        )
        self.momentum_mlm_head.build(sequence_shape)
        self.momentum_vision_projection = self._projection(
            embedding_dim, "momentum_vision_projection"
        )
        self.momentum_text_projection = self._projection(
            embedding_dim, "momentum_text_projection"
        )
        self.momentum_vision_projection.build((None, backbone.hidden_dim))
        self.momentum_text_projection.build((None, backbone.hidden_dim))
        for online, target in self._momentum_pairs():
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

    def _momentum_pairs(self):
        """(online variable, momentum variable) for every EMA'd weight."""
        pairs = {}
        for online, target in (
            (self.backbone.text_encoder, self.momentum_text_encoder),
            (self.backbone.vision_encoder, self.momentum_vision_encoder),
            (self.backbone.fusion_encoder, self.momentum_fusion_encoder),
            (self.vision_projection, self.momentum_vision_projection),
            (self.text_projection, self.momentum_text_projection),
            (self.mlm_head, self.momentum_mlm_head),
        ):
            # The MLM heads list their tied token embeddings again: once each.
            for pair in zip(online.weights, target.weights):
                pairs.setdefault(id(pair[1]), pair)
        return list(pairs.values())

    @property
    def metrics(self):
        return [*super().metrics, *self.trackers.values()]

    # === Embeddings ===

    def embed_image(self, image_tokens):
        """The L2-normalised ITC embedding of the vision encoder's output."""
        return self._embed(self.vision_projection, image_tokens)

    def embed_text(self, text_states):
        """The L2-normalised ITC embedding of the text encoder's output."""
        return self._embed(self.text_projection, text_states)

    def _embed(self, projection, states):
        # From the [CLS] state.
        embedding = ops.cast(projection(states[:, 0]), "float32")
        return embedding / (ops.norm(embedding, axis=-1, keepdims=True) + 1e-12)

    # === Pieces of the forward pass ===

    def _momentum_update(self):
        for online, target in self._momentum_pairs():
            target.assign(
                self.momentum * target
                + (1.0 - self.momentum) * ops.stop_gradient(online)
            )

    def _momentum_features(self, images, token_ids, padding_mask):
        """The momentum model's image tokens and (image, text) ITC embeddings."""
        text = self.momentum_text_encoder(token_ids, padding_mask=padding_mask)
        image = self.momentum_vision_encoder(
            {"images": images, "text_embedding": text[:, 0]}
        )
        image_embedding = self._embed(self.momentum_vision_projection, image)
        text_embedding = self._embed(self.momentum_text_projection, text)
        return ops.stop_gradient(image), (
            ops.stop_gradient(image_embedding),
            ops.stop_gradient(text_embedding),
        )

    def _momentum_mlm_logits(self, inputs, momentum_image, padding_mask):
        """The momentum model's MLM logits on the masked text (soft targets)."""
        text = self.momentum_text_encoder(
            inputs["token_ids"], padding_mask=padding_mask
        )
        fused = self.momentum_fusion_encoder(
            text, momentum_image, padding_mask=padding_mask
        )
        logits = self.momentum_mlm_head(fused, inputs["mask_positions"])
        return ops.stop_gradient(ops.cast(logits, "float32"))

    def _enqueue(self, image_embedding, text_embedding):
        """Writes the batch at the queue pointer, wrapping around the end.

        Slot s receives the last batch row that lands on it, so any queue size
        works, also one smaller than the batch or not dividing it.
        """
        size = self.queue_size
        batch = ops.shape(image_embedding)[0]
        pointer = self.queue_pointer.value
        # Row `offset` of the batch is the first to land on each slot.
        offset = ops.mod(ops.arange(size, dtype="int32") - pointer, size)
        written = offset < batch
        last = offset + size * ops.floor_divide(batch - 1 - offset, size)
        last = ops.clip(last, 0, batch - 1)
        for queue, rows in (
            (self.image_queue, image_embedding),
            (self.text_queue, text_embedding),
        ):
            queue.assign(
                ops.where(written[:, None], ops.take(rows, last, axis=0), queue.value)
            )
        self.queue_pointer.assign(ops.mod(pointer + batch, size))

    def _contrastive_loss(self, embeddings, momentum_embeddings, training):
        """ITC loss and the global batch's in-batch similarities, `(B, B)` each.

        `embeddings` are this replica's (image, text) ITC embeddings, and
        `momentum_embeddings` the momentum model's (or None). Each row is
        contrasted with the whole global batch (and the queues); training
        then enqueues the global batch's momentum embeddings.
        """
        temperature = ops.clip(self.temperature.value, 0.001, 0.5)
        image, text = embeddings
        batch_keys = [
            replicas.all_gather(keys) for keys in momentum_embeddings or embeddings
        ]
        global_batch = ops.shape(batch_keys[0])[0]
        targets = ops.one_hot(replicas.global_rows(ops.shape(image)[0]), global_batch)
        targets_i2t = targets_t2i = targets
        image_keys, text_keys = batch_keys
        if momentum_embeddings is not None:
            image_keys = ops.concatenate([image_keys, self.image_queue.value], 0)
            text_keys = ops.concatenate([text_keys, self.text_queue.value], 0)
            targets = ops.pad(targets, ((0, 0), (0, self.queue_size)))
            image_m, text_m = momentum_embeddings
            sim_i2t_m = ops.matmul(image_m, ops.transpose(text_keys)) / temperature
            sim_t2i_m = ops.matmul(text_m, ops.transpose(image_keys)) / temperature
            alpha = self.distillation_alpha
            targets_i2t = alpha * ops.softmax(sim_i2t_m) + (1 - alpha) * targets
            targets_t2i = alpha * ops.softmax(sim_t2i_m) + (1 - alpha) * targets
        sim_i2t = ops.matmul(image, ops.transpose(text_keys)) / temperature
        sim_t2i = ops.matmul(text, ops.transpose(image_keys)) / temperature
        loss_i2t = -ops.sum(ops.log_softmax(sim_i2t) * targets_i2t, axis=-1)
        loss_t2i = -ops.sum(ops.log_softmax(sim_t2i) * targets_t2i, axis=-1)
        loss = (replicas.global_mean(loss_i2t) + replicas.global_mean(loss_t2i)) / 2
        if momentum_embeddings is not None and training:
            self._enqueue(*batch_keys)
        return (
            loss,
            replicas.all_gather(sim_i2t[:, :global_batch]),
            replicas.all_gather(sim_t2i[:, :global_batch]),
        )

    def sample_hard_negatives(self, sim_i2t, sim_t2i):
        """Per image a negative text, per text a negative image, `(B,)` each.

        Drawn in proportion to the softmax similarity, the positive (the
        diagonal) masked out.
        """
        batch = ops.shape(sim_i2t)[0]
        positive = ops.cast(ops.eye(batch), "bool")

        def draw(similarity):
            similarity = ops.stop_gradient(ops.convert_to_tensor(similarity))
            logits = ops.where(positive, -1e9, similarity)
            return keras.random.categorical(
                logits, 1, seed=self.seed_generator, dtype="int32"
            )[:, 0]

        return draw(sim_i2t), draw(sim_t2i)

    def _matching_loss(self, text, image, padding_mask, sim_i2t, sim_t2i, training):
        """ITM over B positives and 2B hard negatives; loss and accuracy.

        The negatives are drawn from the global batch (`sim_*` are its
        `(B, B)` similarities), reusing its text states and image tokens.
        """
        rows = replicas.global_rows(ops.shape(text)[0])
        negative_text, negative_image = (
            ops.take(negatives, rows)
            for negatives in self.sample_hard_negatives(sim_i2t, sim_t2i)
        )
        # Gathered as int32: collectives do not carry booleans.
        all_masks = replicas.all_gather(ops.cast(padding_mask, "int32"))
        padding_mask = ops.cast(padding_mask, "bool")
        negative_masks = ops.cast(ops.take(all_masks, negative_text, axis=0), "bool")
        masks = ops.concatenate([padding_mask, negative_masks, padding_mask], axis=0)
        all_texts = replicas.all_gather(text)
        texts = ops.concatenate(
            [text, ops.take(all_texts, negative_text, axis=0), text], axis=0
        )
        images = ops.concatenate(
            [image, image, ops.take(replicas.all_gather(image), negative_image, 0)],
            axis=0,
        )
        fused = self.backbone.fuse(texts, images, masks, training=training)
        logits = ops.cast(self.itm_head(fused[:, 0]), "float32")
        labels = ops.concatenate(
            [ops.ones_like(rows), ops.zeros_like(rows), ops.zeros_like(rows)]
        )
        loss = keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True
        )
        correct = ops.argmax(logits, axis=-1) == labels
        return replicas.global_mean(loss), replicas.global_mean(correct)

    def _masked_lm_loss(self, inputs, image, padding_mask, momentum_image, training):
        """MLM loss and accuracy over the real prediction slots.

        With the momentum model (`momentum_image` its image tokens), the
        target mixes the true token with the momentum model's prediction.
        """
        text = self.backbone.encode_text(inputs["token_ids"], padding_mask, training)
        fused = self.backbone.fuse(text, image, padding_mask, training=training)
        logits = ops.cast(self.mlm_head(fused, inputs["mask_positions"]), "float32")
        weights = inputs["mask_weights"]
        loss = keras.losses.sparse_categorical_crossentropy(
            inputs["mask_ids"], logits, from_logits=True
        )
        if momentum_image is not None:
            soft_targets = ops.softmax(
                self._momentum_mlm_logits(inputs, momentum_image, padding_mask)
            )
            distillation = -ops.sum(soft_targets * ops.log_softmax(logits), axis=-1)
            alpha = self.distillation_alpha
            loss = (1 - alpha) * loss + alpha * distillation
        correct = ops.argmax(logits, axis=-1) == ops.cast(inputs["mask_ids"], "int32")
        return replicas.global_mean(loss, weights), replicas.global_mean(
            correct, weights
        )

    def call(self, inputs, training=None):
        if inputs["images"].shape[0] == 1:
            raise ValueError("Pre-training needs batches of at least 2 pairs.")
        padding_mask = inputs.get("padding_mask")
        if padding_mask is None:
            padding_mask = ops.not_equal(inputs["token_ids"], 0)
        token_ids = unmasked_token_ids(inputs)

        text = self.backbone.encode_text(token_ids, padding_mask, training)
        image = self.backbone.encode_image(
            inputs["images"], text[:, 0], training=training
        )
        embeddings = (self.embed_image(image), self.embed_text(text))
        momentum_image = momentum_embeddings = None
        if self.use_momentum:
            if training:
                self._momentum_update()
            momentum_image, momentum_embeddings = self._momentum_features(
                inputs["images"], token_ids, padding_mask
            )
        itc_loss, sim_i2t, sim_t2i = self._contrastive_loss(
            embeddings, momentum_embeddings, training
        )
        itm_loss, itm_accuracy = self._matching_loss(
            text, image, padding_mask, sim_i2t, sim_t2i, training
        )
        outputs = {
            "itc_loss": itc_loss,
            "itm_loss": itm_loss,
            "itm_accuracy": itm_accuracy,
        }
        if "mask_positions" in inputs:
            outputs["mlm_loss"], outputs["mlm_accuracy"] = self._masked_lm_loss(
                inputs, image, padding_mask, momentum_image, training
            )
        return outputs

    # === Training ===

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = sum(y_pred[name] for name in LOSSES if name in y_pred)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        # As Keras' own compute_loss: under tf.distribute, divided by the
        # replica count, since the replicas' gradients are summed.
        return self._aggregate_additional_loss(loss)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        for name, value in y_pred.items():
            self.trackers[name].update_state(value)
        return self.get_metrics_result()

    def compile(
        self,
        optimizer="auto",
        learning_rate=1e-4,
        weight_decay=0.02,
        warmup_steps=0,
        total_steps=None,
        gradient_accumulation_steps=None,
        **kwargs,
    ):
        """Configures training; by default AdamW as in ALBEF.

        Args:
            optimizer: `"auto"` for AdamW with weight decay on every weight
                but norms, biases, the temperature and position embeddings,
                the learning rate warmed up linearly then cosine-decayed to 0
                at `total_steps` (constant without `total_steps`); or any
                Keras optimizer.
            learning_rate: float. Peak learning rate of the `"auto"` optimizer.
            weight_decay: float. Of the `"auto"` optimizer.
            warmup_steps: int. Linear warm-up steps.
            total_steps: int or `None`. Length of the cosine schedule, in
                batches (as Keras' schedules count, also when accumulating).
            gradient_accumulation_steps: int or `None`. The `"auto"`
                optimizer averages the gradients of this many batches per
                update (the momentum model still updates every batch).
            **kwargs: passed to `keras.Model.compile` (`jit_compile`, ...).
        """
        if optimizer == "auto":
            optimizer = default_optimizer(
                learning_rate,
                weight_decay,
                warmup_steps,
                total_steps,
                gradient_accumulation_steps,
            )
        super().compile(optimizer=optimizer, **kwargs)

    def save_own_variables(self, store):
        super().save_own_variables(store)
        # The hard-negative sampler's state: a reloaded model draws the same
        # negatives, so it computes the same ITM loss.
        store["sampler_state"] = self.seed_generator.state

    def load_own_variables(self, store):
        own_variables = self._trainable_variables + self._non_trainable_variables
        for i, variable in enumerate(own_variables):
            variable.assign(store[str(i)])
        self.seed_generator.state.assign(store["sampler_state"])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "embedding_dim": self.embedding_dim,
                "temperature": self.initial_temperature,
                "use_momentum": self.use_momentum,
                "momentum": self.momentum,
                "queue_size": self.queue_size,
                "distillation_alpha": self.distillation_alpha,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def unmasked_token_ids(inputs):
    """`token_ids` with the MLM-masked positions restored from `mask_ids`."""
    token_ids = inputs["token_ids"]
    if "mask_positions" not in inputs:
        return token_ids
    length = token_ids.shape[1]
    weights = ops.cast(inputs["mask_weights"], "int32")
    # (B, P, L): which position each prediction slot restores, if it is real.
    slots = ops.one_hot(inputs["mask_positions"], length, dtype="int32")
    slots = slots * weights[:, :, None]
    masked = ops.sum(slots, axis=1) > 0
    restored = ops.sum(slots * ops.cast(inputs["mask_ids"], "int32")[:, :, None], 1)
    return ops.where(masked, restored, ops.cast(token_ids, "int32"))

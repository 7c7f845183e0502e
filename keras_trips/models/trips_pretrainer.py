import os
import warnings

import keras
from keras import ops

from keras_trips.losses.hard_negatives import (
    sample_hard_negatives,
    sample_random_negatives,
)
from keras_trips.losses.image_text_contrastive import (
    EMBEDDING_POOLINGS,
    contrastive_embedding,
    image_text_contrastive_loss,
    mean_pairwise_similarity,
)
from keras_trips.losses.image_text_matching import (
    hard_negative_triples,
    image_text_matching_loss,
)
from keras_trips.losses.masked_lm import masked_lm_loss
from keras_trips.losses.selection_distillation import (
    patch_relevance,
    selection_distillation_loss,
)
from keras_trips.models import preset_directory
from keras_trips.models.default_optimizer import default_optimizer
from keras_trips.models.trips_momentum_model import TRIPSMomentumModel, masked_lm_head
from keras_trips.utils import replicas
from keras_trips.utils.saving import serialize_backbone
from keras_trips.utils.train_step import distinct_train_step

LOSSES = ("itc_loss", "itm_loss", "mlm_loss", "selection_loss")
ACCURACIES = ("itm_accuracy", "mlm_accuracy")
# Mean pairwise cosine of the ITC embeddings of a batch (collapse: near 1).
SIMILARITIES = ("image_similarity", "text_similarity")
# Which vision pass ITC embeds: the text-guided one, or one without text.
CONTRASTIVE_GUIDANCES = ("text", "image")
# How ITM draws its negatives: by ITC similarity (ALBEF), or uniformly.
ITM_NEGATIVES = ("hard", "random")
# Which text guides a negative pair's image: its positive caption's vision
# pass reused (the paper), or the pair's own text in a pass of its own.
ITM_GUIDANCES = ("reuse", "pair")
# The first `.keras` layout kept the momentum model's layers and queues in
# the pretrainer itself: its own variables were the temperature and these.
LEGACY_MOMENTUM_VARIABLES = 3


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSPretrainer(keras.Model):
    """TRIPS pre-training task: ITC, ITM with hard negatives and MLM (ALBEF).

    One text-guided vision pass per pair: the caption's text [CLS] guides the
    patch selection of its own image; ITM negatives and MLM reuse those image
    tokens (docs/method.md). The objectives:

    - ITC: symmetric InfoNCE of the image and text embeddings over the batch
      (`keras_trips.losses.image_text_contrastive_loss`);
    - ITM: a binary match head (`match_probability`) on the positives and,
      per image and per text, a hard negative drawn from the batch in
      proportion to the ITC similarity
      (`keras_trips.losses.sample_hard_negatives`, `image_text_matching_loss`),
      or with `itm_negatives="random"` a uniformly drawn other pair
      (`sample_random_negatives`: while ITC is weak, its "hard" negatives
      are mostly pairs that share objects with the positive; docs/method.md);
      a negative pair's image tokens are its positive's (`itm_guidance`);
    - MLM: the masked tokens predicted from the fusion output
      (`keras_trips.losses.masked_lm_loss`);
    - optionally, selection distillation (`selection_distillation`, not in
      the paper): the first selection stage's text-guided scores pulled
      towards the patches ITC relates to the caption
      (`keras_trips.losses.selection_distillation_loss`).

    With `use_momentum=True`, a `TRIPSMomentumModel` (an EMA copy of the
    text, vision and fusion encoders, ITC projections and MLM head) provides
    distillation targets for ITC and MLM, and its feature queues add ITC
    negatives. Under TensorFlow data parallelism each replica contrasts its
    rows with the global batch (`keras_trips.utils.replicas`).

    ITC embeds the text-guided vision pass as the paper does
    (`contrastive_guidance="text"`), or a second pass without text
    (`"image"`: guided by the image [CLS], as retrieval embeds a gallery).
    With the first, an image embedding can carry its own caption through
    the selection, a shortcut that trains ITC without aligning anything
    (docs/method.md, "Training a small model"); the second costs one more
    vision pass. `image_similarity` and `text_similarity`, logged beside the
    losses, are the mean pairwise cosines of a batch's ITC embeddings.

    Inputs are the pre-training batches of `keras_trips.data`:
    `{"images", "token_ids", "padding_mask"}` and, for MLM,
    `"masked_token_ids"`, `"mask_positions"`, `"mask_ids"`, `"mask_weights"`.
    Calling the model returns the losses and accuracies; `fit()` logs each of
    them beside the total `loss`.

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
        embedding_pooling: `"cls"` (ALBEF) or `"mean"`: how ITC pools each
            tower's output (`keras_trips.losses.contrastive_embedding`).
        contrastive_guidance: `"text"` or `"image"`: the vision pass ITC
            embeds (above).
        fusion_objectives_start_step: int. ITM and MLM join the loss at this
            batch; before it ITC trains alone. Under `fit` the batches
            before it run a train function without ITM, MLM and their
            text-guided vision pass (about 2.5 times faster on the `"small"`
            preset); their metrics are logged from the start step on.
        itm_negatives: `"hard"` (ALBEF) or `"random"`: how ITM draws its
            negatives (above).
        itm_guidance: `"reuse"` (the paper) or `"pair"`: the image tokens of
            a negative pair. `"reuse"` takes the image's own text-guided
            pass, selected by its own caption, so that the selection tells
            ITM which caption the image came with, a cue re-ranking never
            gives; `"pair"` encodes each negative image under its pair's
            text, as re-ranking does, at 2B more vision passes a step.
        selection_distillation: float. Weight of a loss, logged as
            `selection_loss` and added with ITM and MLM, that pulls the
            first selection stage's text-guided scores towards the patches
            whose final states the ITC projection matches best to the
            caption, from a text-free vision pass at keep rate 1.0 without
            gradient (`keras_trips.losses.selection_distillation_loss`;
            meant for `embedding_pooling="mean"`, where that per-patch
            match is what ITC itself trains). 0 (the paper) leaves the
            selection to learn through the fusion weights alone.
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
        embedding_pooling="cls",
        contrastive_guidance="text",
        fusion_objectives_start_step=0,
        itm_negatives="hard",
        itm_guidance="reuse",
        selection_distillation=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if queue_size < 1:
            raise ValueError(f"`queue_size` must be positive. Received: {queue_size}")
        if not selection_distillation >= 0:
            raise ValueError(
                "`selection_distillation` must be a weight >= 0. Received: "
                f"{selection_distillation}"
            )
        for name, value, choices in (
            ("embedding_pooling", embedding_pooling, EMBEDDING_POOLINGS),
            ("contrastive_guidance", contrastive_guidance, CONTRASTIVE_GUIDANCES),
            ("itm_negatives", itm_negatives, ITM_NEGATIVES),
            ("itm_guidance", itm_guidance, ITM_GUIDANCES),
        ):
            if value not in choices:
                raise ValueError(
                    f"`{name}` must be one of {choices}. Received: {value!r}"
                )
        if fusion_objectives_start_step < 0:
            raise ValueError(
                "`fusion_objectives_start_step` must be >= 0. "
                f"Received: {fusion_objectives_start_step}"
            )

        # === Layers ===
        self.backbone = backbone
        dtype = backbone.dtype_policy
        self.vision_projection = keras.layers.Dense(
            embedding_dim, dtype=dtype, name="vision_projection"
        )
        self.text_projection = keras.layers.Dense(
            embedding_dim, dtype=dtype, name="text_projection"
        )
        self.itm_head = keras.layers.Dense(2, dtype=dtype, name="itm_head")
        self.mlm_head = masked_lm_head(backbone.token_embedding, dtype, "mlm_head")
        # Draws the ITM hard negatives.
        self.seed_generator = keras.random.SeedGenerator(seed=0)
        # The text and fusion towers may be wider than the vision tower.
        text_width = backbone.text_hidden_dim
        self.vision_projection.build((None, backbone.hidden_dim))
        self.text_projection.build((None, text_width))
        self.itm_head.build((None, text_width))
        self.mlm_head.build((None, None, text_width))
        self.temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(temperature),
            name="temperature",
        )
        self.training_steps = None
        if fusion_objectives_start_step:
            # Counts the training batches (read by `compute_loss`; the
            # optimizer's count is not visible there under JAX).
            self.training_steps = self.add_weight(
                shape=(),
                initializer="zeros",
                dtype="int32",
                trainable=False,
                aggregation="only_first_replica",
                name="training_steps",
            )
        self.momentum_model = None
        if use_momentum:
            self.momentum_model = TRIPSMomentumModel(
                self.online_layers(),
                momentum=momentum,
                queue_size=queue_size,
                embedding_pooling=embedding_pooling,
                contrastive_guidance=contrastive_guidance,
                dtype=dtype,
                name="momentum_model",
            )
        # Every weight exists now; exporting (ExportArchive.track) needs it said.
        self.built = True

        # === Config ===
        self.embedding_dim = embedding_dim
        self.initial_temperature = temperature
        self.use_momentum = use_momentum
        self.momentum = momentum
        self.queue_size = queue_size
        self.distillation_alpha = distillation_alpha
        self.embedding_pooling = embedding_pooling
        self.contrastive_guidance = contrastive_guidance
        self.fusion_objectives_start_step = fusion_objectives_start_step
        self.itm_negatives = itm_negatives
        self.itm_guidance = itm_guidance
        self.selection_distillation = float(selection_distillation)
        # True while the train function of `fit` (`make_train_function`)
        # traces or runs a step that trains ITC alone: `call` leaves ITM and
        # MLM out. Elsewhere `compute_loss` gates them by `training_steps`.
        self._itc_only = False
        # Batches trained so far, counted in Python while `fit` runs.
        self._steps_seen = None
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in LOSSES + ACCURACIES + SIMILARITIES
        }

    def online_layers(self):
        """The layers the momentum model copies, in its order (the guidance
        projection last, when the backbone has one)."""
        layers = (
            self.backbone.text_encoder,
            self.backbone.vision_encoder,
            self.backbone.fusion_encoder,
            self.vision_projection,
            self.text_projection,
            self.mlm_head,
        )
        if self.backbone.guidance_dense is not None:
            layers += (self.backbone.guidance_dense,)
        return layers

    @property
    def metrics(self):
        return [*super().metrics, *self.trackers.values()]

    # === Embeddings and scores ===

    def embed_image(self, image_tokens):
        """The L2-normalised ITC embedding of the vision encoder's output."""
        return contrastive_embedding(
            self.vision_projection, image_tokens, pooling=self.embedding_pooling
        )

    def embed_text(self, text_states, padding_mask=None):
        """The L2-normalised ITC embedding of the text encoder's output
        (`padding_mask` leaves the padding out of a mean)."""
        return contrastive_embedding(
            self.text_projection, text_states, padding_mask, self.embedding_pooling
        )

    def match_probability(
        self,
        text_states,
        image_tokens,
        padding_mask,
        training=None,
        return_logits=False,
    ):
        """ITM: the probability `(B,)` that each text matches its image.

        The text states attend to the image tokens in the fusion encoder;
        the ITM head reads the fused [CLS].

        Args:
            text_states: `(B, L, D)` text encoder output.
            image_tokens: `(B, T, D)` vision encoder output (text-guided by
                the same text, as in pre-training).
            padding_mask: `(B, L)` of the text.
            return_logits: bool. Also return the head's float32 logits
                `(B, 2)` (column 1: "match").
        """
        fused = self.backbone.fuse(
            text_states, image_tokens, padding_mask, training=training
        )
        logits = ops.cast(self.itm_head(fused[:, 0]), "float32")
        probability = ops.softmax(logits)[:, 1]
        return (probability, logits) if return_logits else probability

    # === The objectives ===

    def call(self, inputs, training=None):
        self._check_inputs(inputs)
        images, token_ids = inputs["images"], inputs["token_ids"]
        padding_mask = inputs["padding_mask"]
        fusion_objectives = not (training and self._itc_only)
        distill_selection = fusion_objectives and self.selection_distillation > 0
        # One vision pass per pair, guided by its caption's text [CLS].
        text = self.backbone.encode_text(token_ids, padding_mask, training)
        image, stage_scores = None, []
        if fusion_objectives or self.contrastive_guidance == "text":
            image = self.backbone.encode_image(
                images, text[:, 0], training=training, return_scores=distill_selection
            )
            if distill_selection:
                image, stage_scores = image
        contrasted_image = image
        if self.contrastive_guidance == "image":
            contrasted_image = self.backbone.encode_image(images, training=training)
        embeddings = (
            self.embed_image(contrasted_image),
            self.embed_text(text, padding_mask),
        )
        momentum_image = momentum_embeddings = None
        if training and self.training_steps is not None:
            self.training_steps.assign_add(1)
        if self.use_momentum:
            if training:
                self.momentum_model.update(self.online_layers())
            momentum_image, momentum_embeddings = self.momentum_model.encode(
                images, token_ids, padding_mask
            )

        # The objectives contrast this replica's pairs (`rows` of the global
        # batch) with the global batch's; on one device both are the batch.
        rows = replicas.global_rows(ops.shape(text)[0])
        keys = replicas.all_gather(momentum_embeddings or embeddings)
        # ITC.
        itc_loss, sim_i2t, sim_t2i = self._image_text_contrastive(
            embeddings, keys, rows, momentum_embeddings, training
        )
        per_row = {
            "itc_loss": (itc_loss, None),
            "image_similarity": (mean_pairwise_similarity(embeddings[0]), None),
            "text_similarity": (mean_pairwise_similarity(embeddings[1]), None),
        }
        if fusion_objectives:
            # The similarities to the global batch (not the queues).
            global_rows = ops.shape(keys[0])[0]
            similarities = (sim_i2t[:, :global_rows], sim_t2i[:, :global_rows])
            per_row.update(
                self._fusion_objectives(
                    inputs, text, image, momentum_image, similarities, rows, training
                )
            )
        # No stage selects at keep rate 1.0 (a keep-rate warm-up): no scores.
        if distill_selection and stage_scores:
            per_row["selection_loss"] = (
                self._selection_distillation(images, stage_scores[0], embeddings[1]),
                None,
            )
        return {
            name: replicas.global_mean(values, weights)
            for name, (values, weights) in per_row.items()
        }

    def _fusion_objectives(
        self, inputs, text, image, momentum_image, similarities, rows, training
    ):
        """ITM and MLM: `{name: (per-row values, weights)}`; `similarities`
        the ITC similarities `(sim_i2t, sim_t2i)` of these rows to the global
        batch."""
        padding_mask = inputs["padding_mask"]
        rows_to_gather = {
            "text": text,
            "image": image,
            # Collectives do not carry booleans.
            "padding_mask": ops.cast(padding_mask, "int32"),
            "sim_i2t": similarities[0],
            "sim_t2i": similarities[1],
        }
        if self.itm_guidance == "pair":
            rows_to_gather["images"] = inputs["images"]
        global_batch = replicas.all_gather(rows_to_gather)
        # ITM, its hard negatives drawn from the global batch.
        itm_loss, itm_correct = self._image_text_matching(
            inputs["images"], text, image, padding_mask, global_batch, rows, training
        )
        per_row = {"itm_loss": (itm_loss, None), "itm_accuracy": (itm_correct, None)}
        # MLM.
        if "mask_positions" in inputs:
            mlm_loss, mlm_correct = self._masked_language_modelling(
                inputs, image, momentum_image, training
            )
            per_row["mlm_loss"] = (mlm_loss, inputs["mask_weights"])
            per_row["mlm_accuracy"] = (mlm_correct, inputs["mask_weights"])
        return per_row

    def _image_text_contrastive(
        self, embeddings, keys, rows, momentum_embeddings, training
    ):
        """ITC of this replica's pairs against the global batch's keys (and
        the queues); training then enqueues the global batch's keys."""
        temperature = ops.clip(self.temperature.value, 0.001, 0.5)
        image_keys, text_keys = keys
        if self.use_momentum:
            image_keys, text_keys = self.momentum_model.keys_with_queues(*keys)
        outputs = image_text_contrastive_loss(
            *embeddings,
            image_keys,
            text_keys,
            rows,
            temperature,
            momentum_embeddings,
            self.distillation_alpha,
        )
        if self.use_momentum and training:
            self.momentum_model.enqueue(*keys)
        return outputs

    def _image_text_matching(
        self, images, text, image, padding_mask, global_batch, rows, training
    ):
        """ITM over the B positives and 2B negatives from the global batch
        (`global_batch`: its text states, image tokens, padding masks,
        `(B, B)` similarities and, for `itm_guidance="pair"`, images)."""
        if self.itm_negatives == "random":
            negative_text, negative_image = sample_random_negatives(
                rows, ops.shape(global_batch["text"])[0], self.seed_generator
            )
        else:
            negative_text, negative_image = (
                ops.take(negatives, rows)
                for negatives in sample_hard_negatives(
                    global_batch["sim_i2t"],
                    global_batch["sim_t2i"],
                    self.seed_generator,
                )
            )
        texts, tokens, masks, labels = hard_negative_triples(
            text, image, padding_mask, global_batch, negative_text, negative_image
        )
        if self.itm_guidance == "pair":
            # The negatives' images, each selected by its pair's text [CLS].
            batch = ops.shape(text)[0]
            negative_images = ops.concatenate(
                [images, ops.take(global_batch["images"], negative_image, axis=0)]
            )
            negatives = self.backbone.encode_image(
                negative_images, texts[batch:, 0], training=training
            )
            tokens = ops.concatenate([image, negatives])
        _, logits = self.match_probability(
            texts, tokens, masks, training=training, return_logits=True
        )
        return image_text_matching_loss(logits, labels)

    def _masked_language_modelling(self, inputs, image, momentum_image, training):
        """MLM on the masked text, fused with the pair's image tokens; with
        the momentum model (`momentum_image` its image tokens), distilled
        from its predictions."""
        masked_token_ids = inputs["masked_token_ids"]
        padding_mask = inputs["padding_mask"]
        text = self.backbone.encode_text(masked_token_ids, padding_mask, training)
        fused = self.backbone.fuse(text, image, padding_mask, training=training)
        logits = ops.cast(self.mlm_head(fused, inputs["mask_positions"]), "float32")
        soft_target_logits = None
        if self.use_momentum:
            soft_target_logits = self.momentum_model.masked_lm_logits(
                masked_token_ids, momentum_image, padding_mask, inputs["mask_positions"]
            )
        return masked_lm_loss(
            logits, inputs["mask_ids"], soft_target_logits, self.distillation_alpha
        )

    def _selection_distillation(self, images, scores, text_embedding):
        """The weighted selection-distillation loss per row: the first
        stage's text-guided `scores` against the patch relevance of an
        unpruned, text-free vision pass (no gradient)."""
        tokens = ops.stop_gradient(self.backbone.encode_image(images, keep_rate=1.0))
        relevance = patch_relevance(
            text_embedding, self.vision_projection(tokens[:, 1:])
        )
        keep_rate = self.backbone.vision_encoder.keep_rate[0]
        loss = selection_distillation_loss(scores, relevance, keep_rate)
        return self.selection_distillation * loss

    def _check_inputs(self, inputs):
        if inputs["images"].shape[0] == 1:
            raise ValueError("Pre-training needs batches of at least 2 pairs.")
        if "padding_mask" not in inputs:
            raise ValueError(
                "The pre-training inputs need a `padding_mask` (1 on real "
                "tokens), as `keras_trips.data` yields it."
            )
        if "mask_positions" in inputs and "masked_token_ids" not in inputs:
            raise ValueError(
                "MLM inputs (`mask_positions`) need `masked_token_ids`, the "
                "masked text; `token_ids` is the text unmasked. Batches of "
                "`keras_trips.data` hold both."
            )

    # === Training ===

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = y_pred["itc_loss"]
        fusion_losses = [y_pred[name] for name in LOSSES[1:] if name in y_pred]
        if fusion_losses:
            fusion_loss = sum(fusion_losses)
            if self.fusion_objectives_start_step:
                started = ops.greater(
                    self.training_steps.value, self.fusion_objectives_start_step
                )
                fusion_loss = fusion_loss * ops.cast(started, fusion_loss.dtype)
            loss = loss + fusion_loss
        # Losses of `add_loss` and regularizers, one by one: under JAX's
        # gradient trace, `ops.sum` of a list of them fails.
        for additional_loss in self.losses:
            loss = loss + ops.sum(ops.cast(additional_loss, loss.dtype))
        # As Keras' own compute_loss: under tf.distribute, divided by the
        # replica count, since the replicas' gradients are summed.
        return self._aggregate_additional_loss(loss)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        for name, value in y_pred.items():
            self.trackers[name].update_state(value)
        return self.get_metrics_result()

    def get_metrics_result(self):
        # Before ITM and MLM start, their metrics are not logged as zeros; at
        # an epoch's end Keras then keeps the last step's logs.
        results = super().get_metrics_result()
        if self._itc_only:
            for name in (*LOSSES[1:], *ACCURACIES):
                results.pop(name, None)
        return results

    def fit(self, *args, **kwargs):
        # The train function counts the batches on from `training_steps`
        # (a restored checkpoint may have changed it since the last `fit`),
        # read now: JAX's `fit` releases the variables while it runs.
        self._steps_seen = None
        if self.training_steps is not None:
            self._steps_seen = int(ops.convert_to_numpy(self.training_steps))
        return super().fit(*args, **kwargs)

    def make_train_function(self, force=False):
        """Keras' train function; with `fusion_objectives_start_step`, one
        that runs a second, ITC-only compiled function for the batches
        before the start step, so they cost no ITM, MLM or text-guided
        vision pass. (A call of `steps_per_execution` batches that reaches
        the start step runs them all with every objective; `compute_loss`
        gates the early ones.)"""
        if not self.fusion_objectives_start_step:
            return super().make_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function
        # Both built now, traced at their first call: JAX's `fit` releases
        # the variables that a distributed builder reads.
        compiled = {}
        for itc_only in (True, False):
            # Keras' builder sets `train_function` (it returns it only on
            # some backends).
            with distinct_train_step(self):
                super().make_train_function(force=True)
            compiled[itc_only] = self.train_function

        def train_function(*args, **kwargs):
            if self._steps_seen is None:
                self._steps_seen = int(ops.convert_to_numpy(self.training_steps))
            batches = self.steps_per_execution
            itc_only = self._steps_seen + batches <= self.fusion_objectives_start_step
            # Read by `call` and `get_metrics_result` while the function
            # traces (and, run eagerly, while it runs).
            self._itc_only = itc_only
            try:
                with warnings.catch_warnings():
                    if itc_only:
                        # ITC alone leaves the fusion encoder and heads
                        # without gradients, by design (TensorFlow and torch
                        # say so).
                        warnings.filterwarnings(
                            "ignore", message="Gradients do not exist for variables"
                        )
                    outputs = compiled[itc_only](*args, **kwargs)
            finally:
                self._itc_only = False
            self._steps_seen += batches
            return outputs

        self.train_function = train_function
        return train_function

    def compile(
        self,
        optimizer="auto",
        learning_rate=1e-4,
        weight_decay=0.02,
        warmup_steps=0,
        total_steps=None,
        gradient_accumulation_steps=None,
        learning_rate_floor=0.0,
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
            learning_rate_floor: float in [0, 1). The `"auto"` optimizer's
                cosine ends at this fraction of the peak (ALBEF: 0). A
                floor keeps the objectives that join late
                (`fusion_objectives_start_step`) learning to the end of a
                short run.
            **kwargs: passed to `keras.Model.compile` (`jit_compile`, ...).
        """
        if optimizer == "auto":
            optimizer = default_optimizer(
                learning_rate,
                weight_decay,
                warmup_steps,
                total_steps,
                gradient_accumulation_steps,
                learning_rate_floor,
            )
        super().compile(optimizer=optimizer, **kwargs)
        # Built now, not inside the first traced step: TensorFlow traces a
        # step that creates variables twice.
        self.optimizer.build(self.trainable_variables)

    # === Presets ===

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """The pretrainer saved in a preset directory (`save_to_preset`).

        A directory that holds a backbone only (`TRIPSBackbone.save_to_preset`)
        gives a new pretrainer on that backbone, built with `**kwargs`.
        Load it uncompiled; `compile()` it to train on.

        Args:
            preset: str. A preset directory.
            **kwargs: `TRIPSPretrainer` arguments, for a backbone-only preset.
        """
        from keras_trips.models.trips_backbone import TRIPSBackbone

        preset = os.fspath(preset)
        if not preset_directory.is_preset_directory(preset):
            raise ValueError(
                f"{preset!r} is not a preset directory (a folder with "
                "config.json, as `save_to_preset` writes)."
            )
        if not preset_directory.has_task(preset):
            return cls(TRIPSBackbone.from_preset(preset), **kwargs)
        # Checked before the model is built: a trained task loads as saved.
        preset_directory.check_no_overrides(preset, kwargs)
        return preset_directory.load_preset_task(preset, cls)

    def save_to_preset(self, preset_dir, preprocessor=None):
        """Saves the backbone and the pretrainer (its heads, projections and
        momentum model; not the optimizer) as a preset directory, which
        `TRIPSPretrainer.from_preset` and `TRIPSBackbone.from_preset` load.

        Args:
            preset_dir: str. The directory (created if missing).
            preprocessor: None, or the `TRIPSTextPreprocessor` the model was
                trained with.
        """
        preset_directory.save_preset(
            self.backbone, preset_dir, task=self, preprocessor=preprocessor
        )

    def compile_from_config(self, config):
        # Keras skips a custom `compile()` on load; this one takes the saved
        # optimizer (and its schedule) as it is.
        self.compile(**keras.saving.deserialize_keras_object(config))

    def save_own_variables(self, store):
        super().save_own_variables(store)
        # The hard-negative sampler's state: a reloaded model draws the same
        # negatives, so it computes the same ITM loss.
        store["sampler_state"] = self.seed_generator.state

    def load_own_variables(self, store):
        own_variables = self._trainable_variables + self._non_trainable_variables
        if len(store.keys()) == len(own_variables) + 1 + LEGACY_MOMENTUM_VARIABLES:
            raise ValueError(
                "This TRIPSPretrainer was saved in the first `.keras` layout, "
                "which kept the momentum model's layers and queues in the "
                "pretrainer itself; they are a `TRIPSMomentumModel` now. "
                "Convert the file once with "
                "`keras_trips.models.convert_legacy_pretrainer(path, new_path)` "
                "and load `new_path`."
            )
        for i, variable in enumerate(own_variables):
            variable.assign(store[str(i)])
        self.seed_generator.state.assign(store["sampler_state"])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": serialize_backbone(self),
                "embedding_dim": self.embedding_dim,
                "temperature": self.initial_temperature,
                "use_momentum": self.use_momentum,
                "momentum": self.momentum,
                "queue_size": self.queue_size,
                "distillation_alpha": self.distillation_alpha,
                "embedding_pooling": self.embedding_pooling,
                "contrastive_guidance": self.contrastive_guidance,
                "itm_negatives": self.itm_negatives,
                "itm_guidance": self.itm_guidance,
                "selection_distillation": self.selection_distillation,
                "fusion_objectives_start_step": self.fusion_objectives_start_step,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)

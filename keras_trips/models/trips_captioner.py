import keras
import keras_hub
from keras import ops

from keras_trips.layers.trips_text_encoder import (
    bert_kernel_initializer,
    bert_layer,
)
from keras_trips.models.trips_task import TRIPSTask
from keras_trips.samplers.length_normalized_beam_sampler import (
    LengthNormalizedBeamSampler,
)

# "[CLS] a picture of" in the bert-base-uncased vocabulary.
PICTURE_PROMPT_IDS = (101, 1037, 3861, 1997)
# "[SEP]" in the bert-base-uncased vocabulary.
SEP_TOKEN_ID = 102
SAMPLERS = ("greedy", "beam")


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSCaptioner(TRIPSTask):
    """Image captioning: a causal text decoder over the image tokens.

    The task as the paper evaluates it: docs/method.md, "Other tasks".

    The prompt ("[CLS] a picture of") guides the patch selection of the
    image, through the text encoder's [CLS]. A stack of keras-hub
    `TransformerDecoder` layers (causal self-attention, cross-attention to
    the image tokens, post-LN as BERT) reads the prompt and the caption; the
    token embedding is the backbone's (shared), the output layer its
    transpose. Captions are generated on a key/value cache by keras-hub's
    greedy sampler, by beam search with length normalisation
    (`keras_trips.samplers.LengthNormalizedBeamSampler`) or by any
    `keras_hub.samplers.Sampler`.

    Called on caption features `{"images", "token_ids", "padding_mask"}`
    (`[CLS] caption [SEP] [PAD]...`, the caption readers of
    `keras_trips.data` without masking); returns the next-token logits
    `(B, L - 1, vocabulary_size)` for `token_ids[:, 1:]`, the caption after
    the prompt. `fit` needs no targets: the loss is the cross-entropy of
    those logits on the caption's tokens (padding excluded).

    Args:
        backbone: a `TRIPSBackbone`.
        prompt_token_ids: the prompt's token ids, starting with `[CLS]`.
        end_token_id: int. The id that ends a caption (`[SEP]`).
        num_layers: int. Decoder layers.
        num_heads: int or `None`. Attention heads; `None` for one per 64
            units of the text width.
        intermediate_dim: int or `None`. Feedforward width; `None` for 4x
            the text width.
        dropout: float. Dropout in the decoder.
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    train = keras_trips.datasets.scenes.scenes_dataset("train", task="captions")
    captioner = keras_trips.models.TRIPSCaptioner(backbone)
    captioner.compile(learning_rate=1e-4)
    captioner.fit(train, epochs=5)
    token_ids = captioner.generate(images, max_length=20, sampler="beam")
    ```
    """

    def __init__(
        self,
        backbone,
        prompt_token_ids=PICTURE_PROMPT_IDS,
        end_token_id=SEP_TOKEN_ID,
        num_layers=2,
        num_heads=None,
        intermediate_dim=None,
        dropout=0.1,
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        prompt_token_ids = tuple(int(i) for i in prompt_token_ids)
        vocabulary_size = backbone.token_embedding.input_dim
        for name, ids in (
            ("prompt_token_ids", prompt_token_ids),
            ("end_token_id", (end_token_id,)),
        ):
            if not ids or not all(0 <= i < vocabulary_size for i in ids):
                raise ValueError(
                    f"`{name}` must be ids in [0, {vocabulary_size}) (the "
                    f"backbone's vocabulary). Received: {ids}"
                )
        widths = self.feature_widths()
        width = widths["text"]
        num_heads = num_heads or max(1, width // 64)
        if width % num_heads:
            raise ValueError(
                f"`num_heads` ({num_heads}) must divide the text width ({width})."
            )
        intermediate_dim = intermediate_dim or 4 * width
        # Room for the prompt and the longest text of the backbone.
        sequence_length = len(prompt_token_ids) - 1 + backbone.max_sequence_length

        # Captioning reads the text tower (for the prompt's guidance) and the
        # vision tower, not the fusion encoder: no gradient reaches it.
        backbone.fusion_encoder.trainable = False

        # === Layers ===
        self.token_embedding = backbone.token_embedding
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length,
            initializer=bert_kernel_initializer(),
            dtype=backbone.dtype_policy,
            name="position_embedding",
        )
        self.embedding_norm = keras.layers.LayerNormalization(
            epsilon=1e-12, dtype=backbone.dtype_policy, name="embedding_norm"
        )
        self.embedding_dropout = keras.layers.Dropout(
            dropout, dtype=backbone.dtype_policy, name="embedding_dropout"
        )
        self.decoder_layers = [
            bert_layer(
                keras_hub.layers.TransformerDecoder,
                intermediate_dim,
                num_heads,
                dropout,
                backbone.dtype_policy,
                f"decoder_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.position_embedding.build((None, sequence_length, width))
        self.embedding_norm.build((None, None, width))
        for layer in self.decoder_layers:
            layer.build((None, None, width), (None, None, widths["image"]))

        # === Config ===
        self.prompt_token_ids = prompt_token_ids
        self.end_token_id = end_token_id
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.sequence_length = sequence_length
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="token_accuracy")
        # Every weight exists now: loading and exporting need it said.
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    # === Pieces of the forward pass ===

    def prompt_image_tokens(self, images, keep_rate=None, training=None):
        """The image tokens, selected under the guidance of the prompt."""
        batch = ops.shape(images)[0]
        prompt = ops.broadcast_to(
            ops.convert_to_tensor(self.prompt_token_ids, "int32"),
            (batch, len(self.prompt_token_ids)),
        )
        text = self.backbone.encode_text(
            prompt, ops.ones_like(prompt, "bool"), training=training
        )
        return self.backbone.encode_image(
            images, text[:, 0], keep_rate=keep_rate, training=training
        )

    def embed(self, token_ids, start_index=0, training=None):
        tokens = self.token_embedding(token_ids)
        positions = self.position_embedding(tokens, start_index=start_index)
        x = self.embedding_norm(tokens + positions)
        return self.embedding_dropout(x, training=training)

    def decoder_input(self, token_ids, padding_mask):
        """The prompt, then the caption after its `[CLS]`, and their mask."""
        batch = ops.shape(token_ids)[0]
        prompt_length = len(self.prompt_token_ids)
        prompt = ops.broadcast_to(
            ops.convert_to_tensor(self.prompt_token_ids, "int32"),
            (batch, prompt_length),
        )
        decoder_ids = ops.concatenate(
            [prompt, ops.cast(token_ids[:, 1:], "int32")], axis=1
        )
        decoder_mask = ops.concatenate(
            [ops.ones_like(prompt, "bool"), ops.cast(padding_mask[:, 1:], "bool")],
            axis=1,
        )
        return decoder_ids, decoder_mask

    def call(self, inputs, keep_rate=None, training=None):
        token_ids = inputs["token_ids"]
        if token_ids.shape[1] is not None and (
            len(self.prompt_token_ids) - 1 + token_ids.shape[1] > self.sequence_length
        ):
            raise ValueError(
                f"Captions of {token_ids.shape[1]} tokens do not fit the "
                f"decoder: at most {self.sequence_length - len(self.prompt_token_ids) + 1} "
                "(the backbone's max_sequence_length)."
            )
        padding_mask = self.padding_mask(inputs)
        image = self.prompt_image_tokens(inputs["images"], keep_rate, training)
        decoder_ids, decoder_mask = self.decoder_input(token_ids, padding_mask)
        x = self.embed(decoder_ids, training=training)
        for layer in self.decoder_layers:
            x = layer(x, image, decoder_padding_mask=decoder_mask, training=training)
        # The states before each caption token predict it.
        prompt_length = len(self.prompt_token_ids)
        x = x[:, prompt_length - 1 : -1]
        return ops.cast(self.token_embedding(x, reverse=True), "float32")

    # === Training ===

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        targets = x["token_ids"][:, 1:]
        weights = ops.cast(self.padding_mask(x)[:, 1:], "float32")
        loss = keras.losses.sparse_categorical_crossentropy(
            targets, y_pred, from_logits=True
        )
        loss = ops.sum(loss * weights) / ops.maximum(ops.sum(weights), 1.0)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        # Shaped as the predictions: tf.data may leave the rank unknown.
        targets = ops.reshape(
            ops.cast(x["token_ids"][:, 1:], "int32"), ops.shape(predicted)
        )
        weights = ops.reshape(
            ops.cast(self.padding_mask(x)[:, 1:], "float32"), ops.shape(predicted)
        )
        correct = ops.cast(predicted == targets, "float32")
        self.loss_tracker.update_state(self.compute_loss(x, y, y_pred))
        self.accuracy_tracker.update_state(correct, sample_weight=weights)
        return self.get_metrics_result()

    # === Generation ===

    def _build_cache(self, decoder_ids, image):
        """Self- and cross-attention key/value caches of the whole buffer."""
        batch, length = ops.shape(decoder_ids)[0], ops.shape(decoder_ids)[1]
        x = self.embed(decoder_ids)
        head_dim = x.shape[-1] // self.num_heads
        self_caches, cross_caches = [], []
        for layer in self.decoder_layers:
            self_cache = ops.zeros(
                (batch, 2, length, self.num_heads, head_dim), dtype=x.dtype
            )
            cross_cache = ops.zeros(
                (batch, 2, ops.shape(image)[1], self.num_heads, head_dim),
                dtype=x.dtype,
            )
            x, self_cache, cross_cache = layer(
                x,
                image,
                self_attention_cache=self_cache,
                self_attention_cache_update_index=0,
                cross_attention_cache=cross_cache,
                cross_attention_cache_update_index=0,
            )
            self_caches.append(self_cache)
            cross_caches.append(cross_cache)
        return ops.stack(self_caches, axis=1), ops.stack(cross_caches, axis=1)

    def _next_token_logits(self, decoder_ids, cache, index):
        """The sampler's `next`: the logits for position `index`, from the
        token at `index - 1` and the cache (updated there)."""
        self_caches, cross_caches, image = cache
        batch = ops.shape(decoder_ids)[0]
        token = ops.slice(decoder_ids, [0, index - 1], [batch, 1])
        x = self.embed(token, start_index=index - 1)
        updated = []
        for i, layer in enumerate(self.decoder_layers):
            x, self_cache, _ = layer(
                x,
                image,
                self_attention_cache=self_caches[:, i],
                self_attention_cache_update_index=index - 1,
                cross_attention_cache=cross_caches[:, i],
                cross_attention_cache_update_index=None,
            )
            updated.append(self_cache)
        logits = ops.cast(self.token_embedding(x, reverse=True)[:, 0], "float32")
        return logits, None, (ops.stack(updated, axis=1), cross_caches, image)

    def generate(self, images, max_length=20, sampler="greedy", keep_rate=None):
        """Captions of `images` as token ids `(B, max_length)`, after the
        prompt: the tokens up to the end token, then zeros (`[PAD]`).

        Args:
            images: `(B, H, W, C)` normalised images.
            max_length: int. The most tokens generated (the end token
                included).
            sampler: `"greedy"`, `"beam"` (4 beams ranked by
                length-normalised log-likelihood,
                `keras_trips.samplers.LengthNormalizedBeamSampler`) or a
                `keras_hub.samplers.Sampler`.
            keep_rate: the vision encoder's keep rate(s) for this call.
        """
        if isinstance(sampler, str):
            if sampler not in SAMPLERS:
                raise ValueError(
                    f"`sampler` must be one of {SAMPLERS} or a "
                    f"keras_hub.samplers.Sampler. Received: {sampler!r}"
                )
            sampler = (
                LengthNormalizedBeamSampler(num_beams=4)
                if sampler == "beam"
                else keras_hub.samplers.get(sampler)
            )
        prompt_length = len(self.prompt_token_ids)
        if not 1 <= max_length <= self.sequence_length - prompt_length:
            raise ValueError(
                f"`max_length` must be in [1, {self.sequence_length - prompt_length}]. "
                f"Received: {max_length}"
            )
        image = self.prompt_image_tokens(images, keep_rate)
        batch = ops.shape(image)[0]
        prompt = ops.broadcast_to(
            ops.convert_to_tensor(self.prompt_token_ids, "int32"),
            (batch, prompt_length),
        )
        decoder_ids = ops.concatenate(
            [prompt, ops.zeros((batch, max_length), "int32")], axis=1
        )
        mask = ops.concatenate(
            [ops.ones_like(prompt, "bool"), ops.zeros((batch, max_length), "bool")],
            axis=1,
        )
        self_caches, cross_caches = self._build_cache(decoder_ids, image)
        decoder_ids = sampler(
            next=self._next_token_logits,
            prompt=decoder_ids,
            cache=(self_caches, cross_caches, image),
            index=prompt_length,
            mask=mask,
            stop_token_ids=(self.end_token_id,),
            model=self,
        )
        generated = decoder_ids[:, prompt_length:]
        # Everything after the first end token is padding.
        ended = ops.cumsum(ops.cast(generated == self.end_token_id, "int32"), axis=1)
        after_end = (ended - ops.cast(generated == self.end_token_id, "int32")) > 0
        return ops.where(after_end, 0, generated)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "prompt_token_ids": self.prompt_token_ids,
                "end_token_id": self.end_token_id,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
            }
        )
        return config

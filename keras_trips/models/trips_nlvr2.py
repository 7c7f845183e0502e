import keras
from keras import ops

from keras_trips.layers.trips_task_head import TRIPSTaskHead
from keras_trips.models.trips_task import TRIPSTask


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSNLVR2(TRIPSTask):
    """NLVR2: is a statement true of a pair of images?

    The task as the paper evaluates it: docs/method.md, "Other tasks".

    The statement is encoded once; each image is encoded under the
    statement's guidance (one vision pass over the 2B images) and fused with
    it; the two fused [CLS] states, concatenated, go through an MLP
    (`TRIPSTaskHead`) to 2 logits (0 false, 1 true).

    Called on `{"images": (B, 2, H, W, C), "token_ids", "padding_mask"}`
    (`keras_trips.data.nlvr2_dataset`); returns logits `(B, 2)`.

    Args:
        backbone: a `TRIPSBackbone`.
        dropout: float. Dropout in the head.
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    train = keras_trips.data.nlvr2_dataset("train.jsonl", batch_size=16)
    nlvr2 = keras_trips.models.TRIPSNLVR2(backbone)
    nlvr2.compile()
    nlvr2.fit(train, epochs=5)
    ```
    """

    def __init__(self, backbone, dropout=0.1, **kwargs):
        super().__init__(backbone, **kwargs)

        # === Layers ===
        width = 2 * self.feature_widths()["fusion"]
        self.pair_head = TRIPSTaskHead(
            width,
            width,
            2,
            dropout=dropout,
            dtype=backbone.dtype_policy,
            name="pair_head",
        )

        # === Config ===
        self.dropout = dropout
        # Every weight exists now: loading and exporting need it said.
        self.built = True

    def call(self, inputs, keep_rate=None, training=None):
        images = inputs["images"]
        image_shape = tuple(self.backbone.vision_encoder.image_shape)
        if len(images.shape) != 5 or tuple(images.shape[1:]) != (2, *image_shape):
            raise ValueError(
                "NLVR2 `images` must be image pairs of shape (batch, 2, "
                f"{', '.join(map(str, image_shape))}). Received shape: "
                f"{tuple(images.shape)}"
            )
        token_ids = inputs["token_ids"]
        padding_mask = self.padding_mask(inputs)
        backbone = self.backbone
        text = backbone.encode_text(token_ids, padding_mask, training=training)
        # Left images, then right images: one vision and one fusion pass.
        text = ops.concatenate([text, text], axis=0)
        padding_mask = ops.concatenate([padding_mask, padding_mask], axis=0)
        image = backbone.encode_image(
            ops.concatenate([images[:, 0], images[:, 1]], axis=0),
            text[:, 0],
            keep_rate=keep_rate,
            training=training,
        )
        fusion = backbone.fuse(text, image, padding_mask, training=training)
        left, right = ops.split(fusion[:, 0], 2, axis=0)
        logits = self.pair_head(
            ops.concatenate([left, right], axis=-1), training=training
        )
        return ops.cast(logits, "float32")

    def default_loss(self):
        """Cross-entropy over false/true."""
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def default_metrics(self):
        """Accuracy."""
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def get_config(self):
        config = super().get_config()
        config.update({"dropout": self.dropout})
        return config

import keras
from keras import ops

from keras_trips.layers.trips_patch_embedding import patch_centers
from keras_trips.layers.trips_task_head import TRIPSTaskHead
from keras_trips.losses.box_regression_loss import BoxRegressionLoss
from keras_trips.metrics.iou_accuracy import IoUAccuracy
from keras_trips.models.trips_task import TRIPSTask

# Where the box comes from: the fused [CLS] alone (the paper), or its
# attention over the image tokens for the centre.
BOX_HEADS = ("cls", "attention")


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSGrounding(TRIPSTask):
    """Visual grounding (RefCOCO style): the box a phrase refers to.

    The task as the paper evaluates it: docs/method.md, "Other tasks".

    The phrase guides the patch selection of its image; the fused [CLS]
    state goes through an MLP (`TRIPSTaskHead`) to a sigmoid box centre and
    size, returned as normalised `(x1, y1, x2, y2)`. Trained with L1 + GIoU
    (`keras_trips.losses.BoxRegressionLoss`), evaluated by the accuracy at
    IoU >= 0.5 (`keras_trips.metrics.IoUAccuracy`).

    With `box_head="attention"` the fused [CLS] attends over the image
    tokens (one query and one key projection) and the box centre is the
    attention-weighted mean of the tokens' centres on the patch grid (a
    fused token's centre: its patches' centres weighted by the provenance
    map); the MLP gives the size. A soft arg-max over the patches learns
    where the phrase points much faster than an MLP learns to read
    coordinates out of one state (docs/method.md, "Other tasks").

    `provenance_heatmap` maps the tokens that the phrase-guided selection
    keeps back onto the patch grid: a training-free heat-map baseline.

    Called on `{"images", "token_ids", "padding_mask"}`
    (`keras_trips.data.refcoco_dataset`); returns boxes `(B, 4)`.

    Args:
        backbone: a `TRIPSBackbone`.
        dropout: float. Dropout in the head.
        box_head: `"cls"` (the paper) or `"attention"` (above).
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    train = keras_trips.data.refcoco_dataset("refs.json", batch_size=32)
    grounding = keras_trips.models.TRIPSGrounding(backbone)
    grounding.compile()
    grounding.fit(train, epochs=5)
    grounding.predict(features)  # (B, 4) boxes in [0, 1]
    ```
    """

    def __init__(self, backbone, dropout=0.1, box_head="cls", **kwargs):
        if box_head not in BOX_HEADS:
            raise ValueError(
                f"`box_head` must be one of {BOX_HEADS}. Received: {box_head!r}"
            )
        super().__init__(backbone, **kwargs)

        # === Layers ===
        widths = self.feature_widths()
        width = widths["fusion"]
        dtype = backbone.dtype_policy
        self.box_head = TRIPSTaskHead(
            width,
            width,
            4 if box_head == "cls" else 2,
            dropout=dropout,
            dtype=dtype,
            name="box_head",
        )
        self.locator_query = self.locator_key = None
        if box_head == "attention":
            self.locator_query = keras.layers.Dense(
                widths["image"], dtype=dtype, name="locator_query"
            )
            self.locator_key = keras.layers.Dense(
                widths["image"], dtype=dtype, name="locator_key"
            )
            self.locator_query.build((None, width))
            self.locator_key.build((None, None, widths["image"]))

        # === Config ===
        self.dropout = dropout
        self.box_head_type = box_head
        # Every weight exists now: loading and exporting need it said.
        self.built = True

    def call(self, inputs, keep_rate=None, training=None):
        if self.box_head_type == "cls":
            _, _, fusion = self.encode(inputs, keep_rate=keep_rate, training=training)
            box = self._head(fusion, training)
            center, size = box[:, :2], box[:, 2:]
        else:
            _, image, fusion, provenance = self.encode(
                inputs, keep_rate=keep_rate, training=training, return_provenance=True
            )
            center = self._attended_center(fusion[:, 0], image, provenance)
            size = self._head(fusion, training)
        return ops.concatenate([center - size / 2, center + size / 2], axis=-1)

    def _head(self, fusion, training):
        return ops.sigmoid(
            ops.cast(self.box_head(fusion[:, 0], training=training), "float32")
        )

    def _attended_center(self, fused_cls, image, provenance):
        """`(B, 2)` normalised `(x, y)`: the image tokens' centres weighted by
        the fused [CLS]'s attention over them."""
        query = ops.cast(self.locator_query(fused_cls), "float32")
        keys = ops.cast(self.locator_key(image), "float32")
        logits = ops.einsum("bd,btd->bt", query, keys) / ops.sqrt(
            ops.cast(ops.shape(keys)[-1], "float32")
        )
        # Tokens made of no patch (the [CLS]) have no place on the grid.
        weight = ops.sum(provenance, axis=-1)
        logits = ops.where(weight > 0, logits, -1e9)
        attention = ops.softmax(logits, axis=-1)
        token_centers = (
            ops.einsum("btn,nc->btc", provenance, patch_centers(self._grid_shape()))
            / ops.maximum(weight, 1e-9)[..., None]
        )
        return ops.einsum("bt,btc->bc", attention, token_centers)

    def _grid_shape(self):
        return tuple(self.backbone.vision_encoder.patch_embedding.grid_shape)

    def provenance_heatmap(self, inputs, keep_rate=None):
        """`(B, grid_height, grid_width)`: how much of each patch the
        phrase-guided vision encoder keeps (1 for a patch kept through every
        selection stage, its fusion weight for one fused into the extra
        token), from the vision encoder's provenance map."""
        token_ids = inputs["token_ids"]
        padding_mask = self.padding_mask(inputs)
        text = self.backbone.encode_text(token_ids, padding_mask)
        _, provenance = self.backbone.encode_image(
            inputs["images"], text[:, 0], keep_rate=keep_rate, return_provenance=True
        )
        return ops.reshape(ops.sum(provenance, axis=1), (-1, *self._grid_shape()))

    def provenance_boxes(self, inputs, keep_rate=None, threshold=0.5):
        """The heat-map baseline's boxes `(B, 4)`, normalised xyxy: the box
        around the patches whose `provenance_heatmap` is at least
        `threshold` (the whole image where none is)."""
        hot = self.provenance_heatmap(inputs, keep_rate) >= threshold
        grid_height, grid_width = hot.shape[1:]

        def extent(occupied, size):
            # First and one-past-last occupied cell; the whole axis if none.
            start = ops.argmax(occupied, axis=-1)
            end = size - ops.argmax(ops.flip(occupied, axis=-1), axis=-1)
            empty = ops.logical_not(ops.any(occupied, axis=-1))
            start = ops.where(empty, 0, start)
            end = ops.where(empty, size, end)
            return ops.cast(start, "float32") / size, ops.cast(end, "float32") / size

        x1, x2 = extent(ops.cast(ops.any(hot, axis=1), "int32"), grid_width)
        y1, y2 = extent(ops.cast(ops.any(hot, axis=2), "int32"), grid_height)
        return ops.stack([x1, y1, x2, y2], axis=-1)

    def default_loss(self):
        """L1 + GIoU."""
        return BoxRegressionLoss()

    def default_metrics(self):
        """Accuracy at IoU >= 0.5."""
        return [IoUAccuracy(0.5, name="accuracy_iou_0.5")]

    def get_config(self):
        config = super().get_config()
        config.update({"dropout": self.dropout, "box_head": self.box_head_type})
        return config

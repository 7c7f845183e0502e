import keras
from keras import ops

from keras_trips.metrics.generalized_box_iou import generalized_box_iou


@keras.saving.register_keras_serializable(package="keras_trips")
class BoxRegressionLoss(keras.losses.Loss):
    """L1 + GIoU box regression loss (as TransVG and the VLP models' grounding).

    Per example `l1_weight * mean |pred - true| + giou_weight * (1 - GIoU)`,
    on `(B, 4)` normalised `(x1, y1, x2, y2)` boxes.

    Args:
        l1_weight: float. giou_weight: float.
        name, reduction, dtype: as `keras.losses.Loss`.

    Example:
    ```python
    loss = BoxRegressionLoss()
    loss([[0.0, 0.0, 0.5, 0.5]], [[0.0, 0.0, 0.5, 0.5]])  # 0.0
    ```
    """

    def __init__(
        self,
        l1_weight=1.0,
        giou_weight=1.0,
        name="box_regression_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        l1 = ops.mean(ops.abs(y_pred - y_true), axis=-1)
        giou = generalized_box_iou(y_pred, y_true)
        return self.l1_weight * l1 + self.giou_weight * (1.0 - giou)

    def get_config(self):
        config = super().get_config()
        config.update({"l1_weight": self.l1_weight, "giou_weight": self.giou_weight})
        return config

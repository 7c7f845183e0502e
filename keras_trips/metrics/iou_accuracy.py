import keras
from keras import ops

from keras_trips.metrics.box_iou import box_iou


def box_hits(true_boxes, predicted_boxes, threshold=0.5):
    """1.0 where a predicted box overlaps its true box at IoU >= `threshold`."""
    return ops.cast(box_iou(true_boxes, predicted_boxes) >= threshold, "float32")


@keras.saving.register_keras_serializable(package="keras_trips")
class IoUAccuracy(keras.metrics.MeanMetricWrapper):
    """Visual grounding accuracy: the fraction of predicted boxes whose IoU
    with the true box is at least `threshold` (RefCOCO: 0.5).

    Boxes are `(B, 4)` `(x1, y1, x2, y2)`, both in the same coordinates.

    Args:
        threshold: float. The IoU a prediction needs to count as correct.
        name: str. dtype: the metric's dtype.

    Example:
    ```python
    metric = IoUAccuracy()
    metric.update_state([[0, 0, 2, 2], [0, 0, 1, 1]], [[0, 0, 2, 1.5], [1, 1, 2, 2]])
    metric.result()  # 0.5: IoU 0.75 counts, IoU 0 does not
    ```
    """

    def __init__(self, threshold=0.5, name="iou_accuracy", dtype=None):
        super().__init__(fn=box_hits, name=name, dtype=dtype, threshold=threshold)
        self.threshold = threshold

    def get_config(self):
        return {"threshold": self.threshold, "name": self.name, "dtype": self.dtype}

from keras import ops

from keras_trips.metrics.box_iou import box_area, intersection_and_union


def generalized_box_iou(boxes_a, boxes_b):
    """Generalized IoU (Rezatofighi et al., 2019) of paired `(..., 4)` xyxy boxes.

    `IoU - (C - U) / C`, `C` the area of the smallest box enclosing both and
    `U` their union: in [-1, 1], and unlike IoU it still has a gradient when
    the boxes do not overlap. `1 - generalized_box_iou` is the GIoU loss.

    Example:
    ```python
    generalized_box_iou(np.array([0.0, 0, 2, 2]), np.array([1.0, 1, 3, 3]))
    # 1/7 - (9 - 7) / 9 = -0.079
    ```
    """
    intersection, union = intersection_and_union(boxes_a, boxes_b)
    boxes_a = ops.cast(boxes_a, "float32")
    boxes_b = ops.cast(boxes_b, "float32")
    enclosing = ops.concatenate(
        [
            ops.minimum(boxes_a[..., :2], boxes_b[..., :2]),
            ops.maximum(boxes_a[..., 2:], boxes_b[..., 2:]),
        ],
        axis=-1,
    )
    enclosing_area = ops.maximum(box_area(enclosing), 1e-9)
    union = ops.maximum(union, 1e-9)
    return intersection / union - (enclosing_area - union) / enclosing_area

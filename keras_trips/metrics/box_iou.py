from keras import ops


def box_area(boxes):
    """Areas `(...)` of `(..., 4)` xyxy boxes (0 for inverted ones)."""
    return ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * ops.maximum(
        boxes[..., 3] - boxes[..., 1], 0.0
    )


def box_iou(boxes_a, boxes_b):
    """Intersection over union of paired `(..., 4)` boxes `(x1, y1, x2, y2)`.

    Written in `keras.ops`, differentiable, usable in losses. Returns
    `(...)`; two empty boxes have IoU 0.

    Example:
    ```python
    box_iou(np.array([0.0, 0, 2, 2]), np.array([1.0, 1, 3, 3]))  # 1 / 7
    ```
    """
    intersection, union = intersection_and_union(boxes_a, boxes_b)
    return intersection / ops.maximum(union, 1e-9)


def intersection_and_union(boxes_a, boxes_b):
    boxes_a = ops.cast(boxes_a, "float32")
    boxes_b = ops.cast(boxes_b, "float32")
    top_left = ops.maximum(boxes_a[..., :2], boxes_b[..., :2])
    bottom_right = ops.minimum(boxes_a[..., 2:], boxes_b[..., 2:])
    size = ops.maximum(bottom_right - top_left, 0.0)
    intersection = size[..., 0] * size[..., 1]
    union = box_area(boxes_a) + box_area(boxes_b) - intersection
    return intersection, union

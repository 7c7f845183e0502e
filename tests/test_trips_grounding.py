import numpy as np
from harness import numpy, run_model_saving_test, run_serialization_test
from pretraining_utils import MICRO
from task_utils import (
    BATCH,
    assert_keep_rate_changes_at_inference,
    fit_one_batch,
    task_features,
)

from keras_trips.models import TRIPSBackbone, TRIPSGrounding


def random_boxes(seed=0):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0.0, 0.5, (BATCH, 2))
    size = rng.uniform(0.3, 0.5, (BATCH, 2))
    return np.concatenate([corner, corner + size], axis=1).astype("float32")


def test_overfits_a_batch_at_iou_half(tmp_path):
    model = TRIPSGrounding(TRIPSBackbone(**MICRO))
    model.compile(learning_rate=1e-3)
    x = task_features()
    after = fit_one_batch(model, x, random_boxes(), steps=60)
    assert after["accuracy_iou_0.5"] >= 0.75
    boxes = model.predict(x, verbose=0)
    assert np.all(boxes[:, 2:] > boxes[:, :2])
    run_serialization_test(model)
    run_model_saving_test(model, x, tmp_path)
    assert_keep_rate_changes_at_inference(model, x)


def test_provenance_heatmap_and_its_boxes():
    model = TRIPSGrounding(TRIPSBackbone(**MICRO))
    x = task_features()
    # MICRO: one stage keeps 8 of the 16 patches and fuses the other 8.
    heatmap = numpy(model.provenance_heatmap(x))
    assert heatmap.shape == (BATCH, 4, 4)
    np.testing.assert_array_equal(np.sum(heatmap >= 1 - 1e-6, axis=(1, 2)), 8)
    # Kept patches count 1, fused ones their fusion weights: the attention
    # they received, not renormalised (EViT), so below 1 in all.
    fused = heatmap.sum(axis=(1, 2)) - 8
    assert np.all((fused > 0) & (fused < 1))
    boxes = numpy(model.provenance_boxes(x))
    for heat, box in zip(heatmap, boxes):
        rows, cols = np.nonzero(heat >= 0.5)
        expected = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        np.testing.assert_allclose(box, np.array(expected) / 4)
    # Keeping every patch: the box is the whole image.
    np.testing.assert_allclose(
        numpy(model.provenance_boxes(x, keep_rate=1.0)), [[0, 0, 1, 1]] * BATCH
    )

import numpy as np
import pytest
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


@pytest.mark.parametrize("box_head", ["cls", "attention"])
def test_overfits_a_batch_at_iou_half(box_head, tmp_path):
    model = TRIPSGrounding(TRIPSBackbone(**MICRO), box_head=box_head)
    model.compile(learning_rate=1e-3)
    x = task_features()
    after = fit_one_batch(model, x, random_boxes(), steps=60)
    assert after["accuracy_iou_0.5"] >= 0.75
    boxes = model.predict(x, verbose=0)
    assert np.all(boxes[:, 2:] > boxes[:, :2])
    run_serialization_test(model)
    run_model_saving_test(model, x, tmp_path)
    assert_keep_rate_changes_at_inference(model, x)


def test_attention_head_centres_the_box_on_the_attended_tokens():
    model = TRIPSGrounding(TRIPSBackbone(**MICRO), box_head="attention")
    x = task_features()
    _, image, fusion, provenance = (
        numpy(part) for part in model.encode(x, return_provenance=True)
    )
    query = fusion[:, 0] @ numpy(model.locator_query.kernel) + numpy(
        model.locator_query.bias
    )
    keys = image @ numpy(model.locator_key.kernel) + numpy(model.locator_key.bias)
    logits = np.einsum("bd,btd->bt", query, keys) / np.sqrt(keys.shape[-1])
    # MICRO: a 4 x 4 grid; the [CLS] (no patches) is never attended.
    logits[:, 0] = -np.inf
    attention = np.exp(logits - logits.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    rows, columns = np.divmod(np.arange(16), 4)
    patch_centers = np.stack([(columns + 0.5) / 4, (rows + 0.5) / 4], axis=-1)
    weights = provenance.sum(-1, keepdims=True)
    token_centers = provenance @ patch_centers / np.maximum(weights, 1e-9)
    expected = np.einsum("bt,btc->bc", attention, token_centers)
    boxes = numpy(model(x))
    np.testing.assert_allclose((boxes[:, :2] + boxes[:, 2:]) / 2, expected, atol=1e-5)
    assert model.get_config()["box_head"] == "attention"
    with pytest.raises(ValueError, match="box_head"):
        TRIPSGrounding(TRIPSBackbone(**MICRO), box_head="corners")


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

import math

import keras
import numpy as np
import pytest
from backend_utils import gradient
from harness import run_layer_test
from keras import ops

from keras_trips.layers import TRIPSPatchSelection


def reference_selection(tokens, query, keys, num_heads, keep_rate, fuse=True):
    """Plain-numpy TRIPS selection, written from docs/method.md (loops, no tricks)."""
    batch, length, width = tokens.shape
    num_tokens = length - 1
    head_dim = width // num_heads
    if query.ndim == 2:
        query = query[:, None]
    k = math.ceil(round(keep_rate * num_tokens, 6))
    outputs, all_indices, all_scores = [], [], []
    for b in range(batch):
        scores = np.zeros(num_tokens)
        for q in query[b]:
            for h in range(num_heads):
                part = slice(h * head_dim, (h + 1) * head_dim)
                logits = keys[b, 1:, part] @ q[part] / math.sqrt(head_dim)
                weights = np.exp(logits - logits.max())
                scores += weights / weights.sum()
        scores /= num_heads * len(query[b])
        ranked = sorted(range(num_tokens), key=lambda i: (-scores[i], i))
        kept = sorted(ranked[:k])
        rest = [i for i in range(num_tokens) if i not in kept]
        rows = [tokens[b, 0]] + [tokens[b, 1 + i] for i in kept]
        if fuse:
            rows.append(sum(scores[i] * tokens[b, 1 + i] for i in rest))
        outputs.append(np.stack(rows))
        all_indices.append(kept)
        all_scores.append(scores)
    return np.stack(outputs), np.array(all_indices), np.stack(all_scores)


def random_inputs(batch=3, num_tokens=12, width=8, num_queries=None):
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(batch, 1 + num_tokens, width)).astype("float32")
    keys = rng.normal(size=(batch, 1 + num_tokens, width)).astype("float32")
    shape = (batch, width) if num_queries is None else (batch, num_queries, width)
    query = rng.normal(size=shape).astype("float32")
    return tokens, query, keys


@pytest.mark.parametrize(
    "keep_rate, num_heads, num_queries, fuse",
    [(0.5, 1, None, True), (0.7, 2, None, True), (0.3, 4, 2, True), (0.6, 2, 3, False)],
)
def test_matches_numpy_reference(keep_rate, num_heads, num_queries, fuse):
    tokens, query, keys = random_inputs(num_queries=num_queries)
    layer = TRIPSPatchSelection(keep_rate, num_heads=num_heads, fuse_inattentive=fuse)
    outputs, indices, scores = layer(
        tokens, query=query, keys=keys, return_indices=True
    )
    expected, expected_indices, expected_scores = reference_selection(
        tokens, query, keys, num_heads, keep_rate, fuse
    )
    np.testing.assert_allclose(ops.convert_to_numpy(scores), expected_scores, atol=1e-6)
    np.testing.assert_array_equal(ops.convert_to_numpy(indices), expected_indices)
    np.testing.assert_allclose(ops.convert_to_numpy(outputs), expected, atol=1e-5)
    assert ops.convert_to_numpy(indices).dtype == np.int32


def test_keep_rate_one_returns_the_tokens_and_the_true_scores():
    tokens, query, keys = random_inputs()
    layer = TRIPSPatchSelection(1.0, num_heads=2)
    outputs, indices, scores = layer(
        tokens, query=query, keys=keys, return_indices=True
    )
    _, _, expected_scores = reference_selection(tokens, query, keys, 2, 0.5)
    np.testing.assert_array_equal(ops.convert_to_numpy(outputs), tokens)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(indices), np.tile(np.arange(12), (3, 1))
    )
    np.testing.assert_allclose(ops.convert_to_numpy(scores), expected_scores, atol=1e-6)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer(tokens, query=query, keys=keys)), tokens
    )


def test_default_query_is_the_cls_token_and_keys_the_tokens():
    tokens, _, _ = random_inputs()
    outputs = TRIPSPatchSelection(0.5, num_heads=2)(tokens)
    expected, _, _ = reference_selection(tokens, tokens[:, 0], tokens, 2, 0.5)
    np.testing.assert_allclose(ops.convert_to_numpy(outputs), expected, atol=1e-5)


def test_ties_keep_the_lower_index():
    tokens, _, _ = random_inputs(batch=2, num_tokens=10)
    # Tokens 0 and 3 lead; 2, 5, 7 and 9 tie for the last two places.
    scores = np.full((2, 10), 0.05, "float32")
    scores[:, [0, 3]] = 0.2
    scores[:, [2, 5, 7, 9]] = 0.1
    layer = TRIPSPatchSelection(0.4)  # k = 4
    _, indices = layer.select(tokens, ops.convert_to_tensor(scores))
    np.testing.assert_array_equal(ops.convert_to_numpy(indices), [[0, 2, 3, 5]] * 2)


def test_keep_rate_one_is_identity():
    tokens, query, keys = random_inputs()
    outputs = TRIPSPatchSelection(1.0)(tokens, query=query, keys=keys)
    np.testing.assert_array_equal(ops.convert_to_numpy(outputs), tokens)


def test_gradient_reaches_the_query_through_the_fused_token():
    tokens, query, keys = random_inputs()
    fused = TRIPSPatchSelection(0.5, num_heads=2)
    grad = gradient(lambda q: fused(tokens, query=q, keys=keys)[:, -1], query)
    assert np.abs(grad).max() > 1e-4
    # Without fusion the kept tokens are copies: no gradient to the query.
    dropped = TRIPSPatchSelection(0.5, num_heads=2, fuse_inattentive=False)
    grad = gradient(lambda q: dropped(tokens, query=q, keys=keys), query)
    np.testing.assert_array_equal(grad, np.zeros_like(query))


def test_symbolic_shapes_and_functional_model():
    tokens = keras.Input((1 + 196, 64))
    query = keras.Input((64,))
    layer = TRIPSPatchSelection(0.7, num_heads=4)
    outputs, indices, scores = layer(tokens, query=query, return_indices=True)
    assert outputs.shape == (None, 1 + 138 + 1, 64)
    assert indices.shape == (None, 138)
    assert scores.shape == (None, 196)
    model = keras.Model([tokens, query], layer(tokens, query=query))
    data = random_inputs(batch=2, num_tokens=196, width=64)
    assert tuple(model.predict(list(data[:2]), verbose=0).shape) == (2, 140, 64)


@pytest.mark.parametrize("call_kwargs", [{}, {"return_indices": True}])
def test_layer(call_kwargs, tmp_path):
    tokens, query, keys = random_inputs()
    # 12 tokens at keep 0.5: [CLS], 6 kept, the fused one; with the kept
    # indices and the float32 scores when asked for.
    shapes = [(3, 1 + 6 + 1, 8)]
    if call_kwargs:
        shapes += [(3, 6), (3, 12)]
    run_layer_test(
        TRIPSPatchSelection,
        {"keep_rate": 0.5, "num_heads": 2},
        {"tokens": tokens, "query": query, "keys": keys},
        expected_output_shape=shapes,
        call_kwargs=call_kwargs,
        expected_num_trainable_weights=0,
        # No weights to train; the gradient test above follows the query.
        run_training_check=False,
        float32_outputs=1 if call_kwargs else 0,
        tmp_path=tmp_path,
    )
    assert keras.saving.get_registered_name(TRIPSPatchSelection) == (
        "keras_trips>TRIPSPatchSelection"
    )


@pytest.mark.parametrize("keep_rate", [0, 1.5, float("nan"), -0.1, "high"])
def test_bad_keep_rate(keep_rate):
    with pytest.raises(ValueError, match="keep_rate"):
        TRIPSPatchSelection(keep_rate)


@pytest.mark.parametrize(
    "tokens_shape, query_shape, keys_shape, message",
    [
        ((2, 8), None, None, "tokens"),
        ((2, 1, 2, 8), None, None, "tokens"),
        ((2, 2, 8), None, None, "too few image tokens"),
        ((2, 9, 8), (2, 6), None, "query` width 6 does not match"),
        ((2, 9, 8), (8,), None, "query"),
        ((2, 9, 8), None, (2, 7, 8), "keys"),
        ((2, 9, 6), None, None, "not divisible by num_heads"),
    ],
)
def test_bad_shapes(tokens_shape, query_shape, keys_shape, message):
    layer = TRIPSPatchSelection(0.5, num_heads=4)
    tokens = np.zeros(tokens_shape, "float32")
    query = None if query_shape is None else np.zeros(query_shape, "float32")
    keys = None if keys_shape is None else np.zeros(keys_shape, "float32")
    with pytest.raises(ValueError, match=message):
        layer(tokens, query=query, keys=keys)

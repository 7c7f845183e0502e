import math

import numpy as np
import pytest
from harness import numpy, randomize_weights, run_layer_test
from test_trips_patch_selection import reference_selection

from keras_trips.layers import TRIPSVisionBlock

CONFIG = {"hidden_dim": 16, "num_heads": 2, "mlp_dim": 32}
# Two LayerNorms, the fused qkv, the attention output and the MLP's two
# Dense layers, each with its kernel (or scale) and bias.
NUM_WEIGHTS = 12


def block_inputs(batch=2, num_patches=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "tokens": rng.normal(size=(batch, 1 + num_patches, 16)).astype("float32"),
        "text_embedding": rng.normal(size=(batch, 16)).astype("float32"),
    }


def test_layer_without_selection(tmp_path):
    # No symbolic call: the block then returns None for the indices and
    # scores, which Keras' functional API does not take as an output. The
    # encoders call blocks from their own `call`; functional models compose
    # `TRIPSPatchSelection`.
    run_layer_test(
        TRIPSVisionBlock,
        CONFIG,
        {"tokens": block_inputs()["tokens"]},
        expected_output_shape=(2, 17, 16),
        expected_num_trainable_weights=NUM_WEIGHTS,
        run_symbolic_check=False,
        tmp_path=tmp_path,
    )


def test_layer_with_selection(tmp_path):
    # Keep 8 of 16 patches and fuse the rest: tokens, kept indices, scores.
    run_layer_test(
        TRIPSVisionBlock,
        {**CONFIG, "keep_rate": 0.5},
        block_inputs(),
        expected_output_shape=[(2, 1 + 8 + 1, 16), (2, 8), (2, 16)],
        expected_num_trainable_weights=NUM_WEIGHTS,
        float32_outputs=1,
        tmp_path=tmp_path,
    )


def layer_norm(x, norm):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    normalized = (x - mean) / np.sqrt(variance + norm.epsilon)
    return normalized * numpy(norm.gamma) + numpy(norm.beta)


def dense(x, layer):
    return x @ numpy(layer.kernel) + numpy(layer.bias)


def gelu(x):
    """The exact, erf-based GELU."""
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def reference_block(block, tokens):
    """A pre-LN ViT block in numpy, written from the ViT paper."""
    heads, head_dim = block.num_heads, block.head_dim
    qkv = dense(layer_norm(tokens, block.attention_norm), block.qkv_dense)
    query, keys, values = np.split(qkv, 3, axis=-1)
    attended = np.zeros_like(query)
    for h in range(heads):
        part = slice(h * head_dim, (h + 1) * head_dim)
        logits = query[..., part] @ keys[..., part].transpose(0, 2, 1)
        logits = logits / math.sqrt(head_dim)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        attended[..., part] = weights @ values[..., part]
    x = tokens + dense(attended, block.output_dense)
    hidden = dense(layer_norm(x, block.mlp_norm), block.mlp_intermediate)
    return x + dense(gelu(hidden), block.mlp_output)


def built_block(**kwargs):
    """A block with random weights, biases included: the block adds the key
    and value biases in its own way (see `TRIPSVisionBlock._project`)."""
    block = TRIPSVisionBlock(**CONFIG, **kwargs)
    block(**block_inputs())
    return randomize_weights(block)


def test_matches_a_numpy_vit_block():
    block = built_block()
    tokens = block_inputs()["tokens"]
    output, indices, scores = block(tokens)
    assert indices is None and scores is None
    np.testing.assert_allclose(numpy(output), reference_block(block, tokens), atol=1e-4)


def test_selection_scores_match_numpy_attention_with_the_key_bias():
    block = built_block(keep_rate=0.5)
    inputs = block_inputs()
    _, indices, scores = block(**inputs)
    width = block.hidden_dim

    def project(x):
        return dense(layer_norm(x, block.attention_norm), block.qkv_dense)

    # The text [CLS]'s query and the tokens' keys, with their biases. Only
    # scores and indices are compared: the keys stand in for the tokens.
    text_query = project(inputs["text_embedding"])[:, :width]
    keys = project(inputs["tokens"])[..., width : 2 * width]
    _, expected_indices, expected_scores = reference_selection(
        keys, text_query, keys, block.num_heads, keep_rate=0.5
    )
    np.testing.assert_allclose(numpy(scores), expected_scores, atol=1e-5)
    np.testing.assert_array_equal(numpy(indices), expected_indices)


def test_selection_keeps_the_block_output_of_the_kept_tokens():
    # With selection the kept tokens are the plain block's tokens (selection
    # sits before the MLP, which works token by token).
    selecting = TRIPSVisionBlock(**CONFIG, keep_rate=0.5, fuse_inattentive=False)
    plain = TRIPSVisionBlock(**CONFIG)
    inputs = block_inputs()
    tokens, indices, _ = selecting(**inputs)
    plain(inputs["tokens"])
    plain.set_weights(selecting.get_weights())
    full, _, _ = plain(inputs["tokens"])
    kept = np.take_along_axis(numpy(full)[:, 1:], numpy(indices)[..., None], axis=1)
    np.testing.assert_allclose(numpy(tokens)[:, 1:], kept, atol=1e-5)
    np.testing.assert_allclose(numpy(tokens)[:, 0], numpy(full)[:, 0], atol=1e-5)


def test_keep_rate_override_per_call():
    block = TRIPSVisionBlock(**CONFIG, keep_rate=0.5)
    inputs = block_inputs()
    tokens, indices, _ = block(**inputs, keep_rate=0.25)
    assert tuple(tokens.shape) == (2, 1 + 4 + 1, 16)
    assert tuple(indices.shape) == (2, 4)
    tokens, indices, _ = block(**inputs, keep_rate=1.0)
    assert tuple(tokens.shape) == (2, 17, 16) and indices is None


def test_bad_inputs():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        TRIPSVisionBlock(hidden_dim=16, num_heads=3, mlp_dim=32)
    block = TRIPSVisionBlock(**CONFIG, keep_rate=0.5)
    inputs = block_inputs()
    with pytest.raises(ValueError, match="text_embedding"):
        block(inputs["tokens"], text_embedding=inputs["text_embedding"][:, :8])
    with pytest.raises(ValueError, match="keep_rate"):
        block(**inputs, keep_rate=1.5)
    with pytest.raises(ValueError, match="guidance"):
        block(**inputs, guidance="audio")

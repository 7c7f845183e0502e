import os

import keras
import numpy as np
import pytest
from harness import (
    randomize_weights,
    run_model_saving_test,
    run_precision_test,
    run_serialization_test,
)
from keras import ops

from keras_trips.layers import TRIPSPatchSelection
from keras_trips.models import TRIPSVisionEncoder

TINY = dict(
    image_shape=(32, 32, 3),
    patch_size=8,
    num_layers=3,
    num_heads=2,
    hidden_dim=16,
    mlp_dim=32,
)


def tiny_encoder(**overrides):
    return TRIPSVisionEncoder(**{**TINY, "selection_layers": (0, 2), **overrides})


def tiny_inputs(batch=2, hidden_dim=16, image_size=32):
    rng = np.random.default_rng(0)
    return {
        "images": rng.uniform(size=(batch, image_size, image_size, 3)).astype(
            "float32"
        ),
        "text_embedding": rng.normal(size=(batch, hidden_dim)).astype("float32"),
    }


def numpy(x):
    return ops.convert_to_numpy(x)


def test_output_shape_follows_the_paper_token_counts():
    encoder = TRIPSVisionEncoder(
        num_layers=10, num_heads=2, hidden_dim=16, mlp_dim=16, selection_layers=(4, 9)
    )
    # 224 px, patch 16: 196 patches -> 138 + 1 fused -> 98 + 1 fused (docs/method.md).
    assert encoder.sequence_lengths()[-1] == 1 + 98 + 1
    assert encoder.sequence_lengths()[5] == 1 + 138 + 1
    tokens = encoder(tiny_inputs(batch=1, image_size=224))
    assert tuple(tokens.shape) == (1, 100, 16)


def test_all_keep_rates_one_equal_the_plain_vit():
    selecting = tiny_encoder(keep_rate=1.0)
    plain = TRIPSVisionEncoder(**TINY, selection_layers=())
    plain.set_weights(selecting.get_weights())
    inputs = tiny_inputs()
    np.testing.assert_allclose(
        numpy(selecting(inputs)), numpy(plain(inputs)), atol=1e-6, rtol=0
    )


def test_text_guidance_uses_the_block_query_and_key_projections():
    # Random biases too: the block leaves the key bias out of its logits.
    encoder = randomize_weights(tiny_encoder(keep_rate=0.5))
    inputs = tiny_inputs()
    block = encoder.blocks[0]
    tokens = encoder.patch_embedding(inputs["images"])
    normed = block.attention_norm(tokens)
    text_query = block.query_dense(block.attention_norm(inputs["text_embedding"]))
    _, indices, scores = block(tokens, text_embedding=inputs["text_embedding"])
    selection = TRIPSPatchSelection(0.5, num_heads=2)
    _, expected_indices, expected_scores = selection(
        tokens, query=text_query, keys=block.key_dense(normed), return_indices=True
    )
    np.testing.assert_array_equal(numpy(indices), numpy(expected_indices))
    np.testing.assert_allclose(numpy(scores), numpy(expected_scores), atol=1e-6)


def test_int8_quantized_encoder_stays_close():
    # Quantized projections go through Keras' own Dense calls, which add
    # every bias themselves (the float path folds the key and value biases).
    encoder = randomize_weights(tiny_encoder(keep_rate=0.5))
    inputs = tiny_inputs()
    expected = numpy(encoder(inputs))
    encoder.quantize("int8")
    assert encoder.blocks[0].qkv_dense.quantization_mode == "int8"
    error = np.abs(numpy(encoder(inputs)) - expected).max()
    assert error < 0.05 * np.abs(expected).max()


def test_text_changes_the_selection_and_missing_text_falls_back_to_image():
    encoder = tiny_encoder(keep_rate=0.5)
    inputs = tiny_inputs()
    other_text = {**inputs, "text_embedding": -inputs["text_embedding"]}
    assert not np.allclose(numpy(encoder(inputs)), numpy(encoder(other_text)))
    image_guided = tiny_encoder(keep_rate=0.5, guidance="image")
    image_guided.set_weights(encoder.get_weights())
    np.testing.assert_allclose(
        numpy(encoder({"images": inputs["images"]})),
        numpy(image_guided(inputs)),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        numpy(encoder(inputs["images"])), numpy(image_guided(inputs)), atol=1e-6
    )


@pytest.mark.parametrize("guidance", ["text+image", "random"])
def test_other_guidance_modes(guidance):
    encoder = tiny_encoder(keep_rate=0.5, guidance=guidance)
    assert tuple(encoder(tiny_inputs()).shape) == (
        2,
        encoder.sequence_lengths()[-1],
        16,
    )


def test_provenance_map_composes_the_stages():
    encoder = tiny_encoder(keep_rate=(0.5, 0.5))
    inputs = tiny_inputs()
    tokens, provenance = encoder(inputs, return_provenance=True)
    provenance = numpy(provenance)
    assert provenance.shape == (2, tokens.shape[1], 16)
    # Recompute both stages by hand from the blocks' own indices and scores.
    x = encoder.patch_embedding(inputs["images"])
    expected = np.concatenate([np.zeros((1, 16)), np.eye(16)])[None].repeat(2, 0)
    for block in encoder.blocks:
        x, indices, scores = block(x, text_embedding=inputs["text_embedding"])
        if indices is None:
            continue
        indices, scores = numpy(indices), numpy(scores)
        rows = []
        for b in range(2):
            rest = [i for i in range(len(scores[b])) if i not in indices[b]]
            fused = sum(scores[b, i] * expected[b, 1 + i] for i in rest)
            rows.append([expected[b, 0], *expected[b, 1 + indices[b]], fused])
        expected = np.array(rows)
    np.testing.assert_allclose(provenance, expected, atol=1e-6)
    np.testing.assert_array_equal(provenance[:, 0], 0.0)  # the [CLS]
    # No patch is counted more than once in all.
    assert provenance.sum(axis=1).max() <= 1.0 + 1e-6


def test_keep_rate_override_at_inference():
    encoder = tiny_encoder(keep_rate=0.5)
    inputs = tiny_inputs()
    assert tuple(encoder(inputs, keep_rate=0.25).shape) == (2, 1 + 2 + 1, 16)
    plain = TRIPSVisionEncoder(**TINY, selection_layers=())
    plain.set_weights(encoder.get_weights())
    np.testing.assert_allclose(
        numpy(encoder(inputs, keep_rate=1.0)), numpy(plain(inputs)), atol=1e-6
    )
    encoder.set_keep_rate((0.75, 0.5))
    assert tuple(encoder(inputs).shape) == (2, encoder.sequence_lengths()[-1], 16)
    assert encoder.sequence_lengths()[-1] == 1 + 7 + 1


def test_position_embeddings_are_interpolated_for_another_image_size(tmp_path):
    small = tiny_encoder()
    path = str(tmp_path / "small.weights.h5")
    small.save_weights(path)
    large = tiny_encoder(image_shape=(48, 48, 3))
    large.load_weights(path)
    source = numpy(small.patch_embedding.position_embedding)
    target = numpy(large.patch_embedding.position_embedding)
    assert target.shape == (1 + 36, 16)
    np.testing.assert_array_equal(target[0], source[0])
    # The corner patches of a 4x4 grid resized to 6x6 stay near their source.
    source_grid, target_grid = (
        source[1:].reshape(4, 4, 16),
        target[1:].reshape(6, 6, 16),
    )
    assert (
        np.abs(target_grid[0, 0] - source_grid[0, 0]).mean()
        < np.abs(target_grid[0, 0] - source_grid[3, 3]).mean()
    )
    np.testing.assert_array_equal(
        numpy(large.blocks[1].qkv_dense.kernel),
        numpy(small.blocks[1].qkv_dense.kernel),
    )
    assert (
        tuple(large(tiny_inputs(image_size=48)).shape)[1]
        == large.sequence_lengths()[-1]
    )


def test_query_key_and_value_parts_are_thirds_of_the_fused_projection():
    block = tiny_encoder().blocks[0]
    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    kernel, bias = numpy(block.qkv_dense.kernel), numpy(block.qkv_dense.bias)
    assert kernel.shape == (16, 48)
    for index, part in enumerate(
        (block.query_dense, block.key_dense, block.value_dense)
    ):
        third = slice(16 * index, 16 * (index + 1))
        np.testing.assert_allclose(
            numpy(part(x)), x @ kernel[:, third] + bias[third], atol=1e-5
        )
    assert not block.query_dense.weights


# A tiny encoder with random weights (selection at blocks 0 and 2, keep rate
# 0.5), saved under JAX with its inputs and outputs by the code of commit
# 0b8a580, whose blocks held the query, key and value projections as three
# Dense layers.
LEGACY_ENCODER = os.path.join(
    os.path.dirname(__file__), "data", "legacy_vision_encoder"
)


def test_files_with_separate_query_key_value_projections_load(tmp_path):
    recorded = np.load(LEGACY_ENCODER + ".npz")
    inputs = {
        "images": recorded["images"],
        "text_embedding": recorded["text_embedding"],
    }
    encoder = keras.saving.load_model(LEGACY_ENCODER + ".keras")
    tokens, provenance = encoder(inputs, return_provenance=True)
    np.testing.assert_allclose(numpy(tokens), recorded["tokens"], atol=1e-5)
    np.testing.assert_allclose(numpy(provenance), recorded["provenance"], atol=1e-6)
    # Saved again it holds the fused layout, and loads the same.
    path = str(tmp_path / "resaved.keras")
    encoder.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(numpy(restored(inputs)), numpy(encoder(inputs)))


def test_every_layer_is_built_at_construction():
    # An unbuilt sublayer makes Keras' trainers re-trace or re-run the model
    # eagerly on every predict_on_batch/train_on_batch to build it.
    encoder = tiny_encoder()
    assert all(layer.built for layer in encoder._flatten_layers())


def test_compiled_fit_step():
    # Keras' jit_compile on torch is torch.compile with inductor: minutes of
    # C++ builds on a 2-core CPU for this step alone, so torch runs eagerly.
    jit_compile = keras.backend.backend() != "torch"
    encoder = tiny_encoder(keep_rate=0.5)
    images = keras.Input((32, 32, 3), name="images")
    text = keras.Input((16,), name="text_embedding")
    tokens = encoder({"images": images, "text_embedding": text})
    logits = keras.layers.Dense(3)(tokens[:, 0])
    model = keras.Model({"images": images, "text_embedding": text}, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    inputs = tiny_inputs(batch=4)
    labels = np.array([0, 1, 2, 0])
    # The first epoch's loss is that before any update (one batch an epoch).
    losses = model.fit(inputs, labels, epochs=10, batch_size=4, verbose=0)
    assert losses.history["loss"][-1] < losses.history["loss"][0]


def test_model(tmp_path):
    config = {**TINY, "selection_layers": (0, 2), "keep_rate": (0.5, 0.7)}
    encoder = TRIPSVisionEncoder(**config, guidance="text+image")
    run_serialization_test(encoder)
    run_precision_test(TRIPSVisionEncoder, config, tiny_inputs())
    run_model_saving_test(encoder, tiny_inputs(), tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"selection_layers": (3,)}, "out of range"),
        ({"selection_layers": (-1,)}, "out of range"),
        ({"keep_rate": 0.0}, "keep_rate"),
        ({"keep_rate": (0.5,)}, "1 keep rates for 2 selection layers"),
        ({"guidance": "audio"}, "guidance"),
        ({"image_shape": (30, 30, 3)}, "not divisible by patch_size"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_encoder(**overrides)


def test_bad_inputs():
    encoder = tiny_encoder()
    inputs = tiny_inputs()
    with pytest.raises(ValueError, match="images` of shape"):
        encoder({**inputs, "images": inputs["images"][:, :16]})
    with pytest.raises(ValueError, match="text \\[CLS\\] width must equal"):
        encoder({**inputs, "text_embedding": np.zeros((2, 8), "float32")})
    with pytest.raises(ValueError, match="keep_rate"):
        encoder(inputs, keep_rate=1.5)

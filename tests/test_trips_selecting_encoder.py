"""`with_patch_selection` on keras-hub's ViT, CLIP, SigLIP and DINOv2 encoders."""

import math

import keras
import keras_hub
import numpy as np
import pytest
from harness import randomize_weights
from keras import ops

from keras_trips.converters.convert_vit import vision_encoder_from_keras_hub
from keras_trips.models import TRIPSSelectingEncoder, with_patch_selection

# 32 px, patch 8: N = 16 patches; 3 blocks, width 32, 2 heads.
IMAGE_SHAPE = (32, 32, 3)
WIDTH = 32
NUM_PATCHES = 16
SELECTION_LAYERS = (0, 2)
ARCHITECTURES = ("vit", "clip", "siglip", "dinov2")
NUM_REGISTERS = 2
# Tokens before the patches, never pruned.
PREFIX = {"vit": 1, "clip": 1, "siglip": 0, "dinov2": 1 + NUM_REGISTERS}


def build_encoder(architecture):
    common = dict(num_layers=3, num_heads=2, hidden_dim=WIDTH)
    if architecture == "vit":
        encoder = keras_hub.models.ViTBackbone(
            image_shape=IMAGE_SHAPE, patch_size=8, mlp_dim=64, **common
        )
    elif architecture == "clip":
        encoder = keras_hub.models.CLIPVisionEncoder(
            patch_size=8, intermediate_dim=64, image_shape=IMAGE_SHAPE, **common
        )
    elif architecture == "siglip":
        encoder = keras_hub.models.SigLIPVisionEncoder(
            patch_size=8, intermediate_dim=64, image_shape=IMAGE_SHAPE, **common
        )
    else:
        encoder = keras_hub.models.DINOV2Backbone(
            patch_size=8,
            intermediate_dim=64,
            num_register_tokens=NUM_REGISTERS,
            image_shape=IMAGE_SHAPE,
            position_embedding_shape=IMAGE_SHAPE,
            **common,
        )
    randomize(encoder)
    return encoder


def randomize(model):
    """`randomize_weights`, and DINOv2's derived position embeddings."""
    randomize_weights(model)
    if isinstance(model, keras_hub.models.DINOV2Backbone):
        # DINOv2 saves `position_embeddings` and derives the interpolated copy
        # from them when loading; here both have the image's grid.
        embeddings = model.embeddings
        # A copy: under JAX, one array in two variables is a buffer that
        # a compiled train step would donate twice.
        embeddings.interpolated_position_embeddings.assign(
            ops.convert_to_numpy(embeddings.position_embeddings)
        )


@pytest.fixture(scope="module", params=ARCHITECTURES)
def architecture(request):
    return request.param


@pytest.fixture(scope="module")
def encoder(architecture):
    return build_encoder(architecture)


def inputs(batch=2, text_width=WIDTH):
    rng = np.random.default_rng(0)
    return {
        "images": rng.uniform(size=(batch, *IMAGE_SHAPE)).astype("float32"),
        "text_embedding": rng.normal(size=(batch, text_width)).astype("float32"),
    }


def encoder_inputs(architecture, data):
    """What the keras-hub model itself takes: ViT a tensor, the others a dict."""
    return data["images"] if architecture == "vit" else {"images": data["images"]}


def numpy(x):
    return ops.convert_to_numpy(x)


def test_keep_rate_one_equals_the_encoder(architecture, encoder):
    data = inputs()
    expected = numpy(encoder(encoder_inputs(architecture, data)))
    selecting = with_patch_selection(encoder, SELECTION_LAYERS, 1.0)
    np.testing.assert_allclose(numpy(selecting(data)), expected, atol=1e-5)
    np.testing.assert_allclose(
        numpy(selecting(encoder_inputs(architecture, data))), expected, atol=1e-5
    )


def test_token_counts_at_keep_0_7(architecture, encoder):
    # 16 candidates -> 12 kept + 1 fused = 13 -> ceil(0.7 * 13) = 10 + 1 = 11,
    # behind the prefix (docs/method.md); SigLIP's fused token is a candidate too.
    prefix = PREFIX[architecture]
    selecting = with_patch_selection(encoder, SELECTION_LAYERS, 0.7)
    assert selecting.sequence_lengths() == [
        prefix + 16,
        prefix + 13,
        prefix + 13,
        prefix + 11,
    ]
    outputs, provenance = selecting(inputs(), return_provenance=True)
    assert tuple(provenance.shape) == (2, prefix + 11, NUM_PATCHES)
    if architecture == "siglip":
        assert tuple(outputs.shape) == (2, WIDTH)  # pooled by its head
    else:
        assert tuple(outputs.shape) == (2, prefix + 11, WIDTH)
    provenance = numpy(provenance)
    # The prefix tokens hold no patch; every patch is kept or fused.
    np.testing.assert_array_equal(provenance[:, :prefix], 0.0)
    assert np.all(provenance.sum(axis=1) > 0)


def test_weights_are_shared_and_the_encoder_is_untouched(architecture, encoder):
    data = inputs()
    before = numpy(encoder(encoder_inputs(architecture, data)))
    config = encoder.get_config()
    selecting = with_patch_selection(encoder, SELECTION_LAYERS, 0.5)
    selecting(data)
    assert {id(v) for v in selecting.trainable_weights} == {
        id(v) for v in encoder.trainable_weights
    }
    assert encoder.get_config() == config
    np.testing.assert_array_equal(
        numpy(encoder(encoder_inputs(architecture, data))), before
    )


@pytest.mark.parametrize("source", ["vit", "clip"])
def test_text_guided_selection_equals_the_trips_vision_encoder(source):
    # The TRIPS encoder holding the same weights selects with its own blocks:
    # same scores, kept patches, fused tokens and outputs.
    encoder = build_encoder(source)
    selecting = with_patch_selection(encoder, SELECTION_LAYERS, 0.6)
    reference = vision_encoder_from_keras_hub(
        encoder, selection_layers=SELECTION_LAYERS, keep_rate=0.6
    )
    data = inputs()
    tokens, provenance = selecting(data, return_provenance=True)
    expected_tokens, expected_provenance = reference(data, return_provenance=True)
    np.testing.assert_allclose(numpy(provenance), numpy(expected_provenance), atol=1e-5)
    np.testing.assert_allclose(numpy(tokens), numpy(expected_tokens), atol=1e-4)


def test_prefix_and_kept_tokens_pass_through_a_last_block_selection(
    architecture, encoder
):
    # Selection in the last block only: the MLP and final norm act token by
    # token, so the prefix ([CLS], DINOv2's registers) and each kept token
    # come out as in the plain encoder, at their kept positions.
    if architecture == "siglip":
        pytest.skip("SigLIP pools its tokens; the other tests cover it")
    data = inputs()
    selecting = with_patch_selection(encoder, (2,), 0.5)
    tokens, provenance = selecting(data, return_provenance=True)
    tokens, provenance = numpy(tokens), numpy(provenance)
    plain = numpy(encoder(encoder_inputs(architecture, data)))
    prefix = PREFIX[architecture]
    np.testing.assert_allclose(tokens[:, :prefix], plain[:, :prefix], atol=1e-5)
    kept = provenance[:, prefix:-1].argmax(-1)  # one-hot rows: the kept patches
    assert kept.shape == (2, 8)
    expected = np.take_along_axis(plain[:, prefix:], kept[..., None], axis=1)
    np.testing.assert_allclose(tokens[:, prefix:-1], expected, atol=1e-5)


def test_siglip_image_guidance_is_the_mean_query_and_the_fused_token_a_candidate():
    encoder = build_encoder("siglip")
    selecting = with_patch_selection(encoder, SELECTION_LAYERS, 0.7)
    data = {"images": inputs()["images"]}
    first, second = selecting.selection_trace(data)

    # Stage 1 by hand: scores are the softmax of the mean query of the block's
    # normalised tokens against its keys, per head, averaged over heads.
    block = encoder.encoder_layers[0]
    normed = block.layer_norm1(encoder.embedding(data["images"]))
    queries = numpy(block.self_attn.query_dense(normed))  # (B, N, H, d)
    keys = numpy(block.self_attn.key_dense(normed))
    logits = np.einsum("bhd,bnhd->bhn", queries.mean(1), keys) / math.sqrt(16)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    np.testing.assert_allclose(numpy(first["scores"]), probabilities.mean(1), atol=1e-5)

    # Stage 2 scores all 13 tokens, the fused one included: the patches fused
    # in stage 1 get score through it.
    fused = numpy(first["provenance"])[:, -1] > 0
    second_scores = numpy(second["scores"])
    assert fused.sum() == 2 * 4
    assert np.all(second_scores[fused] > 0)


def test_text_guidance_changes_the_selection_and_image_guidance_is_the_fallback(
    architecture, encoder
):
    data = inputs()
    selecting = with_patch_selection(encoder, SELECTION_LAYERS, 0.5)
    imaged = with_patch_selection(encoder, SELECTION_LAYERS, 0.5, guidance="image")
    images = {"images": data["images"]}
    _, text_map = selecting(data, return_provenance=True)
    _, fallback_map = selecting(images, return_provenance=True)
    _, image_map = imaged(data, return_provenance=True)
    np.testing.assert_array_equal(numpy(fallback_map), numpy(image_map))
    assert not np.allclose(numpy(text_map), numpy(image_map))


def test_keep_rate_override_at_call_time(encoder):
    selecting = with_patch_selection(encoder, SELECTION_LAYERS, 0.7)
    _, provenance = selecting(inputs(), keep_rate=(0.5, 1.0), return_provenance=True)
    # 16 -> 8 kept + 1 fused; the second stage keeps all 9.
    assert provenance.shape[1] == selecting.num_prefix_tokens + 9


def test_query_projection_for_another_text_width(encoder):
    with pytest.warns(UserWarning, match=r"Dense\(24 -> 32\)"):
        selecting = with_patch_selection(
            encoder, SELECTION_LAYERS, 0.5, query_projection=24
        )
    assert selecting.query_projection.built
    own = {id(variable) for variable in encoder.weights}
    added = [v for v in selecting.trainable_weights if id(v) not in own]
    assert sorted(tuple(v.shape) for v in added) == [(24, 32), (32,)]
    selecting(inputs(text_width=24))

    owned = keras.layers.Dense(WIDTH)
    selecting = with_patch_selection(
        encoder, SELECTION_LAYERS, 0.5, query_projection=owned
    )
    selecting(inputs(text_width=10))
    assert owned.kernel.shape == (10, WIDTH)

    plain = with_patch_selection(encoder, SELECTION_LAYERS, 0.5)
    with pytest.raises(ValueError, match="query_projection"):
        plain(inputs(text_width=24))


def test_keras_save_and_load_round_trip(architecture, encoder, tmp_path):
    selecting = with_patch_selection(encoder, SELECTION_LAYERS, (0.5, 0.7))
    path = str(tmp_path / "selecting.keras")
    selecting.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, TRIPSSelectingEncoder)
    assert restored.keep_rate == (0.5, 0.7)
    data = inputs()
    np.testing.assert_allclose(numpy(restored(data)), numpy(selecting(data)), atol=1e-6)


# DINOv2's mask token only serves masked-image pre-training.
@pytest.mark.filterwarnings("ignore:Gradients do not exist:UserWarning")
def test_compiled_predict_and_fit(architecture, encoder):
    # Keras' jit_compile on torch is torch.compile with inductor: minutes of
    # C++ builds on a small CPU, so torch runs eagerly (as the other tests).
    # JAX compiles all four with XLA; TensorFlow's XLA bridge compiles the
    # selection with and without a class token (its other two encoders run
    # as traced graphs: XLA on CPU costs 10-15 s per model).
    backend = keras.backend.backend()
    jit_compile = backend == "jax" or (
        backend == "tensorflow" and architecture in ("vit", "siglip")
    )
    selecting = with_patch_selection(build_encoder(architecture), SELECTION_LAYERS, 0.5)
    symbolic = {
        "images": keras.Input(IMAGE_SHAPE, name="images"),
        "text_embedding": keras.Input((WIDTH,), name="text_embedding"),
    }
    features = selecting(symbolic)
    pooled = features if architecture == "siglip" else features[:, 0]
    model = keras.Model(symbolic, keras.layers.Dense(3)(pooled))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=loss, jit_compile=jit_compile
    )
    data = inputs(batch=4)
    labels = np.array([0, 1, 2, 0])
    eager = numpy(model(data))
    np.testing.assert_allclose(model.predict(data, verbose=0), eager, atol=1e-4)
    model.fit(data, labels, epochs=5, batch_size=4, verbose=0)
    # The loss is read eagerly: one compiled function fewer to build.
    assert numpy(loss(labels, model(data))) < numpy(loss(labels, eager))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(selection_layers=(3,)), "out of range"),
        (dict(selection_layers=(1, 1)), "repeats"),
        (dict(keep_rate=0.0), "keep_rate"),
        (dict(keep_rate=(0.5,)), "keep rates"),
        (dict(guidance="audio"), "guidance"),
        (dict(query_projection="wide"), "query_projection"),
    ],
)
def test_bad_arguments(kwargs, message):
    encoder = build_encoder("vit")
    arguments = dict(selection_layers=SELECTION_LAYERS, keep_rate=0.7) | kwargs
    with pytest.raises(ValueError, match=message):
        with_patch_selection(encoder, **arguments)


def test_unsupported_encoders_and_bad_inputs():
    with pytest.raises(ValueError, match="ViTBackbone, CLIPVisionEncoder"):
        with_patch_selection(keras.Sequential([keras.layers.Dense(2)]), (0,), 0.5)
    selecting = with_patch_selection(build_encoder("vit"), SELECTION_LAYERS, 0.7)
    with pytest.raises(ValueError, match=r"images of shape \(batch, 32, 32, 3\)"):
        selecting(np.zeros((1, 48, 48, 3), "float32"))
    with pytest.raises(ValueError, match="Received keys"):
        selecting({"pixels": np.zeros((1, 32, 32, 3), "float32")})

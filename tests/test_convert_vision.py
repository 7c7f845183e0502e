import importlib.util
import json
import os

import keras
import keras_hub
import numpy as np
import pytest
from backend_utils import transformers_reference
from harness import randomize_weights
from safetensors.numpy import load_file, save_file

from keras_trips.converters import (
    VisionCheckpoint,
    load_hf_vision_encoder,
    vision_encoder_from_hf,
    vision_encoder_from_keras_hub,
)
from keras_trips.layers.trips_patch_embedding import interpolate_position_embedding
from keras_trips.models import TRIPSVisionEncoder

# A non-default ViT: 32 px images, 8 px patches (a 4x4 grid), 2 blocks of 3
# heads of width 16, MLP 96. Selection in block 1 at keep rate 1.0: the plain
# ViT.
ARCHITECTURE = {
    "image_size": 32,
    "patch_size": 8,
    "num_hidden_layers": 2,
    "hidden_size": 48,
    "num_attention_heads": 3,
    "intermediate_size": 96,
}
PLAIN = {"selection_layers": (1,), "keep_rate": 1.0}
TOLERANCE = 1e-4


def images(size=32):
    return np.random.default_rng(0).uniform(size=(2, size, size, 3)).astype("float32")


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def randomize_parameters(model, torch):
    """Weights large enough for sharp attention, random biases and LayerNorm
    parameters (HF initialises these to 0 and 1), so a misplaced tensor shows."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(std=0.2)
            if "norm" in name and name.endswith("weight"):
                parameter.add_(1.0)


def save_hf(model, folder, torch):
    """Save `model` and return its reference tokens on `images()`."""
    model.save_pretrained(folder, safe_serialization=True)
    pixel_values = torch.tensor(images().transpose(0, 3, 1, 2))  # NHWC -> NCHW
    with torch.no_grad():
        return model(pixel_values=pixel_values)


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    """(checkpoint folder, ViTModel's last_hidden_state on `images()`)."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    config = transformers.ViTConfig(**ARCHITECTURE, layer_norm_eps=1e-6)
    model = transformers.ViTModel(config, add_pooling_layer=False).eval()
    randomize_parameters(model, torch)
    folder = tmp_path_factory.mktemp("hf_vit")
    return str(folder), save_hf(model, folder, torch).last_hidden_state.numpy()


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    """(checkpoint folder, CLIPVisionModel's post_layernorm(last_hidden_state))."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(**ARCHITECTURE)
    ).eval()
    randomize_parameters(model, torch)
    folder = tmp_path_factory.mktemp("hf_clip")
    output = save_hf(model, folder, torch)
    with torch.no_grad():
        # HF normalises only the pooled [CLS]; the encoder normalises all tokens.
        expected = model.post_layernorm(output.last_hidden_state)
    return str(folder), expected.numpy()


def write_checkpoint(folder, config, tensors):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as file:
        json.dump(config, file)
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    return str(folder)


def read_checkpoint(folder):
    with open(os.path.join(folder, "config.json")) as file:
        config = json.load(file)
    return config, load_file(os.path.join(folder, "model.safetensors"))


# === Hugging Face parity ===


@transformers_reference
def test_hf_vit_matches_transformers(hf_vit):
    folder, expected = hf_vit
    encoder = vision_encoder_from_hf(folder, **PLAIN)
    assert encoder.layer_norm_epsilon == 1e-6 and encoder.patch_bias
    actual = to_numpy(encoder(images()))
    assert actual.shape == (2, 17, 48)
    assert np.abs(actual - expected).max() <= TOLERANCE


@transformers_reference
def test_hf_clip_matches_transformers(hf_clip):
    folder, expected = hf_clip
    encoder = vision_encoder_from_hf(folder, **PLAIN)
    config = encoder.get_config()
    assert config["activation"] == "quick_gelu"
    assert config["pre_norm"] and not config["patch_bias"]
    assert config["layer_norm_epsilon"] == 1e-5
    actual = to_numpy(encoder(images()))
    assert np.abs(actual - expected).max() <= TOLERANCE


@transformers_reference
def test_full_clip_checkpoint_loads_its_vision_tower(tmp_path, hf_clip):
    folder, expected = hf_clip
    vision_config, tensors = read_checkpoint(folder)
    config = {"model_type": "clip", "vision_config": vision_config}
    tensors = {f"vision_model.{name}": value for name, value in tensors.items()}
    tensors["logit_scale"] = np.array(2.66, "float32")
    tensors["text_model.embeddings.token_embedding.weight"] = np.zeros((5, 8), "f4")
    clip = write_checkpoint(tmp_path / "clip", config, tensors)
    assert VisionCheckpoint(clip).architecture == "clip_vision_model"
    actual = to_numpy(vision_encoder_from_hf(clip, **PLAIN)(images()))
    assert np.abs(actual - expected).max() <= TOLERANCE


# === keras-hub parity ===


def test_keras_hub_vit_backbone_matches(tmp_path):
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=2,
        num_heads=3,
        hidden_dim=48,
        mlp_dim=96,
        layer_norm_epsilon=1e-5,
    )
    randomize_weights(backbone)
    encoder = vision_encoder_from_keras_hub(backbone, **PLAIN)
    expected = to_numpy(backbone(images()))  # keras-hub normalises all tokens
    actual = to_numpy(encoder(images()))
    assert actual.shape == expected.shape == (2, 17, 48)
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_keras_hub_clip_matches():
    vision = keras_hub.models.CLIPVisionEncoder(
        patch_size=8,
        hidden_dim=48,
        num_layers=2,
        num_heads=3,
        intermediate_dim=96,
        image_shape=(32, 32, 3),
    )
    randomize_weights(vision)
    # Presets hold arange here; a freshly built encoder holds zeros.
    vision.embedding.position_ids.assign(np.arange(17)[None])
    encoder = vision_encoder_from_keras_hub(vision, **PLAIN)
    assert encoder.activation == "quick_gelu" and encoder.pre_norm
    expected = to_numpy(vision({"images": images()}))
    actual = to_numpy(encoder(images()))
    assert np.abs(actual - expected).max() <= TOLERANCE


# === Position interpolation ===


@transformers_reference
def test_other_image_size_interpolates_positions(hf_vit):
    folder, _ = hf_vit
    _, tensors = read_checkpoint(folder)
    source = tensors["embeddings.position_embeddings"][0]  # (1 + 4 * 4, 48)
    encoder = vision_encoder_from_hf(folder, image_size=48, **PLAIN)
    positions = encoder.patch_embedding.position_embedding.numpy()
    assert positions.shape == (1 + 6 * 6, 48)
    np.testing.assert_array_equal(positions[0], source[0])  # [CLS] kept
    np.testing.assert_allclose(
        positions, to_numpy(interpolate_position_embedding(source, (6, 6))), atol=1e-6
    )
    assert to_numpy(encoder(images(48))).shape == (2, 37, 48)


# === Errors ===


@transformers_reference
def test_shape_mismatch_names_tensor_and_shapes(hf_vit):
    folder, _ = hf_vit
    encoder = TRIPSVisionEncoder(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=2,
        num_heads=3,
        hidden_dim=48,
        mlp_dim=80,
        selection_layers=(),
        layer_norm_epsilon=1e-6,
    )
    before = [w.numpy() for w in encoder.weights]
    with pytest.raises(
        ValueError,
        match=r"'encoder\.layer\.0\.intermediate\.dense\.weight' has shape "
        r"\(96, 48\).*\(48, 80\)",
    ):
        load_hf_vision_encoder(encoder, folder)
    # Checked before anything is assigned: the encoder is unchanged.
    for old, new in zip(before, encoder.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())


@transformers_reference
def test_head_count_and_activation_must_match(hf_vit, hf_clip):
    kwargs = {"image_shape": (32, 32, 3), "patch_size": 8, "num_layers": 2}
    kwargs.update(hidden_dim=48, mlp_dim=96, selection_layers=())
    encoder = TRIPSVisionEncoder(num_heads=4, layer_norm_epsilon=1e-6, **kwargs)
    with pytest.raises(
        ValueError, match=r"num_heads=3, but the encoder has num_heads=4"
    ):
        load_hf_vision_encoder(encoder, hf_vit[0])
    encoder = TRIPSVisionEncoder(num_heads=3, layer_norm_epsilon=1e-5, **kwargs)
    with pytest.raises(ValueError, match=r"activation='quick_gelu'.*'gelu'"):
        load_hf_vision_encoder(encoder, hf_clip[0])


@transformers_reference
def test_missing_tensor(tmp_path, hf_vit):
    config, tensors = read_checkpoint(hf_vit[0])
    del tensors["encoder.layer.1.output.dense.bias"]
    folder = write_checkpoint(tmp_path / "incomplete", config, tensors)
    with pytest.raises(
        ValueError, match=r"missing tensor 'encoder\.layer\.1\.output\.dense\.bias'"
    ):
        vision_encoder_from_hf(folder, **PLAIN)


def test_unknown_architecture(tmp_path):
    folder = write_checkpoint(
        tmp_path / "deit", {"model_type": "deit"}, {"x": np.zeros(1, "float32")}
    )
    with pytest.raises(ValueError, match=r"model_type 'deit'.*'vit'"):
        VisionCheckpoint(folder)


def test_unsupported_activation(tmp_path):
    config = {"model_type": "vit", **ARCHITECTURE, "hidden_act": "relu"}
    folder = write_checkpoint(tmp_path / "relu", config, {"x": np.zeros(1, "f4")})
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        vision_encoder_from_hf(folder)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        vision_encoder_from_hf(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.config\.json"):
        VisionCheckpoint(tmp_path / "empty")
    folder = tmp_path / "config_only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(FileNotFoundError, match=r"config_only.model\.safetensors"):
        VisionCheckpoint(folder)


# === CLI ===


@transformers_reference
def test_cli_writes_a_loadable_encoder(tmp_path, hf_clip):
    # CLIP: quick GELU, the embedding norm and the bias-free patches round-trip.
    folder, expected = hf_clip
    path = os.path.join(os.path.dirname(__file__), "..", "tools", "convert_vision.py")
    spec = importlib.util.spec_from_file_location("convert_vision", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    output = str(tmp_path / "vision.keras")
    cli.main([folder, output, "--selection-layers", "1", "--keep-rate", "1.0"])
    encoder = keras.saving.load_model(output)
    assert isinstance(encoder, TRIPSVisionEncoder)
    assert np.abs(to_numpy(encoder(images())) - expected).max() <= TOLERANCE

import numpy as np
import pytest
from harness import numpy
from pretraining_utils import MICRO

from keras_trips.layers.trips_patch_embedding import interpolate_position_embedding
from keras_trips.models import (
    TRIPSVQA,
    TRIPSBackbone,
    TRIPSVisionEncoder,
    load_backbone,
)


@pytest.fixture(scope="module")
def saved_task(tmp_path_factory):
    """A micro VQA model (32 px) saved as .keras, and its backbone."""
    backbone = TRIPSBackbone(**MICRO)
    path = str(tmp_path_factory.mktemp("saved") / "vqa.keras")
    TRIPSVQA(backbone, answers=["yes", "no"]).save(path)
    return path, backbone


def test_the_saved_size_loads_the_same_backbone(saved_task):
    path, backbone = saved_task
    loaded = load_backbone(path)
    for source, copy in zip(backbone.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(numpy(source.value), numpy(copy.value))


def test_a_higher_resolution_at_keep_one_is_the_plain_vit(saved_task):
    path, backbone = saved_task
    resized = load_backbone(path, image_size=48)
    encoder = resized.vision_encoder
    assert encoder.image_shape == (48, 48, 3)
    assert encoder.patch_embedding.position_embedding.shape == (1 + 36, 32)
    # The plain ViT (no selection) at 48 px with the saved weights and the
    # positions interpolated from the 4x4 to the 6x6 grid.
    source = backbone.vision_encoder
    plain = TRIPSVisionEncoder(
        image_shape=(48, 48, 3),
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        selection_layers=(),
    )
    weights = source.get_weights()
    positions = source.patch_embedding.position_embedding
    index = next(i for i, w in enumerate(source.weights) if w is positions)
    weights[index] = numpy(interpolate_position_embedding(weights[index], (6, 6)))
    plain.set_weights(weights)
    images = np.random.default_rng(0).uniform(size=(2, 48, 48, 3)).astype("float32")
    text = np.random.default_rng(1).normal(size=(2, 32)).astype("float32")
    np.testing.assert_allclose(
        numpy(encoder({"images": images, "text_embedding": text}, keep_rate=1.0)),
        numpy(plain(images)),
        atol=1e-5,
    )
    # The text and fusion towers are the saved ones.
    np.testing.assert_array_equal(
        numpy(resized.token_embedding.embeddings),
        numpy(backbone.token_embedding.embeddings),
    )


def test_bad_sizes_and_files_are_rejected(saved_task, tmp_path):
    path, _ = saved_task
    with pytest.raises(ValueError, match="multiple of the patch size"):
        load_backbone(path, image_size=50)
    encoder_path = str(tmp_path / "encoder.keras")
    plain = TRIPSVisionEncoder(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        selection_layers=(),
    )
    plain.save(encoder_path)
    with pytest.raises(ValueError, match="neither a TRIPS backbone"):
        load_backbone(encoder_path)

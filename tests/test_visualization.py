"""keras_trips.visualization and tools/visualize_selection.py."""

import importlib.util
import os
import struct
import warnings

import keras
import keras_hub
import matplotlib
import numpy as np
import pytest
from backend_utils import end_to_end
from matplotlib.patches import Rectangle
from PIL import Image
from pretraining_utils import MICRO

from keras_trips.models import (
    TRIPSBackbone,
    TRIPSPretrainer,
    TRIPSVisionEncoder,
    with_patch_selection,
)
from keras_trips.visualization import (
    figure_size_px,
    plot_selection,
    write_selection_examples,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# 32 px, patch 8: a 4 x 4 grid of 16 patches.
GRID = (4, 4)
WIDTH = 16


def tiny_encoder():
    return TRIPSVisionEncoder(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=3,
        num_heads=2,
        hidden_dim=WIDTH,
        mlp_dim=32,
        selection_layers=(0, 2),
        keep_rate=0.5,
    )


def tiny_backbone():
    # The real WordPiece vocabulary, so that captions can be embedded.
    return TRIPSBackbone(**{**MICRO, "vocabulary_size": 30522})


def image(seed=0):
    return np.random.default_rng(seed).uniform(size=(32, 32, 3)).astype("float32")


def drawn_kept_cells(figure, guidance, stage):
    """(row, column) of every kept-cell outline of a stage in a column."""
    (axis,) = [a for a in figure.axes if a.get_gid() == f"selection-{guidance}"]
    cells = set()
    for patch in axis.patches:
        if isinstance(patch, Rectangle) and patch.get_gid() == f"kept-stage-{stage}":
            center_x = patch.get_x() + patch.get_width() / 2
            center_y = patch.get_y() + patch.get_height() / 2
            cells.add((int(center_y // 8), int(center_x // 8)))
    return cells


def provenance_kept_cells(provenance):
    """Cells of the one-hot rows of a provenance map `(T, 16)`."""
    rows = [row for row in provenance if row.max() == 1.0 and (row > 0).sum() == 1]
    return {divmod(int(row.argmax()), GRID[1]) for row in rows}


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


def test_drawn_kept_cells_equal_the_provenance():
    encoder = tiny_encoder()
    text = np.random.default_rng(1).normal(size=(1, WIDTH)).astype("float32")
    picture = image()
    figure = plot_selection(
        encoder, picture, "a red ball", text_embedding=text, preprocess=None
    )
    for guidance, inputs in (
        ("text", {"images": picture[None], "text_embedding": text}),
        ("image", {"images": picture[None]}),  # no text: image guidance
    ):
        # Each stage's provenance straight from the encoder's call: the
        # later stage switched off for the first.
        for stage, keep_rate in ((1, (0.5, 1.0)), (2, (0.5, 0.5))):
            _, provenance = encoder(inputs, keep_rate=keep_rate, return_provenance=True)
            expected = provenance_kept_cells(keras.ops.convert_to_numpy(provenance)[0])
            # Stage 2 keeps 5 of 8 patches + the fused token: 4 or 5 patches.
            assert len(expected) in ((8,) if stage == 1 else (4, 5))
            assert drawn_kept_cells(figure, guidance, stage) == expected
    plt.close(figure)


def test_png_of_the_expected_size_from_a_pretrainer(tmp_path):
    pretrainer = TRIPSPretrainer(tiny_backbone(), embedding_dim=8)
    images = np.stack([image(0), image(1)])
    paths = write_selection_examples(
        pretrainer, images, ["a red ball", "a blue cube"], str(tmp_path / "pictures")
    )
    assert [os.path.basename(p) for p in paths] == [
        "selection_00.png",
        "selection_01.png",
    ]
    for path in paths:
        # Three columns: text, image and random guidance.
        assert png_size(path) == figure_size_px(3)


def test_a_selecting_keras_hub_encoder_without_text_draws_two_columns(tmp_path):
    clip = keras_hub.models.CLIPVisionEncoder(
        patch_size=8,
        hidden_dim=WIDTH,
        num_layers=2,
        num_heads=2,
        intermediate_dim=32,
        image_shape=(32, 32, 3),
    )
    selecting = with_patch_selection(clip, (0, 1), 0.5)
    path = str(tmp_path / "clip.png")
    with pytest.warns(UserWarning, match="text guidance not drawn"):
        figure = plot_selection(selecting, image(), "a red ball", path=path)
    assert [a.get_gid() for a in figure.axes][::2] == [
        "selection-image",
        "selection-random",
    ]
    plt.close(figure)
    assert png_size(path) == figure_size_px(2)


def test_bad_image_size_and_empty_text_are_refused():
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match=r"`image` must have shape \(32, 32, 3\)"):
        plot_selection(backbone, np.zeros((64, 64, 3), "float32"), "a ball")
    for text in ("", "   "):
        with pytest.raises(ValueError, match="`text` must be a non-empty string"):
            plot_selection(backbone, image(), text)
    with pytest.raises(ValueError, match="`model` must be a TRIPSPretrainer"):
        plot_selection(keras.Sequential([keras.layers.Dense(2)]), image(), "a ball")
    with pytest.raises(ValueError, match="pair up"):
        write_selection_examples(backbone, image()[None], ["a", "b"], "unused")


def load_tool():
    path = os.path.join(
        os.path.dirname(__file__), "..", "tools", "visualize_selection.py"
    )
    spec = importlib.util.spec_from_file_location("visualize_selection", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@end_to_end
def test_the_tool_draws_from_saved_backbones_and_encoders(tmp_path, capsys):
    picture = str(tmp_path / "scene.jpg")
    # A non-square picture of another size: the tool crops and resizes it.
    pixels = np.random.default_rng(0).integers(0, 256, (40, 60, 3), "uint8")
    Image.fromarray(pixels).save(picture)
    tool = load_tool()

    backbone_path = str(tmp_path / "backbone.keras")
    tiny_backbone().save(backbone_path)
    output = str(tmp_path / "backbone.png")
    tool.main([backbone_path, picture, "a red ball", "--output", output])
    assert png_size(output) == figure_size_px(3)

    encoder_path = str(tmp_path / "encoder.keras")
    tiny_encoder().save(encoder_path)
    embedding_path = str(tmp_path / "text.npy")
    np.save(embedding_path, np.ones(WIDTH, "float32"))
    output = str(tmp_path / "encoder.png")
    tool.main(
        [
            encoder_path,
            picture,
            "a red ball",
            "--output",
            output,
            "--text-embedding",
            embedding_path,
            "--keep-rate",
            "0.5,0.7",
        ]
    )
    assert png_size(output) == figure_size_px(3)

    output = str(tmp_path / "no_text.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tool.main([encoder_path, picture, "a red ball", "--output", output])
    assert "drawing image and random guidance only" in capsys.readouterr().out
    assert png_size(output) == figure_size_px(2)

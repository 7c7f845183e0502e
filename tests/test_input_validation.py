"""Fuzz-style checks of every tensor argument of the public layers and
models: a wrong rank, a wrong size in any constrained dimension (batch
included), a wrong dtype is a ValueError naming the argument; an empty batch
gives an empty result."""

import keras
import numpy as np
import pytest
from pretraining_utils import MICRO

from keras_trips.layers import (
    TRIPSFusionEncoder,
    TRIPSPatchEmbedding,
    TRIPSPatchSelection,
    TRIPSTextEncoder,
    TRIPSVisionBlock,
)
from keras_trips.models import TRIPSBackbone, TRIPSVisionEncoder

# Symbolic sizes of the valid inputs. Upper case: the same in every argument
# that names it; lower case: fixed by the configuration.
SIZES = {"B": 2, "T": 9, "L": 5, "h": 16, "w": 16, "c": 3, "d": 8, "H": 32, "W": 32}
SIZES["D"] = 32  # MICRO's width
VISION = dict(
    image_shape=(16, 16, 3),
    patch_size=8,
    num_layers=2,
    num_heads=2,
    hidden_dim=8,
    mlp_dim=16,
    selection_layers=(0,),
    keep_rate=0.5,
)
BACKBONE = {}


def backbone():
    if "model" not in BACKBONE:
        BACKBONE["model"] = TRIPSBackbone(**MICRO)
    return BACKBONE["model"]


# name: (build, {argument: (axes, kind)}, call(model, arguments)).
ENTRY_POINTS = {
    "patch_selection": (
        lambda: TRIPSPatchSelection(0.5, num_heads=2),
        {
            "tokens": ("BTd", "float"),
            "query": ("Bd", "float"),
            "keys": ("BTd", "float"),
        },
        lambda layer, a: layer(a["tokens"], query=a["query"], keys=a["keys"]),
    ),
    "patch_embedding": (
        lambda: TRIPSPatchEmbedding((16, 16, 3), 8, 8),
        {"images": ("Bhwc", "float")},
        lambda layer, a: layer(a["images"]),
    ),
    "vision_block": (
        lambda: TRIPSVisionBlock(8, 2, 16, keep_rate=0.5),
        {"tokens": ("BTd", "float"), "text_embedding": ("Bd", "float")},
        lambda layer, a: layer(a["tokens"], text_embedding=a["text_embedding"])[0],
    ),
    "vision_encoder": (
        lambda: TRIPSVisionEncoder(**VISION),
        {"images": ("Bhwc", "float"), "text_embedding": ("Bd", "float")},
        lambda model, a: model(a),
    ),
    "text_encoder": (
        lambda: TRIPSTextEncoder(100, 1, 2, 8, 16, max_sequence_length=8),
        {"token_ids": ("BL", "int"), "padding_mask": ("BL", "mask")},
        lambda layer, a: layer(a["token_ids"], padding_mask=a["padding_mask"]),
    ),
    "fusion_encoder": (
        lambda: TRIPSFusionEncoder(1, 2, 8, 16),
        {
            "text_sequence": ("BLd", "float"),
            "image_tokens": ("BTd", "float"),
            "padding_mask": ("BL", "mask"),
            "image_padding_mask": ("BT", "mask"),
        },
        lambda layer, a: layer(**a),
    ),
    "backbone": (
        backbone,
        {
            "images": ("BHWc", "float"),
            "token_ids": ("BL", "int"),
            "padding_mask": ("BL", "mask"),
        },
        lambda model, a: model(a)["fusion_sequence"],
    ),
    "encode_image": (
        backbone,
        {"images": ("BHWc", "float"), "text_embedding": ("BD", "float")},
        lambda model, a: model.encode_image(a["images"], a["text_embedding"]),
    ),
    "encode_text": (
        backbone,
        {"token_ids": ("BL", "int"), "padding_mask": ("BL", "mask")},
        lambda model, a: model.encode_text(a["token_ids"], a["padding_mask"]),
    ),
    "fuse": (
        backbone,
        {
            "text_sequence": ("BLD", "float"),
            "image_sequence": ("BTD", "float"),
            "padding_mask": ("BL", "mask"),
        },
        lambda model, a: model.fuse(
            a["text_sequence"], a["image_sequence"], a["padding_mask"]
        ),
    ),
}
WRONG_DTYPES = {"float": "int32", "int": "float32", "mask": "float32"}


def make_arguments(arguments, sizes=SIZES):
    rng = np.random.default_rng(0)
    values = {}
    for name, (axes, kind) in arguments.items():
        shape = tuple(sizes[axis] for axis in axes)
        if kind == "int":
            values[name] = rng.integers(1, 50, shape).astype("int32")
        elif kind == "mask":
            values[name] = np.ones(shape, "bool")
        else:
            values[name] = rng.normal(size=shape).astype("float32")
    return values


def constrained(axis, arguments):
    """Whether changing `axis` in one argument alone must be rejected: it is
    fixed by the configuration or shared with another argument."""
    shared = sum(axis in axes for axes, _ in arguments.values()) > 1
    return axis.islower() or shared


def mutations():
    for entry, (_, arguments, _) in ENTRY_POINTS.items():
        for name, (axes, _) in arguments.items():
            yield entry, name, "rank+1", None
            yield entry, name, "rank-1", None
            yield entry, name, "dtype", None
            for index, axis in enumerate(axes):
                if constrained(axis, arguments):
                    yield entry, name, "size", index


@pytest.mark.parametrize(
    "entry, name, mutation, axis",
    list(mutations()),
    ids=lambda v: str(v),
)
def test_wrong_argument_is_a_value_error_naming_it(entry, name, mutation, axis):
    build, arguments, call = ENTRY_POINTS[entry]
    values = make_arguments(arguments)
    value = values[name]
    if mutation == "rank+1":
        value = value[..., None]
    elif mutation == "rank-1":
        value = value[..., 0]
    elif mutation == "dtype":
        value = value.astype(WRONG_DTYPES[arguments[name][1]])
    else:
        value = np.concatenate([value, value.take([0], axis=axis)], axis=axis)
    with pytest.raises(ValueError, match=name):
        call(build(), {**values, name: value})


def keras_convolution_fails_on(images):
    """Whether Keras' own patchifying Conv2D fails on `images`: TensorFlow
    2.21's oneDNN Conv2D returns its input for an empty batch on some CPUs,
    and the bias add after it then fails (an upstream bug)."""
    try:
        keras.layers.Conv2D(8, 8, strides=8)(images)
    except Exception:  # the upstream error, whatever its class
        return True
    return False


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_valid_and_empty_batches(entry):
    build, arguments, call = ENTRY_POINTS[entry]
    model = build()
    full = keras.ops.convert_to_numpy(call(model, make_arguments(arguments)))
    assert full.shape[0] == SIZES["B"]
    empty_batch = make_arguments(arguments, {**SIZES, "B": 0})
    if "images" in empty_batch and keras_convolution_fails_on(empty_batch["images"]):
        pytest.skip("this CPU's TensorFlow Conv2D fails on empty batches (upstream)")
    empty = call(model, empty_batch)
    assert tuple(empty.shape) == (0, *full.shape[1:])


@pytest.mark.parametrize("keep_rate", [1e-9, 0.01, 1 / 64])
def test_any_positive_keep_rate_keeps_at_least_one_token(keep_rate):
    layer = TRIPSPatchSelection(keep_rate, num_heads=2)
    tokens = np.random.default_rng(0).normal(size=(2, 1 + 64, 8)).astype("float32")
    assert layer.num_kept(64) == 1
    assert tuple(layer(tokens).shape) == (2, 1 + 1 + 1, 8)

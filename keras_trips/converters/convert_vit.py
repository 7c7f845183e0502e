"""Import ViT and CLIP vision weights into the TRIPS vision encoder.

Two kinds of source:

- Hugging Face checkpoints, a folder with `config.json` and `model.safetensors`
  (as written by `save_pretrained`): `ViTModel` (`model_type` "vit"; a `vit.`
  prefix, as in `ViTForImageClassification`, is accepted; non-distilled DeiT
  checkpoints are published in this format), `CLIPVisionModel`
  ("clip_vision_model") and the vision tower of `CLIPModel` ("clip", tensors
  under `vision_model.`). Distilled DeiT (`model_type` "deit") is rejected: its
  distillation token, a second [CLS] that every block attends to, has no
  counterpart in the TRIPS encoder, so dropping it would change the outputs.
- keras-hub models: `keras_hub.models.ViTBackbone`, `CLIPVisionEncoder`, or
  a `CLIPBackbone` (its `vision_encoder`).

The encoder's final `output_norm` takes the source's final LayerNorm (ViT's
`layernorm`, CLIP's `post_layernorm`, which Hugging Face applies to the pooled
[CLS] only), so the encoder's tokens are the normalised sequence. Position
embeddings are bicubically interpolated when the encoder's image size differs
from the source's. Every tensor is checked before any is assigned, so a source
that does not fit leaves the encoder unchanged.
"""

import keras
import keras_hub
import numpy as np

from keras_trips.converters.checkpoint_utils import (
    SafetensorsCheckpoint,
    TensorSource,
    assign_all,
    checked,
    linear_kernel,
    reshaped,
)
from keras_trips.layers.trips_patch_embedding import interpolate_position_embedding
from keras_trips.models.trips_vision_encoder import TRIPSVisionEncoder

# Hugging Face `hidden_act` values the encoder computes exactly, by its name.
_HF_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu"}

# Hugging Face config defaults, for keys that older checkpoints leave out.
_HF_DEFAULTS = {
    "vit": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "layer_norm_eps": 1e-12,
        "image_size": 224,
        "patch_size": 16,
        "num_channels": 3,
        "qkv_bias": True,
    },
    "clip_vision_model": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "quick_gelu",
        "dropout": 0.0,
        "layer_norm_eps": 1e-5,
        "image_size": 224,
        "patch_size": 32,
        "num_channels": 3,
    },
}

# Hugging Face tensor names: embeddings, final norm, and per block the query,
# key and value projections (fused into the block's `qkv_dense`) and the
# counterpart of each other `TRIPSVisionBlock` sublayer.
_HF_NAMES = {
    "vit": {
        "class_token": "embeddings.cls_token",
        "positions": "embeddings.position_embeddings",
        "patches": "embeddings.patch_embeddings.projection",
        "pre_norm": None,
        "output_norm": "layernorm",
        "block": "encoder.layer.{}.",
        "qkv": (
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
        ),
        "sublayers": {
            "attention_norm": "layernorm_before",
            "output_dense": "attention.output.dense",
            "mlp_norm": "layernorm_after",
            "mlp_intermediate": "intermediate.dense",
            "mlp_output": "output.dense",
        },
    },
    "clip_vision_model": {
        "class_token": "embeddings.class_embedding",
        "positions": "embeddings.position_embedding.weight",
        "patches": "embeddings.patch_embedding",
        "pre_norm": "pre_layrnorm",
        "output_norm": "post_layernorm",
        "block": "encoder.layers.{}.",
        "qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        "sublayers": {
            "attention_norm": "layer_norm1",
            "output_dense": "self_attn.out_proj",
            "mlp_norm": "layer_norm2",
            "mlp_intermediate": "mlp.fc1",
            "mlp_output": "mlp.fc2",
        },
    },
}

# Encoder arguments that the weights' shapes do not determine: a target
# encoder must match the source in these.
_MUST_MATCH = (
    "num_layers",
    "num_heads",
    "activation",
    "pre_norm",
    "patch_bias",
    "layer_norm_epsilon",
)


class VisionCheckpoint(SafetensorsCheckpoint):
    """A Hugging Face ViT or CLIP (vision) checkpoint folder, read lazily.

    Args:
        checkpoint_dir: path to a folder holding `config.json` and
            `model.safetensors`.

    Attributes:
        config: dict, the parsed `config.json`.
        vision_config: dict, the vision model's config with Hugging Face's
            defaults filled in (a "clip" checkpoint's `vision_config`).
        architecture: `"vit"` or `"clip_vision_model"`.
        names: sorted list of the canonical tensor names (no `vit.` or
            `vision_model.` prefix).

    Example:

    ```python
    checkpoint = VisionCheckpoint("path/to/clip-vit-base-patch16")
    checkpoint.architecture  # "clip_vision_model"
    checkpoint.tensor("embeddings.class_embedding").shape  # (768,)
    ```
    """

    family = "ViT/CLIP vision"
    model_types = ("vit", "clip_vision_model", "clip")

    def __init__(self, checkpoint_dir):
        super().__init__(checkpoint_dir)
        config = self.config
        if self.model_type == "clip":
            config = config.get("vision_config", {})
            self.architecture = "clip_vision_model"
        else:
            self.architecture = self.model_type
        self.vision_config = {**_HF_DEFAULTS[self.architecture], **config}

    def canonical_name(self, name):
        return name.removeprefix("vit.").removeprefix("vision_model.")


def vision_encoder_config_from_hf(checkpoint):
    """`TRIPSVisionEncoder` arguments for a `VisionCheckpoint`.

    Raises a `ValueError` for a config the encoder cannot compute exactly (an
    activation other than GELU or quick GELU, ViT without query/key/value
    biases, non-square patches).
    """
    config = checkpoint.vision_config
    activation = config["hidden_act"]
    if activation not in _HF_ACTIVATIONS:
        raise ValueError(
            f"Checkpoint config has hidden_act={activation!r}; the TRIPS "
            f"vision encoder implements {tuple(_HF_ACTIVATIONS)}."
        )
    if not config.get("qkv_bias", True):
        raise ValueError(
            "Checkpoint config has qkv_bias=False; the TRIPS vision encoder's "
            "query, key and value projections have biases."
        )
    height, width = _pair(config["image_size"], "image_size")
    patch_height, patch_width = _pair(config["patch_size"], "patch_size")
    if patch_height != patch_width:
        raise ValueError(
            f"Checkpoint config has patch_size={config['patch_size']}; the "
            "TRIPS vision encoder has square patches."
        )
    is_clip = checkpoint.architecture == "clip_vision_model"
    return {
        "image_shape": (height, width, config["num_channels"]),
        "patch_size": patch_height,
        "num_layers": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "hidden_dim": config["hidden_size"],
        "mlp_dim": config["intermediate_size"],
        "layer_norm_epsilon": config["layer_norm_eps"],
        "dropout": config["dropout" if is_clip else "hidden_dropout_prob"],
        "activation": _HF_ACTIVATIONS[activation],
        "pre_norm": is_clip,
        "patch_bias": not is_clip,
    }


def vision_encoder_from_hf(checkpoint_dir, image_size=None, **kwargs):
    """Build a `TRIPSVisionEncoder` from a Hugging Face checkpoint and load it.

    Args:
        checkpoint_dir: a ViT or CLIP checkpoint folder (see
            `VisionCheckpoint`).
        image_size: int or `(height, width)`, or `None` for the checkpoint's
            size. Position embeddings are interpolated to it.
        **kwargs: other `TRIPSVisionEncoder` arguments, e.g.
            `selection_layers`, `keep_rate`, `guidance` or `dtype`. The
            encoder's own defaults (blocks 4 and 9, keep rate 0.7) suit the
            12-block ViT-B.

    Returns:
        A built `TRIPSVisionEncoder` holding the checkpoint's weights.

    Example:

    ```python
    encoder = vision_encoder_from_hf("path/to/vit-base-patch16-224", 384)
    encoder.image_shape  # (384, 384, 3)
    ```
    """
    checkpoint = VisionCheckpoint(checkpoint_dir)
    config = _with_image_size(vision_encoder_config_from_hf(checkpoint), image_size)
    encoder = TRIPSVisionEncoder(**{**config, **kwargs})
    load_hf_vision_encoder(encoder, checkpoint)
    return encoder


def load_hf_vision_encoder(encoder, checkpoint_dir):
    """Load a Hugging Face ViT or CLIP vision checkpoint into an encoder.

    Args:
        encoder: a `TRIPSVisionEncoder` whose depth, heads, activation,
            LayerNorm epsilon, `pre_norm` and `patch_bias` match the
            checkpoint; its image size may differ.
        checkpoint_dir: a checkpoint folder, or a `VisionCheckpoint`.
    """
    checkpoint = checkpoint_dir
    if not isinstance(checkpoint, VisionCheckpoint):
        checkpoint = VisionCheckpoint(checkpoint_dir)
    _check_matches(
        encoder, vision_encoder_config_from_hf(checkpoint), checkpoint.location
    )
    names = _HF_NAMES[checkpoint.architecture]
    embedding = encoder.patch_embedding
    projection = embedding.projection
    kernel_shape = tuple(projection.kernel.shape)  # (patch, patch, in, out)
    # torch's Conv2d weight is (out, in, patch, patch).
    torch_shape = (kernel_shape[3], kernel_shape[2], *kernel_shape[:2])
    kernel = checked(
        checkpoint, f"{names['patches']}.weight", projection.kernel, torch_shape
    )
    # ViT's class token is stored (1, 1, D), CLIP's (D,).
    class_shape = (
        (1, 1, encoder.hidden_dim) if checkpoint.architecture == "vit" else None
    )
    assignments = [
        (projection.kernel, np.transpose(kernel, (2, 3, 1, 0))),
        reshaped(checkpoint, names["class_token"], embedding.class_token, class_shape),
        _positions(checkpoint, names["positions"], encoder),
    ]
    if encoder.patch_bias:
        assignments.append(
            reshaped(checkpoint, f"{names['patches']}.bias", projection.bias)
        )
    if encoder.pre_norm:
        assignments += _hf_layer_norm(
            checkpoint, names["pre_norm"], encoder.embedding_norm
        )
    assignments += _hf_layer_norm(checkpoint, names["output_norm"], encoder.output_norm)
    width = encoder.hidden_dim
    for i, block in enumerate(encoder.blocks):
        prefix = names["block"].format(i)
        qkv = block.qkv_dense
        assignments += _qkv_assignments(
            qkv,
            [
                checked(
                    checkpoint, f"{prefix}{name}.weight", qkv.kernel, (width, width)
                ).T
                for name in names["qkv"]
            ],
            [
                checked(checkpoint, f"{prefix}{name}.bias", qkv.bias, (width,))
                for name in names["qkv"]
            ],
        )
        for attribute, name in names["sublayers"].items():
            layer = getattr(block, attribute)
            if isinstance(layer, keras.layers.LayerNormalization):
                assignments += _hf_layer_norm(checkpoint, prefix + name, layer)
            else:
                assignments += [
                    linear_kernel(checkpoint, f"{prefix}{name}.weight", layer.kernel),
                    reshaped(checkpoint, f"{prefix}{name}.bias", layer.bias),
                ]
    assign_all(assignments)


def vision_encoder_config_from_keras_hub(model):
    """`TRIPSVisionEncoder` arguments for a keras-hub `ViTBackbone`,
    `CLIPVisionEncoder` or `CLIPBackbone`."""
    model = _keras_hub_vision_model(model)
    if _is_clip(model):
        activation = model.intermediate_activation
        if activation not in ("gelu", "quick_gelu"):
            raise ValueError(
                f"{_describe(model)} has intermediate_activation={activation!r}; "
                "the TRIPS vision encoder implements ('gelu', 'quick_gelu')."
            )
        return {
            "image_shape": _channels_last(
                model.image_shape, model.embedding.data_format
            ),
            "patch_size": model.patch_size,
            "num_layers": model.num_layers,
            "num_heads": model.num_heads,
            "hidden_dim": model.hidden_dim,
            "mlp_dim": model.intermediate_dim,
            "layer_norm_epsilon": model.layer_norm.epsilon,
            "activation": activation,
            "pre_norm": True,
            "patch_bias": False,
        }
    for flag in ("use_class_token", "use_mha_bias", "use_mlp_bias"):
        if not getattr(model, flag):
            raise ValueError(
                f"{_describe(model)} has {flag}=False; the TRIPS vision "
                "encoder has a [CLS] token and biased projections."
            )
    patch_height, patch_width = _pair(model.patch_size, "patch_size")
    if patch_height != patch_width:
        raise ValueError(
            f"{_describe(model)} has patch_size={model.patch_size}; the TRIPS "
            "vision encoder has square patches."
        )
    return {
        "image_shape": _channels_last(model.image_shape, model.data_format),
        "patch_size": patch_height,
        "num_layers": model.num_layers,
        "num_heads": model.num_heads,
        "hidden_dim": model.hidden_dim,
        "mlp_dim": model.mlp_dim,
        "layer_norm_epsilon": model.layer_norm_epsilon,
        "dropout": model.dropout_rate,
        "activation": "gelu",
        "pre_norm": False,
        "patch_bias": model.use_patch_bias,
    }


def vision_encoder_from_keras_hub(model, image_size=None, **kwargs):
    """Build a `TRIPSVisionEncoder` holding a keras-hub model's weights.

    Args:
        model: a keras-hub `ViTBackbone`, `CLIPVisionEncoder` or
            `CLIPBackbone` (its vision encoder is converted).
        image_size: int or `(height, width)`, or `None` for the model's size.
        **kwargs: other `TRIPSVisionEncoder` arguments (see
            `vision_encoder_from_hf`).

    Returns:
        A built `TRIPSVisionEncoder`.

    Example:

    ```python
    backbone = keras_hub.models.ViTBackbone.from_preset("path/to/preset")
    encoder = vision_encoder_from_keras_hub(backbone, selection_layers=(4, 9))
    ```
    """
    config = vision_encoder_config_from_keras_hub(model)
    config = _with_image_size(config, image_size)
    encoder = TRIPSVisionEncoder(**{**config, **kwargs})
    load_keras_hub_vision_encoder(encoder, model)
    return encoder


def load_keras_hub_vision_encoder(encoder, model):
    """Load a keras-hub ViT or CLIP vision model's weights into an encoder.

    Args:
        encoder: a `TRIPSVisionEncoder` matching the model as in
            `load_hf_vision_encoder`; its image size may differ.
        model: a keras-hub `ViTBackbone`, `CLIPVisionEncoder` or
            `CLIPBackbone`.
    """
    model = _keras_hub_vision_model(model)
    source = TensorSource(
        {variable.path: variable.numpy() for variable in model.weights},
        location=_describe(model),
    )
    _check_matches(
        encoder, vision_encoder_config_from_keras_hub(model), source.location
    )
    if _is_clip(model):
        embedding = model.embedding
        class_token, class_shape = embedding.class_embedding, None
        # keras-hub's CLIP looks positions up by a stored `position_ids`
        # weight (arange in presets, zeros in a freshly built model).
        position_ids = source.tensor(embedding.position_ids.path)
        projection = embedding.patch_embedding
        pre_norm = model.pre_layer_norm
        blocks = [
            (b.layer_norm_1, b.attention, b.layer_norm_2, b.dense_1, b.dense_2)
            for b in model.encoder_layers
        ]
        output_norm = model.layer_norm
    else:
        embedding = model.get_layer("vit_patching_and_embedding")
        class_token = embedding.class_token
        class_shape = (1, 1, encoder.hidden_dim)
        position_ids = None
        projection = embedding.patch_embedding
        pre_norm = None
        vit_encoder = model.get_layer("vit_encoder")
        blocks = [
            (b.layer_norm_1, b.mha, b.layer_norm_2, b.mlp.dense_1, b.mlp.dense_2)
            for b in vit_encoder.encoder_layers
        ]
        output_norm = vit_encoder.layer_norm

    target = encoder.patch_embedding
    pairs = [(target.projection, projection), (encoder.output_norm, output_norm)]
    if pre_norm is not None:
        pairs.append((encoder.embedding_norm, pre_norm))
    assignments = [
        reshaped(source, class_token.path, target.class_token, class_shape),
        _positions(
            source,
            embedding.position_embedding.embeddings.path,
            encoder,
            position_ids,
        ),
    ]
    # keras's MultiHeadAttention keeps heads on their own kernel axis.
    heads = (encoder.num_heads, encoder.hidden_dim // encoder.num_heads)
    width = encoder.hidden_dim
    for block, (norm_1, attention, norm_2, dense_1, dense_2) in zip(
        encoder.blocks, blocks, strict=True
    ):
        pairs += [
            (block.attention_norm, norm_1),
            (block.mlp_norm, norm_2),
            (block.mlp_intermediate, dense_1),
            (block.mlp_output, dense_2),
        ]
        qkv = block.qkv_dense
        parts = (attention.query_dense, attention.key_dense, attention.value_dense)
        assignments += _qkv_assignments(
            qkv,
            [
                checked(source, part.kernel.path, qkv.kernel, (width, *heads))
                for part in parts
            ],
            [checked(source, part.bias.path, qkv.bias, heads) for part in parts],
        )
        assignments += _keras_assignments(
            source,
            block.output_dense,
            attention.output_dense,
            [(*heads, width), None],
        )
    for layer, source_layer in pairs:
        assignments += _keras_assignments(source, layer, source_layer)
    assign_all(assignments)


def _qkv_assignments(projection, kernels, biases):
    """The fused query-key-value `projection`'s kernel and bias from the
    query, key and value kernels (input axis first) and biases."""
    width = projection.units // 3
    return [
        (
            projection.kernel,
            np.concatenate([np.reshape(k, (width, width)) for k in kernels], axis=1),
        ),
        (projection.bias, np.concatenate([np.reshape(b, (width,)) for b in biases])),
    ]


def _keras_assignments(source, layer, source_layer, shapes=None):
    """Each weight of `layer` from the same-position weight of the keras
    `source_layer`, whose shape is given by `shapes` or else the same."""
    shapes = shapes or [None] * len(layer.weights)
    if len(source_layer.weights) != len(layer.weights):
        raise ValueError(
            f"{source.location}: layer {source_layer.path} has "
            f"{len(source_layer.weights)} weights, but {layer.path} needs "
            f"{len(layer.weights)}."
        )
    return [
        reshaped(source, source_variable.path, variable, shape or variable.shape)
        for variable, source_variable, shape in zip(
            layer.weights, source_layer.weights, shapes, strict=True
        )
    ]


def _hf_layer_norm(checkpoint, name, layer_norm):
    return [
        reshaped(checkpoint, f"{name}.weight", layer_norm.gamma),
        reshaped(checkpoint, f"{name}.bias", layer_norm.beta),
    ]


def _positions(source, name, encoder, position_ids=None):
    """Position embeddings `(1 + N0, D)` (or `(1, 1 + N0, D)`), looked up by
    `position_ids` if given, resized to the encoder's patch grid."""
    variable = encoder.patch_embedding.position_embedding
    positions = stored = source.tensor(name)
    if position_ids is not None:
        positions = positions[np.reshape(position_ids, -1)]
    if positions.ndim == 3 and positions.shape[0] == 1:
        positions = positions[0]
    if positions.ndim != 2 or positions.shape[1] != encoder.hidden_dim:
        raise ValueError(
            f"Checkpoint tensor '{name}' has shape {tuple(stored.shape)}, "
            f"but {variable.path} of shape {tuple(variable.shape)} needs "
            f"(1 + num_patches, {encoder.hidden_dim})."
        )
    try:
        positions = interpolate_position_embedding(
            positions, encoder.patch_embedding.grid_shape
        )
    except ValueError as error:
        raise ValueError(f"Checkpoint tensor '{name}': {error}") from None
    return variable, keras.ops.convert_to_numpy(positions)


def _check_matches(encoder, config, location):
    for key in _MUST_MATCH:
        if getattr(encoder, key) != config[key]:
            raise ValueError(
                f"{location} has {key}={config[key]!r}, but the encoder has "
                f"{key}={getattr(encoder, key)!r}."
            )


def _with_image_size(config, image_size):
    if image_size is None:
        return config
    height, width = _pair(image_size, "image_size")
    return {**config, "image_shape": (height, width, config["image_shape"][2])}


def _pair(value, name):
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"`{name}` must be an int or a pair. Received: {value}")
    return tuple(value)


def _channels_last(image_shape, data_format):
    if data_format == "channels_first":
        channels, height, width = image_shape
        return (height, width, channels)
    return tuple(image_shape)


def _keras_hub_vision_model(model):
    if isinstance(model, keras_hub.models.CLIPBackbone):
        return model.vision_encoder
    if isinstance(
        model, (keras_hub.models.ViTBackbone, keras_hub.models.CLIPVisionEncoder)
    ):
        return model
    raise ValueError(
        "Expected a keras-hub ViTBackbone, CLIPVisionEncoder or CLIPBackbone. "
        f"Received: {type(model).__name__}"
    )


def _is_clip(model):
    return isinstance(model, keras_hub.models.CLIPVisionEncoder)


def _describe(model):
    return f"keras-hub {type(model).__name__} '{model.name}'"

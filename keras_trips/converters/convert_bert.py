"""Import Hugging Face BERT checkpoints into the TRIPS text and fusion encoders.

A checkpoint is a folder with `config.json` and `model.safetensors` (as written
by `save_pretrained`). Tensor names follow `BertModel`; a `bert.` prefix
(`BertForPreTraining`, `BertForMaskedLM`) and the old `gamma`/`beta` LayerNorm
names are accepted. Linear weights are stored `[out, in]`.

As in ALBEF, the lower BERT layers become the text encoder and the upper ones
initialise the fusion encoder's self-attention and feedforward blocks; the
fusion cross-attention has no BERT counterpart and stays freshly initialised.
Every tensor is checked against its target before any is assigned, so a
checkpoint that does not fit leaves the encoder unchanged.
"""

import json
import math
import os

import numpy as np
from safetensors import safe_open

from keras_trips.layers.trips_text_encoder import TRIPSTextEncoder

BERT_MODEL_TYPES = ("bert",)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# What the TRIPS encoders compute; these are also Hugging Face's defaults for
# absent keys.
_REQUIRED_CONFIG = {
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
    "layer_norm_eps": 1e-12,
}


class BertCheckpoint:
    """A Hugging Face BERT checkpoint folder, read lazily.

    Args:
        checkpoint_dir: path to a folder holding `config.json` and
            `model.safetensors`.

    Attributes:
        config: dict, the parsed `config.json`.
        names: sorted list of the canonical tensor names (no `bert.` prefix,
            LayerNorm parameters named `weight`/`bias`).

    Example:

    ```python
    checkpoint = BertCheckpoint("path/to/bert-base-uncased")
    checkpoint.config["hidden_size"]  # 768
    checkpoint.tensor("embeddings.word_embeddings.weight").shape
    ```
    """

    def __init__(self, checkpoint_dir):
        checkpoint_dir = os.fspath(checkpoint_dir)
        if not os.path.isdir(checkpoint_dir):
            raise FileNotFoundError(
                f"BERT checkpoint folder {checkpoint_dir} does not exist."
            )
        config_path = os.path.join(checkpoint_dir, CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"BERT config file {config_path} does not exist.")
        with open(config_path, encoding="utf-8") as file:
            self.config = json.load(file)
        model_type = self.config.get("model_type")
        if model_type not in BERT_MODEL_TYPES:
            raise ValueError(
                f"{config_path} has model_type {model_type!r}, which is not a "
                f"BERT architecture; supported model types: {BERT_MODEL_TYPES}."
            )
        self.weights_path = os.path.join(checkpoint_dir, WEIGHTS_FILE)
        if not os.path.isfile(self.weights_path):
            hint = ""
            if os.path.isfile(os.path.join(checkpoint_dir, "pytorch_model.bin")):
                hint = (
                    " pytorch_model.bin is not read (it needs torch); re-save "
                    "the model with `save_pretrained(path, "
                    "safe_serialization=True)`."
                )
            raise FileNotFoundError(
                f"BERT weights file {self.weights_path} does not exist.{hint}"
            )
        with safe_open(self.weights_path, framework="numpy") as weights:
            stored_names = weights.keys()
        self._stored_names = {_canonical_name(name): name for name in stored_names}
        self.names = sorted(self._stored_names)

    @property
    def num_layers(self):
        return self.config["num_hidden_layers"]

    def tensor(self, name):
        """The tensor `name` (canonical name) as a numpy array."""
        if name not in self._stored_names:
            raise ValueError(
                f"Checkpoint {self.weights_path} is missing tensor '{name}'."
            )
        with safe_open(self.weights_path, framework="numpy") as weights:
            return weights.get_tensor(self._stored_names[name])

    def check_compatible(self, num_heads, layers):
        """Raise a `ValueError` unless the target layers can load this
        checkpoint exactly: same head count, exact GELU, absolute positions,
        LayerNorm epsilon 1e-12, and every requested layer present."""
        heads = self.config.get("num_attention_heads")
        if heads != num_heads:
            raise ValueError(
                f"Checkpoint has num_attention_heads={heads}, but the target "
                f"layer has num_heads={num_heads}."
            )
        for key, required in _REQUIRED_CONFIG.items():
            value = self.config.get(key, required)
            if value != required:
                raise ValueError(
                    f"Checkpoint config has {key}={value!r}; the TRIPS "
                    f"encoders implement only {key}={required!r}."
                )
        missing = [i for i in layers if not 0 <= i < self.num_layers]
        if missing:
            raise ValueError(
                f"Checkpoint has {self.num_layers} layers "
                f"(encoder.layer.0 to encoder.layer.{self.num_layers - 1}), "
                f"but layers {missing} were requested."
            )


def text_encoder_config_from_bert(bert_config):
    """`TRIPSTextEncoder` arguments for a BERT `config.json` dict."""
    return {
        "vocabulary_size": bert_config["vocab_size"],
        "num_layers": bert_config["num_hidden_layers"],
        "num_heads": bert_config["num_attention_heads"],
        "hidden_dim": bert_config["hidden_size"],
        "intermediate_dim": bert_config["intermediate_size"],
        "max_sequence_length": bert_config["max_position_embeddings"],
        "dropout": bert_config.get("hidden_dropout_prob", 0.1),
    }


def text_encoder_from_bert(checkpoint_dir, num_layers=None, **kwargs):
    """Build a `TRIPSTextEncoder` from a BERT checkpoint and load its weights.

    Args:
        checkpoint_dir: a BERT checkpoint folder (see `BertCheckpoint`).
        num_layers: int or `None`. Keep only the first `num_layers` BERT
            layers (ALBEF keeps 6 of 12); `None` keeps all of them.
        **kwargs: overrides of the `TRIPSTextEncoder` arguments, e.g. `dtype`,
            `name` or `dropout`.

    Returns:
        A built `TRIPSTextEncoder` holding the checkpoint's weights.
    """
    checkpoint = BertCheckpoint(checkpoint_dir)
    config = text_encoder_config_from_bert(checkpoint.config)
    if num_layers is not None:
        config["num_layers"] = num_layers
    config.update(kwargs)
    encoder = TRIPSTextEncoder(**config)
    load_bert_text_encoder(encoder, checkpoint)
    return encoder


def load_bert_text_encoder(encoder, checkpoint_dir, layers=None):
    """Load BERT embeddings and layers into a `TRIPSTextEncoder`.

    The segment embedding of segment 0 is folded into the position embedding
    (TRIPS text has a single segment), which is exact.

    Args:
        encoder: a `TRIPSTextEncoder`, built or not.
        checkpoint_dir: a BERT checkpoint folder, or a `BertCheckpoint`.
        layers: iterable of BERT layer indices loaded into the encoder's
            layers in order; defaults to `range(encoder.num_layers)`.
    """
    checkpoint = _as_checkpoint(checkpoint_dir)
    layers = list(range(encoder.num_layers) if layers is None else layers)
    if len(layers) != encoder.num_layers:
        raise ValueError(
            f"The encoder has {encoder.num_layers} layers, but {len(layers)} "
            f"BERT layers were given: {layers}."
        )
    checkpoint.check_compatible(encoder.num_heads, layers)
    if not encoder.built:
        encoder.build((None, None))

    position_name = "embeddings.position_embeddings.weight"
    position_variable = encoder.position_embedding.position_embeddings
    positions = _checked(checkpoint, position_name, position_variable)
    segment_name = "embeddings.token_type_embeddings.weight"
    segments = checkpoint.tensor(segment_name)
    if segments.ndim != 2 or segments.shape[1] != encoder.hidden_dim:
        raise ValueError(
            f"Checkpoint tensor '{segment_name}' has shape {segments.shape}, "
            f"but (num_segments, {encoder.hidden_dim}) is needed."
        )
    assignments = [
        _table(
            checkpoint,
            "embeddings.word_embeddings.weight",
            encoder.token_embedding.embeddings,
        ),
        (position_variable, positions + segments[0]),
        _vector(
            checkpoint,
            "embeddings.LayerNorm.weight",
            encoder.embeddings_layer_norm.gamma,
        ),
        _vector(
            checkpoint,
            "embeddings.LayerNorm.bias",
            encoder.embeddings_layer_norm.beta,
        ),
    ]
    for block, bert_layer in zip(encoder.transformer_layers, layers, strict=True):
        assignments += _bert_layer_assignments(checkpoint, block, bert_layer)
    _assign(assignments)


def load_bert_fusion_encoder(fusion_encoder, checkpoint_dir, first_layer=None):
    """Initialise a `TRIPSFusionEncoder` from the upper BERT layers (ALBEF).

    Fusion layer `j` gets BERT layer `first_layer + j`'s self-attention, its
    LayerNorm, the feedforward block and its LayerNorm. Cross-attention has no
    BERT counterpart and is left as initialised.

    Args:
        fusion_encoder: a `TRIPSFusionEncoder`, built or not.
        checkpoint_dir: a BERT checkpoint folder, or a `BertCheckpoint`.
        first_layer: int. The BERT layer loaded into fusion layer 0; defaults
            to the BERT layer count minus `fusion_encoder.num_layers`, i.e. the
            top layers.
    """
    checkpoint = _as_checkpoint(checkpoint_dir)
    if first_layer is None:
        first_layer = checkpoint.num_layers - fusion_encoder.num_layers
    layers = range(first_layer, first_layer + fusion_encoder.num_layers)
    checkpoint.check_compatible(fusion_encoder.num_heads, layers)
    if not fusion_encoder.built:
        sequence_shape = (None, None, fusion_encoder.hidden_dim)
        fusion_encoder.build(sequence_shape, sequence_shape)
    assignments = []
    for block, bert_layer in zip(
        fusion_encoder.transformer_layers, layers, strict=True
    ):
        assignments += _bert_layer_assignments(checkpoint, block, bert_layer)
    _assign(assignments)


def _bert_layer_assignments(checkpoint, block, bert_layer):
    """Self-attention and feedforward weights of BERT layer `bert_layer` for a
    keras-hub `TransformerEncoder` or `TransformerDecoder` block."""
    prefix = f"encoder.layer.{bert_layer}."
    attention = block._self_attention_layer
    assignments = []
    for projection in ("query", "key", "value"):
        dense = getattr(attention, f"{projection}_dense")
        name = f"{prefix}attention.self.{projection}"
        assignments += [
            _linear_kernel(checkpoint, f"{name}.weight", dense.kernel),
            _vector(checkpoint, f"{name}.bias", dense.bias),
        ]
    # The attention output kernel is (num_heads, head_dim, hidden_dim).
    output_name = f"{prefix}attention.output.dense"
    output_dense = attention.output_dense
    assignments += [
        _linear_kernel(
            checkpoint, f"{output_name}.weight", output_dense.kernel, input_axes=2
        ),
        _vector(checkpoint, f"{output_name}.bias", output_dense.bias),
    ]
    for name, dense in (
        ("intermediate.dense", block._feedforward_intermediate_dense),
        ("output.dense", block._feedforward_output_dense),
    ):
        assignments += [
            _linear_kernel(checkpoint, f"{prefix}{name}.weight", dense.kernel),
            _vector(checkpoint, f"{prefix}{name}.bias", dense.bias),
        ]
    for name, layer_norm in (
        ("attention.output.LayerNorm", block._self_attention_layer_norm),
        ("output.LayerNorm", block._feedforward_layer_norm),
    ):
        assignments += [
            _vector(checkpoint, f"{prefix}{name}.weight", layer_norm.gamma),
            _vector(checkpoint, f"{prefix}{name}.bias", layer_norm.beta),
        ]
    return assignments


def _linear_kernel(checkpoint, name, variable, input_axes=1):
    """A torch Linear weight `[out, in]` as a Keras kernel whose first
    `input_axes` axes are the input and the rest the output."""
    shape = tuple(variable.shape)
    expected = (math.prod(shape[input_axes:]), math.prod(shape[:input_axes]))
    weight = _checked(checkpoint, name, variable, expected)
    return variable, np.reshape(weight.T, shape)


def _vector(checkpoint, name, variable):
    shape = tuple(variable.shape)
    vector = _checked(checkpoint, name, variable, (math.prod(shape),))
    return variable, np.reshape(vector, shape)


def _table(checkpoint, name, variable):
    return variable, _checked(checkpoint, name, variable)


def _checked(checkpoint, name, variable, expected=None):
    """Tensor `name`, after checking its shape is `expected` (by default the
    variable's shape)."""
    tensor = checkpoint.tensor(name)
    expected = tuple(variable.shape) if expected is None else expected
    if tuple(tensor.shape) != expected:
        raise ValueError(
            f"Checkpoint tensor '{name}' has shape {tuple(tensor.shape)}, but "
            f"{variable.path} of shape {tuple(variable.shape)} needs {expected}."
        )
    return tensor


def _assign(assignments):
    for variable, value in assignments:
        variable.assign(value)


def _as_checkpoint(checkpoint_dir):
    if isinstance(checkpoint_dir, BertCheckpoint):
        return checkpoint_dir
    return BertCheckpoint(checkpoint_dir)


def _canonical_name(name):
    name = name.removeprefix("bert.")
    if ".LayerNorm." in name:
        name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
    return name

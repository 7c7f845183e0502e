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

from keras_trips.converters.checkpoint_utils import (
    SafetensorsCheckpoint,
    TensorSource,
    assign_all,
    checked,
    linear_kernel,
    reshaped,
    table,
)
from keras_trips.layers.trips_text_encoder import TRIPSTextEncoder

# What the TRIPS encoders compute; these are also Hugging Face's defaults for
# absent keys.
_REQUIRED_CONFIG = {
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
    "layer_norm_eps": 1e-12,
}


class BertCheckpoint(SafetensorsCheckpoint):
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

    family = "BERT"
    model_types = ("bert",)

    def canonical_name(self, name):
        name = name.removeprefix("bert.")
        if ".LayerNorm." in name:
            name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
        return name

    @property
    def num_layers(self):
        return self.config["num_hidden_layers"]

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
    positions = checkpoint.tensor(position_name)
    # An encoder for shorter texts takes the first rows of the position table.
    length = position_variable.shape[0]
    if positions.shape[0] > length:
        positions = positions[:length]
    positions = checked(
        TensorSource({position_name: positions}, checkpoint.location),
        position_name,
        position_variable,
    )
    segment_name = "embeddings.token_type_embeddings.weight"
    segments = checkpoint.tensor(segment_name)
    if segments.ndim != 2 or segments.shape[1] != encoder.hidden_dim:
        raise ValueError(
            f"Checkpoint tensor '{segment_name}' has shape {segments.shape}, "
            f"but (num_segments, {encoder.hidden_dim}) is needed."
        )
    assignments = [
        table(
            checkpoint,
            "embeddings.word_embeddings.weight",
            encoder.token_embedding.embeddings,
        ),
        (position_variable, positions + segments[0]),
        reshaped(
            checkpoint,
            "embeddings.LayerNorm.weight",
            encoder.embeddings_layer_norm.gamma,
        ),
        reshaped(
            checkpoint,
            "embeddings.LayerNorm.bias",
            encoder.embeddings_layer_norm.beta,
        ),
    ]
    for block, bert_layer in zip(encoder.transformer_layers, layers, strict=True):
        assignments += _bert_layer_assignments(checkpoint, block, bert_layer)
    assign_all(assignments)


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
        fusion_encoder.build(
            (None, None, fusion_encoder.hidden_dim),
            (None, None, fusion_encoder.image_dim),
        )
    assignments = []
    for block, bert_layer in zip(
        fusion_encoder.transformer_layers, layers, strict=True
    ):
        assignments += _bert_layer_assignments(checkpoint, block, bert_layer)
    assign_all(assignments)


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
            linear_kernel(checkpoint, f"{name}.weight", dense.kernel),
            reshaped(checkpoint, f"{name}.bias", dense.bias),
        ]
    # The attention output kernel is (num_heads, head_dim, hidden_dim).
    output_name = f"{prefix}attention.output.dense"
    output_dense = attention.output_dense
    assignments += [
        linear_kernel(
            checkpoint, f"{output_name}.weight", output_dense.kernel, input_axes=2
        ),
        reshaped(checkpoint, f"{output_name}.bias", output_dense.bias),
    ]
    for name, dense in (
        ("intermediate.dense", block._feedforward_intermediate_dense),
        ("output.dense", block._feedforward_output_dense),
    ):
        assignments += [
            linear_kernel(checkpoint, f"{prefix}{name}.weight", dense.kernel),
            reshaped(checkpoint, f"{prefix}{name}.bias", dense.bias),
        ]
    for name, layer_norm in (
        ("attention.output.LayerNorm", block._self_attention_layer_norm),
        ("output.LayerNorm", block._feedforward_layer_norm),
    ):
        assignments += [
            reshaped(checkpoint, f"{prefix}{name}.weight", layer_norm.gamma),
            reshaped(checkpoint, f"{prefix}{name}.bias", layer_norm.beta),
        ]
    return assignments


def _as_checkpoint(checkpoint_dir):
    if isinstance(checkpoint_dir, BertCheckpoint):
        return checkpoint_dir
    return BertCheckpoint(checkpoint_dir)

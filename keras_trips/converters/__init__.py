"""keras_trips.converters."""

from keras_trips.converters.convert_bert import (
    BertCheckpoint,
    load_bert_fusion_encoder,
    load_bert_text_encoder,
    text_encoder_from_bert,
)
from keras_trips.converters.convert_vit import (
    VisionCheckpoint,
    load_hf_vision_encoder,
    load_keras_hub_vision_encoder,
    vision_encoder_config_from_hf,
    vision_encoder_config_from_keras_hub,
    vision_encoder_from_hf,
    vision_encoder_from_keras_hub,
)

__all__ = [
    "BertCheckpoint",
    "VisionCheckpoint",
    "load_bert_fusion_encoder",
    "load_bert_text_encoder",
    "load_hf_vision_encoder",
    "load_keras_hub_vision_encoder",
    "text_encoder_from_bert",
    "vision_encoder_config_from_hf",
    "vision_encoder_config_from_keras_hub",
    "vision_encoder_from_hf",
    "vision_encoder_from_keras_hub",
]

"""keras_trips.converters."""

from keras_trips.converters.convert_bert import (
    BertCheckpoint,
    load_bert_fusion_encoder,
    load_bert_text_encoder,
    text_encoder_from_bert,
)

__all__ = [
    "BertCheckpoint",
    "load_bert_fusion_encoder",
    "load_bert_text_encoder",
    "text_encoder_from_bert",
]

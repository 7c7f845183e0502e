"""Serving signatures of the backbone and the pre-training model.

- `"itm"`: image-text matching probability `(B,)` and logits `(B, 2)`, the
  image encoded under the guidance of its paired text (the pretrainer's
  default signature).
- `"image_embedding"`: L2-normalised ITC image embeddings `(B, E)`, the image
  encoded text-free (guidance `"image"`): a retrieval gallery is encoded
  once, whatever the query.
- `"text_embedding"`: L2-normalised ITC text embeddings `(B, E)`.
- `"features"`: the backbone's `text_sequence`, `image_sequence` and
  `fusion_sequence` (the backbone's default signature).
"""

from keras import ops

from keras_trips.export.serving_signature import (
    ServingSignature,
    register_serving_signature,
)
from keras_trips.models.trips_backbone import TRIPSBackbone
from keras_trips.models.trips_pretrainer import TRIPSPretrainer

IMAGE_TEXT_INPUTS = ("images", "token_ids", "padding_mask")
TEXT_INPUTS = ("token_ids", "padding_mask")


def backbone_features(backbone, inputs):
    outputs = backbone(inputs, training=False)
    return {name: ops.cast(value, "float32") for name, value in outputs.items()}


def image_text_matching(pretrainer, inputs):
    backbone = pretrainer.backbone
    text = backbone.encode_text(inputs["token_ids"], inputs["padding_mask"])
    image = backbone.encode_image(inputs["images"], text[:, 0])
    probability, logits = pretrainer.match_probability(
        text, image, inputs["padding_mask"], return_logits=True
    )
    return {"itm_probability": probability, "itm_logits": logits}


def image_embedding(pretrainer, inputs):
    image = pretrainer.backbone.encode_image(inputs["images"])
    return {"image_embedding": pretrainer.embed_image(image)}


def text_embedding(pretrainer, inputs):
    text = pretrainer.backbone.encode_text(inputs["token_ids"], inputs["padding_mask"])
    return {"text_embedding": pretrainer.embed_text(text, inputs["padding_mask"])}


def pretrainer_features(pretrainer, inputs):
    return backbone_features(pretrainer.backbone, inputs)


FEATURES_DESCRIPTION = "text, image (after selection) and fusion token states"
register_serving_signature(
    TRIPSBackbone,
    ServingSignature(
        "features",
        backbone_features,
        IMAGE_TEXT_INPUTS,
        description=FEATURES_DESCRIPTION,
    ),
)
for signature in (
    ServingSignature(
        "itm",
        image_text_matching,
        IMAGE_TEXT_INPUTS,
        description="image-text matching probability, text-guided vision pass",
    ),
    ServingSignature(
        "image_embedding",
        image_embedding,
        ("images",),
        description="ITC image embeddings, text-free (guidance 'image')",
    ),
    ServingSignature(
        "text_embedding",
        text_embedding,
        TEXT_INPUTS,
        description="ITC text embeddings",
    ),
    ServingSignature(
        "features",
        pretrainer_features,
        IMAGE_TEXT_INPUTS,
        description=FEATURES_DESCRIPTION,
    ),
):
    register_serving_signature(TRIPSPretrainer, signature)

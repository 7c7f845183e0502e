"""Serving signatures of the downstream task models.

- `TRIPSVQA` `"answer"`: per-answer probabilities `(B, num_answers)` and the
  top answer's index `(B,)`.
- `TRIPSNLVR2` `"nlvr2"`: the probability that the statement is true `(B,)`
  and the logits `(B, 2)`, from image pairs `(B, 2, H, W, C)`.
- `TRIPSGrounding` `"box"`: normalised `(x1, y1, x2, y2)` boxes `(B, 4)`.
- `TRIPSCaptioner` `"caption"`: greedy captions as token ids `(B, L)`, `L`
  the longest caption the model can write (the end token included, then
  zeros), from images alone.
"""

from keras import ops

from keras_trips.export.serving_signature import (
    ServingSignature,
    register_serving_signature,
)
from keras_trips.export.trips_serving_signatures import IMAGE_TEXT_INPUTS
from keras_trips.models.trips_captioner import TRIPSCaptioner
from keras_trips.models.trips_grounding import TRIPSGrounding
from keras_trips.models.trips_nlvr2 import TRIPSNLVR2
from keras_trips.models.trips_vqa import TRIPSVQA


def vqa_answer(model, inputs):
    logits = model(inputs, training=False)
    return {
        "answer_probabilities": ops.sigmoid(logits),
        "answer_index": ops.cast(ops.argmax(logits, axis=-1), "int32"),
    }


def nlvr2_verdict(model, inputs):
    logits = model(inputs, training=False)
    return {"probability_true": ops.softmax(logits)[:, 1], "logits": logits}


def grounding_box(model, inputs):
    return {"boxes": model(inputs, training=False)}


def greedy_caption(model, inputs):
    max_length = model.sequence_length - len(model.prompt_token_ids)
    return {"token_ids": model.generate(inputs["images"], max_length=max_length)}


def image_pairs(backbone, sequence_length):
    return {"images": ((2, *backbone.image_shape), "float32")}


for model_class, signature in (
    (
        TRIPSVQA,
        ServingSignature(
            "answer",
            vqa_answer,
            IMAGE_TEXT_INPUTS,
            description="answer probabilities and the top answer's index",
        ),
    ),
    (
        TRIPSNLVR2,
        ServingSignature(
            "nlvr2",
            nlvr2_verdict,
            IMAGE_TEXT_INPUTS,
            custom_inputs=image_pairs,
            description="probability that the statement is true of the image pair",
        ),
    ),
    (
        TRIPSGrounding,
        ServingSignature(
            "box",
            grounding_box,
            IMAGE_TEXT_INPUTS,
            description="the box the phrase refers to, normalised xyxy",
        ),
    ),
    (
        TRIPSCaptioner,
        ServingSignature(
            "caption",
            greedy_caption,
            ("images",),
            description="greedy caption token ids after the prompt",
        ),
    ),
):
    register_serving_signature(model_class, signature)

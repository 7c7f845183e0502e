"""keras_trips.data: tf.data input pipelines for TRIPS.

Every reader returns a batched `tf.data.Dataset` with static shapes
(`drop_remainder=True`), ready for `model.fit`. Pre-training datasets yield a
features dict only; task datasets yield `(features, targets)`:

- features: `"images"` float32 `(B, H, W, 3)` CLIP-normalised (NLVR2:
  `(B, 2, H, W, 3)`), `"token_ids"` int32 `(B, L)`, `"padding_mask"` int32
  `(B, L)` (1 on real tokens); with MLM masking also `"masked_token_ids"`
  int32 `(B, L)` (the text as the MLM objective sees it; `"token_ids"` stays
  unmasked), `"mask_positions"`, `"mask_ids"` int32 `(B, P)` and
  `"mask_weights"` float32 `(B, P)`.
- targets: VQA `answer_scores` float32 `(B, num_answers)`; NLVR2 `label`
  int32 `(B,)`; RefCOCO `boxes` float32 `(B, 4)`, normalised xyxy in [0, 1].
"""

from keras_trips.data.captions import albef_json_dataset, coco_captions_dataset
from keras_trips.data.image_ops import CLIP_MEAN, CLIP_STD
from keras_trips.data.nlvr2 import nlvr2_dataset
from keras_trips.data.refcoco import refcoco_dataset
from keras_trips.data.tfrecords import tfrecord_dataset, write_tfrecords
from keras_trips.data.trips_text_preprocessor import TRIPSTextPreprocessor
from keras_trips.data.vocabulary import default_vocabulary_path
from keras_trips.data.vqa import (
    easy_vqa_dataset,
    easy_vqa_records,
    normalize_answer,
    read_vqa_records,
    vqa_answer_vocabulary,
    vqa_caption_rows,
    vqa_dataset,
    vqa_soft_scores,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "TRIPSTextPreprocessor",
    "albef_json_dataset",
    "coco_captions_dataset",
    "default_vocabulary_path",
    "easy_vqa_dataset",
    "easy_vqa_records",
    "nlvr2_dataset",
    "normalize_answer",
    "read_vqa_records",
    "refcoco_dataset",
    "tfrecord_dataset",
    "vqa_answer_vocabulary",
    "vqa_caption_rows",
    "vqa_dataset",
    "vqa_soft_scores",
    "write_tfrecords",
]

"""keras_trips.metrics: evaluation of downstream tasks."""

from keras_trips.metrics.box_iou import box_iou
from keras_trips.metrics.caption_tokens import caption_tokens
from keras_trips.metrics.corpus_bleu import corpus_bleu
from keras_trips.metrics.corpus_cider import corpus_cider
from keras_trips.metrics.generalized_box_iou import generalized_box_iou
from keras_trips.metrics.iou_accuracy import IoUAccuracy
from keras_trips.metrics.retrieval_evaluator import RetrievalEvaluator
from keras_trips.metrics.retrieval_recall import retrieval_recall
from keras_trips.metrics.selection_evaluator import (
    SelectionEvaluator,
    box_patch_mask,
    selection_eval_data,
)
from keras_trips.metrics.vqa_accuracy import VQAAccuracy

"""keras_trips.metrics: evaluation of downstream tasks."""

from keras_trips.metrics.retrieval_evaluator import RetrievalEvaluator
from keras_trips.metrics.retrieval_recall import retrieval_recall
from keras_trips.metrics.selection_evaluator import (
    SelectionEvaluator,
    box_patch_mask,
    selection_eval_data,
)

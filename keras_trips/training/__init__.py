"""keras_trips.training: the common parts of the training recipes.

A run's configuration (`TrainingConfig`, validated on construction), data in
a resumable order, model building, data parallelism, resumable `fit` with
checkpoints, and the end-of-run plot and summary. `recipes/` are thin fronts
over it: their command-line options are `TrainingConfig`'s fields.
"""

from keras_trips.training.data import (
    caption_eval_data,
    caption_text_length,
    eval_caption_file,
    eval_files,
    examples_per_pass,
    resumable_stream,
    training_dataset_fn,
)
from keras_trips.training.distribution import data_parallel_devices, distribution_scope
from keras_trips.training.evaluation import (
    evaluate_pretraining,
    format_evaluation,
    format_training_outcome,
    retrieval_chance,
    selection_pictures,
)
from keras_trips.training.loop import (
    StepLogger,
    fit_resumable,
    training_callbacks,
    training_schedule,
)
from keras_trips.training.model_setup import build_pretrainer, save_models
from keras_trips.training.reporting import plot_losses, print_summary, read_step_log
from keras_trips.training.training_checkpoint import TrainingCheckpoint
from keras_trips.training.training_config import (
    DATA_FORMATS,
    TrainingConfig,
    TrainingConfigError,
)

"""keras_trips.tasks: data, evaluation and keep-rate sweeps of the downstream
task models, the library behind `recipes/finetune_*.py`."""

from keras_trips.tasks.keep_rate_sweep import keep_rate_sweep, plot_keep_rate_curve
from keras_trips.tasks.task_data import TASK_FORMATS, task_datasets
from keras_trips.tasks.task_evaluation import (
    caption_texts,
    evaluate_task,
    majority_baseline,
)

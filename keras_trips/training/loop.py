"""The recipes' training loop: schedule, callbacks, resumable `fit`."""

import math
import os
import time

import keras
import numpy as np

from keras_trips.callbacks import CollapseMonitor, KeepRateScheduler
from keras_trips.training.data import resumable_stream
from keras_trips.training.training_checkpoint import TrainingCheckpoint


def training_schedule(config, examples_per_pass):
    """`(steps_per_epoch, epochs, total_steps)` of a `TrainingConfig`.

    An epoch is `steps_per_epoch` batches, by default one pass over the data
    (`examples_per_pass` examples; None: `steps`); `steps` sets the total
    (the last epoch may then be partial), otherwise `epochs` does.
    """
    steps_per_epoch = config.steps_per_epoch
    if steps_per_epoch is None:
        if examples_per_pass is None:
            steps_per_epoch = config.steps
        else:
            steps_per_epoch = max(1, examples_per_pass // config.batch_size)
    total_steps = config.steps or config.epochs * steps_per_epoch
    return steps_per_epoch, math.ceil(total_steps / steps_per_epoch), total_steps


def training_callbacks(config, total_steps):
    """The callbacks of a `TrainingConfig`'s run: its `TrainingCheckpoint`
    first, then TensorBoard logs, the CSV histories (per epoch and per step,
    appended on resume) and, with `keep_rate_warmup`, the keep-rate
    schedule."""
    output_dir = config.output_dir
    checkpoint = TrainingCheckpoint(
        os.path.join(output_dir, "checkpoints"), save_every=config.checkpoint_every
    )
    callbacks = [
        checkpoint,
        StepLogger(os.path.join(output_dir, "steps.csv"), checkpoint),
        keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(output_dir, "history.csv"), append=True),
    ]
    queue = config.queue_size if config.momentum else 0
    callbacks.append(CollapseMonitor(num_candidates=config.batch_size + queue))
    if config.keep_rate_warmup is not None:
        # Steps are batches, in the scheduler as in the options.
        callbacks.append(
            KeepRateScheduler(
                config.backbone_config["keep_rate"],
                warmup_steps=config.keep_rate_warmup,
                total_steps=max(config.keep_rate_warmup + 1, total_steps // 2),
            )
        )
    return callbacks


class StepLogger(keras.callbacks.Callback):
    """Appends `step,<metric>...` to a CSV file every batch (the running
    means of the epoch, as the progress bar shows them).

    Args:
        path: str. The CSV file; appended to, so that a resumed run extends it.
        checkpoint: the run's `TrainingCheckpoint`, placed before this
            callback: it counts the steps.

    Example:
    ```python
    checkpoint = TrainingCheckpoint("run/checkpoints", save_every=100)
    callbacks = [checkpoint, StepLogger("run/steps.csv", checkpoint)]
    ```
    """

    def __init__(self, path, checkpoint):
        super().__init__()
        self.path = path
        self.checkpoint = checkpoint
        self.columns = None

    def on_train_batch_end(self, batch, logs=None):
        logs = {name: float(value) for name, value in (logs or {}).items()}
        if self.columns is None:
            self.columns = self._logged_columns()
        # Metrics may join later (the pre-trainer's ITM and MLM do).
        new_columns = sorted(set(logs) - set(self.columns))
        if new_columns:
            self._add_columns(new_columns)
        values = [str(self.checkpoint.step)]
        values += [repr(logs[name]) if name in logs else "" for name in self.columns]
        with open(self.path, "a") as file:
            file.write(",".join(values) + "\n")

    def _logged_columns(self):
        """The metric columns of the file so far (a resumed run's)."""
        if not os.path.isfile(self.path):
            return []
        with open(self.path) as file:
            return [name for name in file.readline().strip().split(",")[1:] if name]

    def _add_columns(self, names):
        """Rewrites the header with `names` added; earlier rows leave them
        empty (`read_step_log` reads NaN)."""
        rows = []
        if os.path.isfile(self.path):
            with open(self.path) as file:
                rows = file.read().splitlines()[1:]
        self.columns = [*self.columns, *names]
        with open(self.path, "w") as file:
            file.write("\n".join([",".join(["step", *self.columns]), *rows]) + "\n")


def fit_resumable(
    model, dataset_fn, steps_per_epoch, total_steps, callbacks, verbose=1
):
    """Trains `model` to `total_steps` batches, resuming from the newest
    checkpoint of the `TrainingCheckpoint` in `callbacks`.

    Restores the weights and the optimizer (its step count included), then
    feeds the batches from that step on (`resumable_stream`). A resumed
    epoch is finished with its remaining batches, so epochs stay aligned
    with the uninterrupted run.

    Args:
        model: a compiled Keras model.
        dataset_fn: builds one pass over the data in a fixed order
            (`training_dataset_fn`).
        steps_per_epoch: int. total_steps: int.
        callbacks: list, holding one `TrainingCheckpoint`.
        verbose: `fit`'s verbosity (1: Keras' progress bar).

    Returns:
        dict: `"start_step"` (restored), `"steps"` (trained now) and
        `"seconds"` (wall time of `fit`).
    """
    checkpoint = next(c for c in callbacks if isinstance(c, TrainingCheckpoint))
    if keras.backend.backend() == "tensorflow" and not model.built:
        # Built here: Keras would build a MirroredStrategy model on the
        # replicas' mean batch, whose token ids are no longer ints. On zeros,
        # so that no data (nor its random masking) is drawn; before the
        # restore, which resets the sampler state this call advances.
        model(
            {
                name: np.zeros(spec.shape, spec.dtype.as_numpy_dtype)
                for name, spec in resumable_stream(dataset_fn, 0).element_spec.items()
            }
        )
    start_step = step = checkpoint.restore(model)

    def stop_at_total_steps(batch, logs):
        if checkpoint.step >= total_steps:
            model.stop_training = True

    callbacks = [
        *callbacks,
        keras.callbacks.LambdaCallback(on_train_batch_end=stop_at_total_steps),
    ]
    started = time.perf_counter()
    while step < total_steps:
        epoch, done_in_epoch = divmod(step, steps_per_epoch)
        if done_in_epoch:
            # A resumed epoch is finished alone, to keep epochs aligned.
            steps, epochs = steps_per_epoch - done_in_epoch, epoch + 1
        else:
            steps, epochs = steps_per_epoch, math.ceil(total_steps / steps_per_epoch)
        model.fit(
            resumable_stream(dataset_fn, step),
            initial_epoch=epoch,
            epochs=epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=verbose,
            # The stream shuffles itself.
            shuffle=False,
        )
        step = checkpoint.step
    return {
        "start_step": start_step,
        "steps": step - start_step,
        "seconds": time.perf_counter() - started,
    }

import glob
import os
import re

import keras

_NAME = re.compile(r"step-(\d+)\.weights\.h5$")


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the training state every `save_every` steps and at each epoch
    end; `restore()` brings it back before training resumes.

    The state is the model's weights and the optimizer's variables (its
    iteration count included) in `step-<N>.weights.h5`, N the number of
    batches trained. The file is written aside and renamed, so a run killed
    at any moment leaves the last complete checkpoint. `keep` newest files
    are kept. Unlike `keras.callbacks.BackupAndRestore`, which restores the
    epoch but not a position within it, the step is restored exactly; with
    a data stream that skips the batches already trained
    (`keras_trips.training.data.resumable_stream`), nothing is lost beyond
    the checkpoint.

    Args:
        directory: str. Where the checkpoints go.
        save_every: int. Steps between checkpoints.
        keep: int. Checkpoints kept on disk.

    Example:
    ```python
    checkpoint = TrainingCheckpoint("run/checkpoints", save_every=100)
    step = checkpoint.restore(model)  # 0 for a new run
    model.fit(dataset.repeat().skip(step), callbacks=[checkpoint], ...)
    ```
    """

    def __init__(self, directory, save_every, keep=2):
        super().__init__()
        if save_every < 1:
            raise ValueError(f"`save_every` must be positive. Received: {save_every}")
        self.directory = directory
        self.save_every = save_every
        self.keep = keep
        self.step = 0

    def checkpoints(self):
        """`(step, path)` of the complete checkpoints, oldest first."""
        found = []
        for path in glob.glob(os.path.join(self.directory, "step-*.weights.h5")):
            match = _NAME.search(path)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def restore(self, model):
        """Loads the newest checkpoint into the compiled `model`; returns its
        step (0 when there is none: a new run)."""
        self.step = 0
        found = self.checkpoints()
        if found:
            self.step, path = found[-1]
            # Optimizer variables exist only once built; load_weights fills them.
            model.optimizer.build(model.trainable_variables)
            model.load_weights(path)
        return self.step

    def save(self):
        """Writes the checkpoint of the current step."""
        os.makedirs(self.directory, exist_ok=True)
        # The JAX trainer keeps the live state apart from the model's
        # variables until asked to copy it back.
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()
        path = os.path.join(self.directory, f"step-{self.step:09d}.weights.h5")
        scratch = os.path.join(self.directory, "partial.weights.h5")
        self.model.save_weights(scratch, overwrite=True)
        os.replace(scratch, path)
        for _, old in self.checkpoints()[: -self.keep]:
            os.remove(old)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.save_every == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if not any(step == self.step for step, _ in self.checkpoints()):
            self.save()

import glob
import os
import re

import h5py
import keras

_NAME = re.compile(r"step-(\d+)\.weights\.h5$")
# Keras' weight files leave out the random seed states (dropout, samplers);
# the checkpoint adds them in a group of its own.
_SEED_GROUP = "keras_trips_seed_states"
# Under torch, Keras' unseeded dropout draws from torch's global generator,
# which `fit` also draws from between batches (torch's DataLoader seeds its
# workers from it per iterator). The checkpoint reseeds it from a run seed
# and the step before every batch, so the draws depend on the step alone.
_TORCH_SEED = "torch_seed"


def _seed_states(model):
    return [v for v in model.variables if v.name == "seed_generator_state"]


def _save_seed_states(model, path, torch_seed):
    with h5py.File(path, "a") as file:
        seeds = file.create_group(_SEED_GROUP)
        for i, state in enumerate(_seed_states(model)):
            seeds[str(i)] = keras.ops.convert_to_numpy(state)
        if torch_seed is not None:
            seeds[_TORCH_SEED] = torch_seed


def _restore_seed_states(model, path):
    """Restores the seed states; returns the run's torch seed, if saved."""
    with h5py.File(path, "r") as file:
        seeds = file.get(_SEED_GROUP, {})
        for i, state in enumerate(_seed_states(model)):
            if str(i) in seeds:
                state.assign(seeds[str(i)][()])
        if _TORCH_SEED in seeds:
            return int(seeds[_TORCH_SEED][()])
    return None


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the training state every `save_every` steps and at each epoch
    end; `restore()` brings it back before training resumes.

    The state is the model's weights, the optimizer's variables (its
    iteration count included) and the random seed states of its dropout
    layers and samplers in `step-<N>.weights.h5`, N the number of batches
    trained, so a resumed run draws the same dropout masks and negatives as
    the uninterrupted one. The file is written aside and renamed, so a run
    killed at any moment leaves the last complete checkpoint. `keep` newest
    files are kept. Unlike `keras.callbacks.BackupAndRestore`, which restores
    the epoch but not a position within it, the step is restored exactly; with
    a data stream that skips the batches already trained
    (`keras_trips.training.data.resumable_stream`), nothing is lost beyond
    the checkpoint.

    Under torch, Keras' unseeded dropout draws from torch's global random
    generator; the callback reseeds it before every batch from a seed of the
    run (kept in the checkpoint) and the step.

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
        self._torch_seed = None

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
            self._torch_seed = _restore_seed_states(model, path)
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
        _save_seed_states(self.model, scratch, self._torch_seed)
        os.replace(scratch, path)
        for _, old in self.checkpoints()[: -self.keep]:
            os.remove(old)

    def on_train_begin(self, logs=None):
        if keras.backend.backend() == "torch" and self._torch_seed is None:
            import torch

            self._torch_seed = int(torch.randint(2**31, ()))

    def on_train_batch_begin(self, batch, logs=None):
        # A checkpoint written under torch may resume under another backend.
        if keras.backend.backend() == "torch":
            import torch

            torch.manual_seed(self._torch_seed + self.step)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.save_every == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if not any(step == self.step for step, _ in self.checkpoints()):
            self.save()

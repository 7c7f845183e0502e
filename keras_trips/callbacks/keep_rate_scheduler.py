import math

import keras

from keras_trips.layers.trips_patch_selection import validate_keep_rate
from keras_trips.models.trips_vision_encoder import TRIPSVisionEncoder
from keras_trips.utils.train_step import distinct_train_step


class KeepRateScheduler(keras.callbacks.Callback):
    """Keep-rate schedule (EViT): 1.0 for a warm-up, then cosine to the target.

    The rate is quantised to `num_levels` values between 1.0 and the target:
    each distinct rate is a distinct static token count, so a compiled train
    function per level, built once and reused, instead of one per step. Steps
    are batches, as Keras' learning-rate schedules count them (also under
    gradient accumulation), taken from the optimizer, so a resumed run picks
    the schedule up where it was. Every `TRIPSVisionEncoder` in the model
    follows it (the momentum copy too).

    Args:
        keep_rate: float in (0, 1]. The rate reached at `total_steps`.
        warmup_steps: int. Steps at keep rate 1.0 (no selection).
        total_steps: int. Step at which the target is reached.
        num_levels: int. Distinct rates used, 1.0 and the target included.

    Example:
    ```python
    pretrainer.fit(
        dataset,
        callbacks=[keras_trips.callbacks.KeepRateScheduler(0.7, 500, 5000)],
    )
    ```
    """

    def __init__(self, keep_rate, warmup_steps, total_steps, num_levels=4):
        super().__init__()
        self.keep_rate = validate_keep_rate(keep_rate)
        if num_levels < 2:
            raise ValueError(f"`num_levels` must be at least 2. Received: {num_levels}")
        if total_steps <= warmup_steps:
            raise ValueError(
                f"`total_steps` ({total_steps}) must exceed `warmup_steps` "
                f"({warmup_steps})."
            )
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.num_levels = num_levels
        self.current = None
        self._train_functions = {}

    def rate(self, step):
        """The quantised keep rate at a training step."""
        if step < self.warmup_steps:
            return 1.0
        progress = min(
            1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        )
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        # Level 0 is 1.0, the last level the target.
        level = round((1.0 - cosine) * (self.num_levels - 1))
        return 1.0 - (1.0 - self.keep_rate) * level / (self.num_levels - 1)

    def _encoders(self):
        return [
            layer
            for layer in self.model._flatten_layers(include_self=False)
            if isinstance(layer, TRIPSVisionEncoder)
        ]

    def on_train_begin(self, logs=None):
        # Counted here rather than read from the optimizer at each batch: the
        # JAX trainer syncs variables back only at the end of an epoch. The
        # batch count is `_iterations`: under gradient accumulation, the
        # public `iterations` counts the updates.
        self.step = int(keras.ops.convert_to_numpy(self.model.optimizer._iterations))

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1

    def on_train_batch_begin(self, batch, logs=None):
        rate = self.rate(self.step)
        if rate == self.current:
            return
        if self.current is not None:
            self._train_functions[self.current] = self.model.train_function
        for encoder in self._encoders():
            encoder.set_keep_rate(rate)
        self.model.train_function = self._train_functions.get(rate)
        if self.model.train_function is None:
            with distinct_train_step(self.model):
                self.model.make_train_function()
        self.current = rate

import math
import warnings

import keras


class CollapseMonitor(keras.callbacks.Callback):
    """Warns once, early, when contrastive pre-training is not learning.

    Image-text contrastive (ITC) loss sits at its chance level `ln(K)`, K the
    number of candidates each row is scored against (the global batch, plus
    the queue with a momentum model), until the towers tell pairs apart. Two
    symptoms are caught while training runs, each reported once:

    - stalled: after `patience` steps the epoch's running `itc_loss` is
      still within `tolerance` (relative) of chance;
    - collapsed: the mean pairwise cosine of the image or of the text
      embeddings of a batch (`image_similarity`, `text_similarity`, which
      `TRIPSPretrainer` logs) exceeds `max_similarity`: every input maps to
      nearly the same embedding, where ITC's gradient vanishes.

    The chance level is printed when training starts, beside what the loss
    must fall below.

    Args:
        num_candidates: int. Keys each ITC row is contrasted with (global
            batch size, plus the queue size with momentum).
        patience: int. Steps before a stall is reported.
        tolerance: float. How close to chance counts as "at chance".
        max_similarity: float. Mean pairwise cosine counted as collapsed.
        verbose: bool. Print the chance level at the start.

    Example:
    ```python
    pretrainer.fit(dataset, callbacks=[CollapseMonitor(num_candidates=32)])
    ```
    """

    def __init__(
        self,
        num_candidates,
        patience=100,
        tolerance=0.02,
        max_similarity=0.98,
        verbose=True,
    ):
        super().__init__()
        if num_candidates < 2:
            raise ValueError(
                f"`num_candidates` must be at least 2. Received: {num_candidates}"
            )
        self.chance = math.log(num_candidates)
        self.num_candidates = num_candidates
        self.patience = patience
        self.tolerance = tolerance
        self.max_similarity = max_similarity
        self.verbose = verbose
        self.steps = 0
        self.reported = set()

    def on_train_begin(self, logs=None):
        if self.verbose:
            print(
                f"ITC chance level: ln({self.num_candidates}) = {self.chance:.3f}; "
                "itc_loss must fall below it for images and texts to align.",
                flush=True,
            )

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        logs = logs or {}
        itc = logs.get("itc_loss")
        if (
            itc is not None
            and self.steps >= self.patience
            and float(itc) > self.chance * (1 - self.tolerance)
        ):
            self._report(
                "stalled",
                f"itc_loss is {float(itc):.4f} after {self.steps} steps, at its "
                f"chance level ln({self.num_candidates}) = {self.chance:.4f}: "
                "the model does not tell matching image-text pairs apart. Try a "
                "higher learning rate, less dropout, or pretrained towers.",
            )
        for name in ("image_similarity", "text_similarity"):
            value = logs.get(name)
            if value is not None and float(value) > self.max_similarity:
                tower = name.split("_")[0]
                self._report(
                    name,
                    f"The {tower} embeddings have collapsed: their mean pairwise "
                    f"cosine is {float(value):.4f} (above {self.max_similarity}) "
                    f"after {self.steps} steps, so different {tower}s map to "
                    "nearly the same embedding and ITC cannot learn.",
                )

    def _report(self, symptom, message):
        if symptom not in self.reported:
            self.reported.add(symptom)
            warnings.warn(message, stacklevel=2)

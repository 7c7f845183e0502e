import keras
from keras import ops


def predicted_answer_score(answer_scores, logits):
    """The soft score `(B,)` of each row's highest-scoring answer."""
    predicted = ops.argmax(logits, axis=-1)[:, None]
    answer_scores = ops.cast(answer_scores, "float32")
    return ops.take_along_axis(answer_scores, predicted, axis=-1)[:, 0]


@keras.saving.register_keras_serializable(package="keras_trips")
class VQAAccuracy(keras.metrics.MeanMetricWrapper):
    """The official VQA accuracy of the top predicted answer.

    The official evaluation scores an answer given by `n` of the 10
    annotators as the mean, over the 10 subsets of 9 annotators, of
    `min(1, matches / 3)`, after normalising both (lower case, punctuation,
    number words, articles). `keras_trips.data.vqa_soft_scores` computes
    exactly those scores and the VQA readers yield them as the targets
    `(B, num_answers)`, so the accuracy of a prediction is the target's
    value at the predicted answer; a question whose annotators' answers are
    all outside the vocabulary scores 0, as in the official evaluation.

    Args:
        name: str. The metric's name.
        dtype: the metric's dtype.

    Example:
    ```python
    scores = keras_trips.data.vqa_soft_scores(["2"] * 2 + ["two"] + ["3"] * 7)
    # {"2": 0.9, "3": 1.0}
    metric = VQAAccuracy()
    metric.update_state([[0.9, 1.0]], [[2.0, -1.0]])  # predicts "2"
    metric.result()  # 0.9
    ```
    """

    def __init__(self, name="vqa_accuracy", dtype=None):
        super().__init__(fn=predicted_answer_score, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

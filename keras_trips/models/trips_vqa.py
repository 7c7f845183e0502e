import keras

from keras_trips.layers.trips_task_head import TRIPSTaskHead
from keras_trips.metrics.vqa_accuracy import VQAAccuracy
from keras_trips.models.trips_task import TRIPSTask


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSVQA(TRIPSTask):
    """Visual question answering as answer classification.

    The task as the paper evaluates it: docs/method.md, "Other tasks".

    The question guides the patch selection of its image; the fused [CLS]
    state goes through an MLP (`TRIPSTaskHead`, width twice the fusion
    width) to one logit per answer of the vocabulary. Trained with binary
    cross-entropy on the VQA soft scores (the official setting: several
    answers can be partly right); evaluated with the official VQA accuracy
    (`keras_trips.metrics.VQAAccuracy`).

    Called on `{"images", "token_ids", "padding_mask"}` (the VQA readers of
    `keras_trips.data`); returns logits `(B, len(answers))`.

    Args:
        backbone: a `TRIPSBackbone`.
        answers: list of str, the answer vocabulary (the readers' order).
        dropout: float. Dropout in the head.
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    train = keras_trips.data.easy_vqa_dataset("train", batch_size=32)
    vqa = keras_trips.models.TRIPSVQA(backbone, answers=easy_vqa.get_answers())
    vqa.compile(learning_rate=1e-4)
    vqa.fit(train, epochs=3)
    vqa.predict_answers(features)  # ["circle", "yes", ...]
    ```
    """

    def __init__(self, backbone, answers, dropout=0.1, **kwargs):
        super().__init__(backbone, **kwargs)
        answers = list(answers)
        if not answers or not all(isinstance(a, str) for a in answers):
            raise ValueError(
                f"`answers` must be a non-empty list of strings. Received: {answers!r}"
            )
        if len(set(answers)) != len(answers):
            raise ValueError("`answers` repeats an answer.")

        # === Layers ===
        width = self.feature_widths()["fusion"]
        self.answer_head = TRIPSTaskHead(
            width,
            2 * width,
            len(answers),
            dropout=dropout,
            dtype=backbone.dtype_policy,
            name="answer_head",
        )

        # === Config ===
        self.answers = answers
        self.dropout = dropout
        # Every weight exists now: loading and exporting need it said.
        self.built = True

    def call(self, inputs, keep_rate=None, training=None):
        _, _, fusion = self.encode(inputs, keep_rate=keep_rate, training=training)
        logits = self.answer_head(fusion[:, 0], training=training)
        return keras.ops.cast(logits, "float32")

    def predict_answers(self, inputs, keep_rate=None):
        """The top answer (str) of each question of a batch of features."""
        logits = self(inputs, keep_rate=keep_rate, training=False)
        indices = keras.ops.convert_to_numpy(keras.ops.argmax(logits, axis=-1))
        return [self.answers[i] for i in indices]

    def default_loss(self):
        """Binary cross-entropy on the soft scores (the official setting)."""
        return keras.losses.BinaryCrossentropy(from_logits=True)

    def default_metrics(self):
        """The official VQA accuracy."""
        return [VQAAccuracy()]

    def get_config(self):
        config = super().get_config()
        config.update({"answers": self.answers, "dropout": self.dropout})
        return config

import keras
from keras import ops

from keras_trips.models.default_optimizer import default_optimizer
from keras_trips.utils.saving import serialize_backbone


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSTask(keras.Model):
    """Base of the downstream task models: a `TRIPSBackbone` and a head.

    As keras-hub's tasks: the backbone is an attribute, the head is built at
    construction, `compile()` has defaults that train the task (AdamW with
    warm-up and cosine decay), and the model saves and loads as `.keras`.
    Subclasses use only the backbone's public methods (`encode_text`,
    `encode_image`, `fuse`, `vision_encoder`) and read the widths of their
    heads from the backbone's outputs (`feature_widths`), so that a text
    tower wider than the vision tower works too.

    The keep rate is a call argument (`model(inputs, keep_rate=0.5)`) and
    can be set for `fit`, `evaluate` and `predict` with `set_keep_rate`.

    Args:
        backbone: a `TRIPSBackbone`.
        **kwargs: standard `keras.Model` arguments.
    """

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def feature_widths(self):
        """`{"text", "image", "fusion"}`: the widths of the backbone's text
        states, image tokens and fusion states, from a symbolic pass."""
        backbone = self.backbone
        token_ids = keras.KerasTensor((None, None), "int32")
        padding_mask = keras.KerasTensor((None, None), "bool")
        images = keras.KerasTensor(
            (None, *backbone.vision_encoder.image_shape), "float32"
        )
        text = backbone.encode_text(token_ids, padding_mask)
        image = backbone.encode_image(images, text[:, 0])
        fusion = backbone.fuse(text, image, padding_mask)
        return {
            "text": text.shape[-1],
            "image": image.shape[-1],
            "fusion": fusion.shape[-1],
        }

    @staticmethod
    def padding_mask(inputs):
        """`inputs["padding_mask"]`, by default the non-zero token ids."""
        padding_mask = inputs.get("padding_mask")
        if padding_mask is None:
            return ops.not_equal(inputs["token_ids"], 0)
        return padding_mask

    def encode(self, inputs, keep_rate=None, training=None, return_provenance=False):
        """Text states, image tokens guided by the text [CLS], fusion states
        and, with `return_provenance=True`, the image tokens' provenance map
        `(B, T, N)` (`keras_trips.models.selection_provenance`).

        `inputs`: `"images"` `(B, H, W, C)`, `"token_ids"` `(B, L)` and
        optionally `"padding_mask"` (default: the non-zero ids).
        """
        token_ids = inputs["token_ids"]
        padding_mask = self.padding_mask(inputs)
        text = self.backbone.encode_text(token_ids, padding_mask, training=training)
        image = self.backbone.encode_image(
            inputs["images"],
            text[:, 0],
            keep_rate=keep_rate,
            training=training,
            return_provenance=return_provenance,
        )
        if return_provenance:
            image, provenance = image
        fusion = self.backbone.fuse(text, image, padding_mask, training=training)
        if return_provenance:
            return text, image, fusion, provenance
        return text, image, fusion

    def set_keep_rate(self, keep_rate):
        """Sets the keep rate(s) that `fit`, `evaluate` and `predict` use.

        No weight changes; the compiled functions are rebuilt, since the
        token counts are static shapes.
        """
        self.backbone.vision_encoder.set_keep_rate(keep_rate)
        self.train_function = self.test_function = self.predict_function = None

    def default_loss(self):
        """The task's loss, for `compile(loss="auto")`."""
        return None

    def default_metrics(self):
        """The task's metrics, for `compile(metrics="auto")`."""
        return None

    def compile(
        self,
        optimizer="auto",
        learning_rate=1e-4,
        weight_decay=0.02,
        warmup_steps=0,
        total_steps=None,
        loss="auto",
        metrics="auto",
        **kwargs,
    ):
        """Configures training.

        Args:
            optimizer: `"auto"` for AdamW as in ALBEF (see
                `default_optimizer`), or any Keras optimizer.
            learning_rate: float. Peak learning rate of the `"auto"`
                optimizer.
            weight_decay: float. Of the `"auto"` optimizer.
            warmup_steps: int. Linear warm-up steps.
            total_steps: int or `None`. Length of the cosine schedule.
            loss: `"auto"` for the task's (`default_loss`), or any Keras loss.
            metrics: `"auto"` for the task's (`default_metrics`), or a list.
            **kwargs: passed to `keras.Model.compile` (`jit_compile`, ...).
        """
        if optimizer == "auto":
            optimizer = default_optimizer(
                learning_rate, weight_decay, warmup_steps, total_steps
            )
        if loss == "auto":
            loss = self.default_loss()
        if metrics == "auto":
            metrics = self.default_metrics()
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        # Built now, not inside the first traced step: TensorFlow traces a
        # step that creates variables twice.
        self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        # Keras skips a custom `compile()` on load; this one takes the saved
        # optimizer, loss and metrics as they are.
        self.compile(**keras.saving.deserialize_keras_object(config))

    def get_config(self):
        config = super().get_config()
        config["backbone"] = serialize_backbone(self)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)

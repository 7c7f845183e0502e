import keras

from keras_trips.layers.trips_text_encoder import bert_kernel_initializer


@keras.saving.register_keras_serializable(package="keras_trips")
class TRIPSTaskHead(keras.layers.Layer):
    """The MLP head of the downstream tasks: dense, GELU, LayerNorm, dense.

    The answer classifier of VQA models since Anderson et al. (ViLT, VLMo:
    `Linear(D, 2D) -> LayerNorm -> GELU -> Linear(2D, num_answers)`; here
    the GELU comes before the LayerNorm), also used for NLVR2's pair of
    [CLS] states and for grounding's box.

    Args:
        input_dim: int. Width of the input features.
        hidden_dim: int. Width of the hidden layer.
        output_dim: int. Number of outputs (logits).
        dropout: float. Dropout before the output layer.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    head = TRIPSTaskHead(input_dim=128, hidden_dim=256, output_dim=13)
    head(keras.random.normal((2, 128))).shape  # (2, 13)
    ```
    """

    def __init__(self, input_dim, hidden_dim, output_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)

        # === Layers ===
        self.hidden = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=bert_kernel_initializer(),
            dtype=self.dtype_policy,
            name="hidden",
        )
        self.norm = keras.layers.LayerNormalization(
            epsilon=1e-12, dtype=self.dtype_policy, name="norm"
        )
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.output_dense = keras.layers.Dense(
            output_dim,
            kernel_initializer=bert_kernel_initializer(),
            dtype=self.dtype_policy,
            name="output",
        )

        # === Config ===
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.dropout = dropout
        self.build()

    def build(self, input_shape=None):
        self.hidden.build((None, self.input_dim))
        self.norm.build((None, self.hidden_dim))
        self.output_dense.build((None, self.hidden_dim))
        self.built = True

    def call(self, features, training=None):
        x = self.norm(keras.activations.gelu(self.hidden(features), approximate=False))
        return self.output_dense(self.dropout_layer(x, training=training))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "input_dim": self.input_dim,
                "hidden_dim": self.hidden_dim,
                "output_dim": self.output_dim,
                "dropout": self.dropout,
            }
        )
        return config

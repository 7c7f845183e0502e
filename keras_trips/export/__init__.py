"""keras_trips.export: TF SavedModels for TensorFlow Serving.

TensorFlow is imported inside the functions only, so that importing
keras_trips under JAX or torch touches no TensorFlow graph API.
"""

from keras_trips.export import task_serving_signatures, trips_serving_signatures
from keras_trips.export.export_saved_model import export_saved_model
from keras_trips.export.serving_signature import (
    ServingSignature,
    register_serving_signature,
    serving_signatures,
)

__all__ = [
    "ServingSignature",
    "export_saved_model",
    "register_serving_signature",
    "serving_signatures",
]

"""keras_trips.utils."""

from keras_trips.utils.saving import load_model

__all__ = ["load_model"]

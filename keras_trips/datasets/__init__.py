"""keras_trips.datasets: built-in datasets (procedural scenes)."""

from keras_trips.datasets import scenes

__all__ = ["scenes"]

"""keras_trips.datasets."""

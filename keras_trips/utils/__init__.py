"""keras_trips.utils."""

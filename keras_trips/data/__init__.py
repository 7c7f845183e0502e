"""keras_trips.data."""

"""keras_trips.metrics."""

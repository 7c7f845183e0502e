"""keras_trips.layers."""

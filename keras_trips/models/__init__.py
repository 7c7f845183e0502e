"""keras_trips.models."""

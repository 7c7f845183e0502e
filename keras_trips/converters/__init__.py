"""keras_trips.converters."""

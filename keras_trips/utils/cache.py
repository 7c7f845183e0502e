"""Where keras_trips keeps files it can rebuild (generated data, checks)."""

import os


def cache_root():
    """`$KERAS_TRIPS_CACHE`, by default `~/.cache/keras_trips`."""
    return os.environ.get("KERAS_TRIPS_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_trips"
    )

"""keras_trips: text-relevant image patch selection (TRIPS) for Keras 3."""

from keras_trips import (
    callbacks,
    export,
    layers,
    losses,
    metrics,
    models,
    samplers,
    tasks,
    utils,
    visualization,
)

__version__ = "0.1.0"

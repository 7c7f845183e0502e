"""Keras callbacks for TRIPS training."""

from keras_trips.callbacks.collapse_monitor import CollapseMonitor
from keras_trips.callbacks.keep_rate_scheduler import KeepRateScheduler

"""Assembled backbones and task models."""

from keras_trips.models.trips_vision_encoder import TRIPSVisionEncoder

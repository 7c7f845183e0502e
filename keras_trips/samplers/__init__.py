"""Samplers for text generation, beside keras-hub's."""

from keras_trips.samplers.length_normalized_beam_sampler import (
    LengthNormalizedBeamSampler,
)

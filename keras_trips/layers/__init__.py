"""keras_trips.layers."""

from keras_trips.layers.trips_fusion_encoder import TRIPSFusionEncoder
from keras_trips.layers.trips_text_encoder import TRIPSTextEncoder

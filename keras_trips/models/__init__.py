"""Assembled backbones and task models."""

from keras_trips.models.legacy_pretrainer import convert_legacy_pretrainer
from keras_trips.models.load_backbone import load_backbone
from keras_trips.models.trips_backbone import TRIPSBackbone
from keras_trips.models.trips_captioner import TRIPSCaptioner
from keras_trips.models.trips_grounding import TRIPSGrounding
from keras_trips.models.trips_image_converter import TRIPSImageConverter
from keras_trips.models.trips_momentum_model import TRIPSMomentumModel
from keras_trips.models.trips_nlvr2 import TRIPSNLVR2
from keras_trips.models.trips_pretrainer import TRIPSPretrainer
from keras_trips.models.trips_selecting_encoder import (
    TRIPSSelectingEncoder,
    with_patch_selection,
)
from keras_trips.models.trips_task import TRIPSTask
from keras_trips.models.trips_vision_encoder import TRIPSVisionEncoder
from keras_trips.models.trips_vqa import TRIPSVQA

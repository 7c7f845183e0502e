"""Building blocks: patch selection, ViT blocks, text and fusion encoders."""

from keras_trips.layers.trips_fusion_encoder import TRIPSFusionEncoder
from keras_trips.layers.trips_patch_embedding import TRIPSPatchEmbedding
from keras_trips.layers.trips_patch_selection import TRIPSPatchSelection
from keras_trips.layers.trips_task_head import TRIPSTaskHead
from keras_trips.layers.trips_text_encoder import TRIPSTextEncoder
from keras_trips.layers.trips_vision_block import TRIPSVisionBlock

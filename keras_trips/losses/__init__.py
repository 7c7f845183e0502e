"""keras_trips.losses: the pre-training objectives of ALBEF as pure functions
and the box loss of grounding.

Each takes this replica's rows and, where it contrasts them with the batch,
the global batch's (see `keras_trips.utils.replicas`), and returns per-row
values; `TRIPSPretrainer` averages them over the global batch.
"""

from keras_trips.losses.box_regression_loss import BoxRegressionLoss
from keras_trips.losses.hard_negatives import (
    sample_hard_negatives,
    sample_random_negatives,
)
from keras_trips.losses.image_text_contrastive import (
    contrastive_embedding,
    image_text_contrastive_loss,
)
from keras_trips.losses.image_text_matching import (
    hard_negative_triples,
    image_text_matching_loss,
)
from keras_trips.losses.masked_lm import masked_lm_loss
from keras_trips.losses.selection_distillation import (
    patch_relevance,
    selection_distillation_loss,
)

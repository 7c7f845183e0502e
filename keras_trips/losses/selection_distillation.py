"""Selection distillation: teach the text-guided selection where ITC looks.

With mean-pooled ITC embeddings the image-text similarity is, up to the
embedding's norm, the mean over patches of `t . (W h_i + b)`: the caption's
text embedding `t` against each final patch state `h_i` through the ITC
projection. That per-patch relevance learns, through ITC alone, which
patches a caption is about. The selection query of an early block does not
see it: its only gradient comes through the fusion weights. This loss pulls
a selection stage's text-guided scores towards the patches that the
relevance ranks highest (docs/method.md, "Training a small model").
"""

import math

from keras import ops

from keras_trips.layers.trips_patch_selection import kept_count


def patch_relevance(text_embedding, patch_embeddings):
    """`(B, N)`: each caption's ITC text embedding `(B, E)` against the ITC
    projections of its image's patch states `(B, N, E)`."""
    return ops.einsum(
        "be,bne->bn",
        ops.cast(text_embedding, "float32"),
        ops.cast(patch_embeddings, "float32"),
    )


def selection_distillation_loss(scores, relevance, keep_rate):
    """Per-row cross-entropy `(B,)` of the selection `scores` `(B, N)` (a
    distribution over the patches) against a uniform target on the
    `ceil(keep_rate * N)` patches of highest `relevance`, minus its minimum,
    so that 0 means every kept patch scored alike and nothing else scored.

    The target is a set, not the relevance's own distribution: selection
    only ranks, and the relevance's scale is arbitrary. No gradient flows
    into `relevance`.
    """
    num_patches = scores.shape[-1]
    # As many as the selection keeps.
    num_kept = kept_count(num_patches, keep_rate)
    relevance = ops.stop_gradient(ops.convert_to_tensor(relevance, "float32"))
    threshold = ops.sort(relevance, axis=-1)[:, num_patches - num_kept, None]
    target = ops.cast(ops.greater_equal(relevance, threshold), "float32")
    target = target / ops.sum(target, axis=-1, keepdims=True)
    scores = ops.cast(scores, "float32")
    cross_entropy = -ops.sum(target * ops.log(scores + 1e-9), axis=-1)
    return cross_entropy - math.log(num_kept)

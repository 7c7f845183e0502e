"""Provenance: which original patches make up each token after selection.

A provenance map is `(B, T, N)`: row t holds the weight with which each of the
N original patches makes up token t (one-hot for a kept patch, the fusion
weights for a fused token, zeros for a [CLS] or register token). Selection
stages update it by applying the same keep-and-fuse to its rows.
"""

from keras import ops


def initial_provenance(batch_size, num_prefix_tokens, num_patches):
    """The map before any selection: zero rows for the prefix tokens, then the
    identity. `(batch_size, num_prefix_tokens + num_patches, num_patches)`."""
    identity = ops.concatenate(
        [ops.zeros((num_prefix_tokens, num_patches)), ops.eye(num_patches)], axis=0
    )
    return ops.broadcast_to(identity, (batch_size, *identity.shape))


def scores_on_patches(scores, provenance, num_prefix_tokens):
    """A stage's scores `(B, N_s)` over its input tokens spread onto the
    original patches `(B, N)`: a fused token's score goes to its patches in
    proportion to their fusion weights. `provenance` is the map of the tokens
    that entered the stage."""
    return ops.einsum(
        "bt,btn->bn", ops.cast(scores, "float32"), provenance[:, num_prefix_tokens:]
    )

"""Analytic FLOPs (2 x multiply-adds) of the TRIPS models' forward pass.

Counts the matrix products, which are where the time goes; norms, softmaxes
and activations are left out, as in the papers' figures.
"""

import itertools


def vision_encoder_flops(encoder, keep_rate=None, text_guided=True):
    """Forward FLOPs of one image through a `TRIPSVisionEncoder`.

    Args:
        encoder: the `TRIPSVisionEncoder` (only its configuration is read).
        keep_rate: overrides the encoder's keep rate(s), as in its `call()`.
        text_guided: count the text query projection of each selection stage.
    """
    width, mlp = encoder.hidden_dim, encoder.mlp_dim
    channels = encoder.image_shape[-1]
    flops = 2 * encoder.num_patches * encoder.patch_size**2 * channels * width
    lengths = encoder.sequence_lengths(keep_rate)
    for length_in, length_out in itertools.pairwise(lengths):
        flops += 2 * 4 * length_in * width * width  # query, key, value, output
        flops += 2 * 2 * length_in * length_in * width  # scores and weighted sum
        if length_out != length_in:
            # Guidance scores and the fused token; the text query projection.
            flops += 2 * 2 * (length_in - 1) * width
            flops += 2 * width * width * int(text_guided)
        flops += 2 * 2 * length_out * width * mlp
    return flops

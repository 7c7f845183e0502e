"""Analytic FLOPs (2 x multiply-adds) of the TRIPS models.

Counts the matrix products, which are where the time goes; norms, softmaxes,
activations, embedding lookups and per-weight updates (optimizer, momentum
EMA) are left out, as in the papers' figures. Every count is plain Python
arithmetic on the layers' configurations.
"""

import itertools


def attention_flops(query_length, key_length, width):
    """One multi-head attention: `query_length` queries over `key_length` keys.

    Query and output projections on the queries, key and value projections on
    the keys, then the scores and the weighted sum of the values.
    """
    flops = 2 * 2 * query_length * width * width  # query, output
    flops += 2 * 2 * key_length * width * width  # key, value
    flops += 2 * 2 * query_length * key_length * width  # scores, weighted sum
    return flops


def feedforward_flops(length, width, intermediate_dim):
    """The two matmuls of a transformer MLP / FFN over `length` tokens."""
    return 2 * 2 * length * width * intermediate_dim


def patch_embedding_flops(encoder):
    """The patch projection of one image through a `TRIPSVisionEncoder`."""
    channels = encoder.image_shape[-1]
    return (
        2 * encoder.num_patches * encoder.patch_size**2 * channels * encoder.hidden_dim
    )


def vision_encoder_flops(encoder, keep_rate=None, text_guided=True):
    """Forward FLOPs of one image through a `TRIPSVisionEncoder`.

    Args:
        encoder: the `TRIPSVisionEncoder` (only its configuration is read).
        keep_rate: overrides the encoder's keep rate(s), as in its `call()`.
        text_guided: count the text query projection of each selection stage.
    """
    return patch_embedding_flops(encoder) + selecting_blocks_flops(
        encoder.sequence_lengths(keep_rate),
        encoder.hidden_dim,
        encoder.mlp_dim,
        text_guided=text_guided,
    )


def selecting_blocks_flops(
    lengths, width, mlp_dim, num_prefix_tokens=1, text_guided=True
):
    """Pre-LN transformer blocks, some of which select patches.

    Args:
        lengths: tokens entering each block and leaving the last one (a
            block selects where its output is shorter than its input).
        width: int. Token width.
        mlp_dim: int. MLP hidden width.
        num_prefix_tokens: int. Leading tokens that are not scored ([CLS]).
        text_guided: count the text query projection of each selection stage.
    """
    flops = 0
    for length_in, length_out in itertools.pairwise(lengths):
        flops += attention_flops(length_in, length_in, width)
        if length_out != length_in:
            # Guidance scores and the fused token; the text query projection.
            flops += 2 * 2 * (length_in - num_prefix_tokens) * width
            flops += 2 * width * width * int(text_guided)
        flops += feedforward_flops(length_out, width, mlp_dim)
    return flops


def text_encoder_flops(encoder, text_length):
    """Forward FLOPs of one text of `text_length` tokens (padding included:
    the shapes are static) through a `TRIPSTextEncoder`."""
    width = encoder.hidden_dim
    per_layer = attention_flops(text_length, text_length, width)
    per_layer += feedforward_flops(text_length, width, encoder.intermediate_dim)
    return encoder.num_layers * per_layer


def fusion_encoder_flops(encoder, text_length, image_length):
    """Forward FLOPs of one text-image pair through a `TRIPSFusionEncoder`:
    per layer, text self-attention, cross-attention from the text to the
    `image_length` image tokens (their keys and values are projected on every
    call), and the FFN."""
    width = encoder.hidden_dim
    per_layer = attention_flops(text_length, text_length, width)
    per_layer += attention_flops(text_length, image_length, width)
    per_layer += feedforward_flops(text_length, width, encoder.intermediate_dim)
    return encoder.num_layers * per_layer


def masked_lm_head_flops(head, num_masked):
    """Forward FLOPs of keras-hub's `MaskedLMHead` for one text: its dense
    layer and the projection onto the vocabulary, at the `num_masked`
    prediction slots only (it gathers them first)."""
    width = head.token_embedding.output_dim
    vocabulary_size = head.token_embedding.input_dim
    return 2 * num_masked * width * width + 2 * num_masked * width * vocabulary_size


def pretraining_step_breakdown(
    pretrainer, batch_size, text_length, num_masked, keep_rate=None
):
    """FLOPs of one `TRIPSPretrainer` training step, by part.

    What `TRIPSPretrainer.call(training=True)` runs on a batch of
    `batch_size` pairs with MLM (B pairs, L tokens, P prediction slots):

    - `"text_encoder"`: the text encoder twice, on the unmasked text (ITC,
      ITM, guidance) and on the masked text (MLM): 2B texts.
    - `"vision_encoder"`: one text-guided vision pass per pair: B images.
    - `"fusion_encoder"`: 3B ITM pairs (B positives, B negative texts, B
      negative images; the cross-attention projects the image tokens of
      each) and B MLM pairs.
    - `"heads"`: the two ITC projections, the similarity matmuls, the ITM
      head on 3B fused [CLS] and the MLM head.
    - `"backward"`: twice the forward of all the above (gradients with
      respect to both operands of every matmul), except where one operand
      takes no gradient: the pixels of the patch embedding, and, with the
      momentum model, the momentum features and queues in the ITC
      similarities (once the forward there).
    - `"momentum"` (with `use_momentum`): forward only (the outputs are
      `stop_gradient`-ed), the momentum model's ITC features (text and vision
      encoders, projections, similarity matmuls) and MLM soft targets
      (text encoder on the masked text, fusion, MLM head).

    Args:
        pretrainer: the `TRIPSPretrainer` (only configurations are read).
        batch_size: int. Pairs per step.
        text_length: int. Padded text length.
        num_masked: int. MLM prediction slots per text (the data's
            `mask_selection_length`; all are computed, padded or not).
        keep_rate: overrides the vision encoders' keep rate(s).

    Returns:
        dict part -> FLOPs of the whole batch.
    """
    backbone = pretrainer.backbone
    batch, width, embedding = batch_size, backbone.hidden_dim, pretrainer.embedding_dim
    vision = backbone.vision_encoder
    text_guided = "text" in vision.guidance
    image_length = vision.sequence_lengths(keep_rate)[-1]
    text = text_encoder_flops(backbone.text_encoder, text_length)
    image = vision_encoder_flops(vision, keep_rate, text_guided)
    fusion = fusion_encoder_flops(backbone.fusion_encoder, text_length, image_length)
    projections = 2 * batch * (2 * width * embedding)  # image and text [CLS]
    # Image to text and text to image: the batch's embeddings against those
    # of the batch, or, with the momentum model, of its batch plus the queue.
    keys = batch + pretrainer.queue_size * int(pretrainer.use_momentum)
    similarities = 2 * (2 * batch * keys * embedding)
    itm_head = 3 * batch * (2 * width * 2)
    mlm_head = batch * masked_lm_head_flops(pretrainer.mlm_head, num_masked)

    parts = {
        "text_encoder": 2 * batch * text,
        "vision_encoder": batch * image,
        "fusion_encoder": (3 * batch + batch) * fusion,
        "heads": projections + similarities + itm_head + mlm_head,
    }
    backward = 2 * sum(parts.values()) - batch * patch_embedding_flops(vision)
    if pretrainer.use_momentum:
        backward -= similarities
    parts["backward"] = backward
    if pretrainer.use_momentum:
        itc_features = batch * (text + image) + projections + similarities
        mlm_targets = batch * (text + fusion) + mlm_head
        parts["momentum"] = itc_features + mlm_targets
    return parts


def pretraining_step_flops(
    pretrainer, batch_size, text_length, num_masked, keep_rate=None
):
    """FLOPs of one `TRIPSPretrainer` training step (forward, backward and
    the momentum model's forward); see `pretraining_step_breakdown`."""
    return sum(
        pretraining_step_breakdown(
            pretrainer, batch_size, text_length, num_masked, keep_rate
        ).values()
    )

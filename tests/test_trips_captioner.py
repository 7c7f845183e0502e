import itertools

import keras_hub
import numpy as np
import pytest
from harness import numpy, run_model_saving_test, run_serialization_test
from pretraining_utils import MICRO
from task_utils import (
    END,
    PROMPT,
    fit_one_batch,
    task_features,
)

from keras_trips.metrics import corpus_bleu
from keras_trips.models import TRIPSBackbone, TRIPSCaptioner
from keras_trips.samplers import LengthNormalizedBeamSampler


def captioner(**overrides):
    backbone = TRIPSBackbone(**{**MICRO, **overrides})
    return TRIPSCaptioner(
        backbone, prompt_token_ids=PROMPT, end_token_id=END, dropout=0.0
    )


def test_overfits_a_batch_and_generates_its_captions(tmp_path):
    model = captioner()
    model.compile(learning_rate=2e-3)
    x = task_features(batch=4)
    # The first word can only come from the image: images of distinct
    # colours (uniform noise images all look alike to a micro ViT).
    colours = np.random.default_rng(0).uniform(-2, 2, (4, 1, 1, 3))
    x["images"] = (colours + 0.1 * x["images"]).astype("float32")
    after = fit_one_batch(model, x, None, steps=60)
    assert after["token_accuracy"] == 1.0
    references = [[" ".join(map(str, row[1:5]))] for row in x["token_ids"]]
    for sampler in ("greedy", "beam"):
        generated = numpy(model.generate(x["images"], max_length=6, sampler=sampler))
        # Up to the end token, then padding.
        np.testing.assert_array_equal(generated[:, 4], END)
        np.testing.assert_array_equal(generated[:, 5:], 0)
        candidates = [" ".join(map(str, row[:4])) for row in generated]
        assert corpus_bleu(candidates, references)[3] > 0.9
    run_serialization_test(model)
    loaded = run_model_saving_test(model, x, tmp_path)
    np.testing.assert_array_equal(
        numpy(loaded.generate(x["images"], max_length=6)),
        numpy(model.generate(x["images"], max_length=6)),
    )


def next_token_log_probabilities(model, images, sequences):
    """`(N, length, vocabulary)` log P(token | prompt, image, the tokens of
    the row before it), teacher-forced in one call without a cache."""
    token_ids = np.concatenate(
        [np.full((len(sequences), 1), PROMPT[0]), sequences], axis=1
    ).astype("int32")
    inputs = {
        "images": np.repeat(images, len(sequences), axis=0),
        "token_ids": token_ids,
        # Token 0 is a word here, not padding.
        "padding_mask": np.ones(token_ids.shape, bool),
    }
    logits = numpy(model(inputs)).astype("float64")
    return logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))


def exhaustive_search_case(vocabulary, length, end_token_id):
    """A micro captioner over a vocabulary of `vocabulary` tokens whose
    captions end at `end_token_id`, an image, every sequence of `length`
    tokens and their teacher-forced log-probabilities."""
    model = TRIPSCaptioner(
        TRIPSBackbone(**{**MICRO, "vocabulary_size": vocabulary}),
        prompt_token_ids=(PROMPT[0],),
        end_token_id=END,
    )
    model.end_token_id = end_token_id
    images = task_features(batch=1)["images"]
    sequences = np.array(list(itertools.product(range(vocabulary), repeat=length)))
    return (
        model,
        images,
        sequences,
        next_token_log_probabilities(model, images, sequences),
    )


def test_beam_search_of_full_width_equals_exhaustive_search():
    # A vocabulary of 4 and 3 generated tokens: 16 beams keep every prefix
    # of 2 tokens, so the best beam is the best of all 64 sequences.
    vocabulary, length = 4, 3
    # No end token: every sequence runs to the full length.
    model, images, sequences, log_probs = exhaustive_search_case(
        vocabulary, length, end_token_id=vocabulary
    )
    beam = numpy(
        model.generate(
            images,
            max_length=length,
            sampler=keras_hub.samplers.BeamSampler(
                num_beams=vocabulary ** (length - 1)
            ),
        )
    )[0]
    scores = np.take_along_axis(log_probs, sequences[..., None], -1).sum((1, 2))
    np.testing.assert_array_equal(beam, sequences[np.argmax(scores)])
    # Greedy search (on the cache) takes the teacher-forced argmax each step.
    greedy = numpy(model.generate(images, max_length=length))[0]
    row = np.flatnonzero((sequences == greedy).all(axis=1))[0]
    np.testing.assert_array_equal(greedy, np.argmax(log_probs[row], axis=-1))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_length_normalized_beam_search_of_full_width_equals_exhaustive_search(
    length_penalty,
):
    # A vocabulary of 4 whose token 3 ends a caption, 3 generated tokens: 64
    # beams hold every caption, so the best beam is the best caption by
    # log P / length ** length_penalty, the end token counted in the length.
    vocabulary, length, end = 4, 3, 3
    model, images, sequences, log_probs = exhaustive_search_case(
        vocabulary, length, end_token_id=end
    )
    sampler = LengthNormalizedBeamSampler(
        num_beams=vocabulary**length, length_penalty=length_penalty
    )
    beam = numpy(model.generate(images, max_length=length, sampler=sampler))[0]
    token_log_probs = np.take_along_axis(log_probs, sequences[..., None], -1)[..., 0]
    ended = np.cumsum(sequences == end, axis=1) - (sequences == end) > 0
    lengths = (~ended).sum(axis=1)
    scores = np.where(ended, 0.0, token_log_probs).sum(axis=1) / (
        lengths**length_penalty
    )
    expected = np.where(ended, 0, sequences)[np.argmax(scores)]
    np.testing.assert_array_equal(beam, expected)
    restored = LengthNormalizedBeamSampler.from_config(sampler.get_config())
    assert (restored.num_beams, restored.length_penalty) == (64, length_penalty)


def test_bad_configurations_and_calls_are_rejected():
    backbone = TRIPSBackbone(**MICRO)
    with pytest.raises(ValueError, match="prompt_token_ids"):
        TRIPSCaptioner(backbone, prompt_token_ids=(1, 500))
    with pytest.raises(ValueError, match="must divide the text width"):
        TRIPSCaptioner(backbone, prompt_token_ids=PROMPT, end_token_id=END, num_heads=3)
    model = TRIPSCaptioner(backbone, prompt_token_ids=PROMPT, end_token_id=END)
    images = task_features()["images"]
    with pytest.raises(ValueError, match="max_length"):
        model.generate(images, max_length=100)
    with pytest.raises(ValueError, match="sampler"):
        model.generate(images, sampler="nucleus")
    too_long = np.ones((2, MICRO["max_sequence_length"] + 1), "int32")
    with pytest.raises(ValueError, match="do not fit the decoder"):
        model({"images": images[:2], "token_ids": too_long})

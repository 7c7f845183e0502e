import collections
import math

from keras_trips.metrics.caption_tokens import caption_tokens
from keras_trips.metrics.validate_captions import validate_captions

# coco-caption's smoothing: a zero count scores ~0 instead of dividing by 0.
_TINY = 1e-15
_SMALL = 1e-9


def ngram_counts(words, max_order):
    """`Counter` of the n-grams (tuples) of `words` for n = 1..max_order."""
    return collections.Counter(
        tuple(words[i : i + n])
        for n in range(1, max_order + 1)
        for i in range(len(words) - n + 1)
    )


def corpus_bleu(candidates, references, max_order=4):
    """Corpus BLEU-1 to BLEU-`max_order` as coco-caption's `Bleu` computes it.

    Clipped n-gram matches and candidate n-grams are summed over the corpus;
    the brevity penalty compares the candidates' total length with the sum,
    over candidates, of the reference length closest to each (ties to the
    shorter). Counts are smoothed as coco-caption does (`1e-15` over
    `1e-9`), so an order without matches scores about 0.

    Args:
        candidates: list of str, one generated caption per image.
        references: list of lists of str, the reference captions per image.
        max_order: int. The longest n-gram.

    Returns:
        list of floats: BLEU-1 ... BLEU-`max_order`, in [0, 1].

    Example:
    ```python
    corpus_bleu(["the cat sat on a mat"], [["the cat sat on the mat"]])[3]
    # (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = 0.537
    ```
    """
    validate_captions(candidates, references)
    matches, totals = [0] * max_order, [0] * max_order
    candidate_length = reference_length = 0
    for candidate, refs in zip(candidates, references, strict=True):
        words = caption_tokens(candidate)
        ref_words = [caption_tokens(r) for r in refs]
        max_ref_counts = collections.Counter()
        for ref in ref_words:
            max_ref_counts |= ngram_counts(ref, max_order)
        for ngram, count in ngram_counts(words, max_order).items():
            matches[len(ngram) - 1] += min(count, max_ref_counts[ngram])
        for n in range(max_order):
            totals[n] += max(len(words) - n, 0)
        candidate_length += len(words)
        reference_length += _closest_length([len(r) for r in ref_words], len(words))
    scores, product = [], 1.0
    for n in range(max_order):
        product *= (matches[n] + _TINY) / (totals[n] + _SMALL)
        scores.append(product ** (1.0 / (n + 1)))
    ratio = (candidate_length + _TINY) / (reference_length + _SMALL)
    if ratio < 1:
        scores = [score * math.exp(1 - 1 / ratio) for score in scores]
    return scores


def _closest_length(reference_lengths, length):
    return min((abs(r - length), r) for r in reference_lengths)[1]

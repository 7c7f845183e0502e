import collections

import numpy as np

from keras_trips.metrics.caption_tokens import caption_tokens
from keras_trips.metrics.corpus_bleu import ngram_counts
from keras_trips.metrics.validate_captions import validate_captions


def corpus_cider(candidates, references, max_order=4, sigma=6.0):
    """CIDEr-D as coco-caption's `Cider` computes it.

    Each caption becomes one TF-IDF vector per n-gram order (n = 1..4), the
    document frequency of an n-gram being the number of images whose
    references contain it, over the references of this corpus. The score of
    a candidate against a reference is, per order, the cosine similarity
    with the candidate's weights clipped at the reference's, times a
    Gaussian length penalty `exp(-delta^2 / (2 sigma^2))`; the mean over the
    orders, averaged over the references and times 10, is the image's
    CIDEr-D. (As in coco-caption, `delta` compares bigram counts, the same as
    word counts for non-empty captions.)

    Args:
        candidates: list of str, one generated caption per image.
        references: list of lists of str, the reference captions per image.
        max_order: int. The longest n-gram.
        sigma: float. Width of the length penalty.

    Returns:
        `(score, per_image)`: the corpus CIDEr-D (the mean over images) and a
        numpy array of the images' scores.

    Example:
    ```python
    corpus_cider(["a b c e", "w x y z"], [["a b c d"], ["w x y z"]])[0]
    # (10 * (3/4 + 2/3 + 1/2 + 0) / 4 + 10) / 2 = 7.396
    ```
    """
    validate_captions(candidates, references)
    candidate_counts = [ngram_counts(caption_tokens(c), max_order) for c in candidates]
    reference_counts = [
        [ngram_counts(caption_tokens(r), max_order) for r in refs]
        for refs in references
    ]
    document_frequency = collections.Counter()
    for refs in reference_counts:
        document_frequency.update({ngram for ref in refs for ngram in ref})
    log_corpus_size = np.log(float(len(references)))

    def vectors(counts):
        weights = [{} for _ in range(max_order)]
        norms = np.zeros(max_order)
        for ngram, term_frequency in counts.items():
            order = len(ngram) - 1
            idf = log_corpus_size - np.log(max(1.0, document_frequency[ngram]))
            weights[order][ngram] = term_frequency * idf
            norms[order] += weights[order][ngram] ** 2
        bigrams = sum(c for ngram, c in counts.items() if len(ngram) == 2)
        return weights, np.sqrt(norms), bigrams

    def similarity(candidate, reference):
        (weights, norms, length), (ref_weights, ref_norms, ref_length) = (
            candidate,
            reference,
        )
        values = np.zeros(max_order)
        for order in range(max_order):
            for ngram, weight in weights[order].items():
                ref_weight = ref_weights[order].get(ngram, 0.0)
                values[order] += min(weight, ref_weight) * ref_weight
            if norms[order] != 0 and ref_norms[order] != 0:
                values[order] /= norms[order] * ref_norms[order]
        delta = float(length - ref_length)
        return values * np.exp(-(delta**2) / (2 * sigma**2))

    scores = []
    for counts, refs in zip(candidate_counts, reference_counts, strict=True):
        candidate = vectors(counts)
        total = sum(similarity(candidate, vectors(ref)) for ref in refs)
        scores.append(10.0 * np.mean(total) / len(refs))
    scores = np.array(scores)
    return float(np.mean(scores)), scores

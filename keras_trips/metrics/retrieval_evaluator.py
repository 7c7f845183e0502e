import numpy as np

from keras_trips.metrics.retrieval_recall import retrieval_recall
from keras_trips.utils.compiled_function import CompiledFunction


class RetrievalEvaluator:
    """Image-text retrieval as in ALBEF: ITC shortlist, ITM re-ranking.

    1. Every image is encoded once without text (guidance falls back to
       "image"), every text once; their ITC embeddings give a similarity
       matrix.
    2. For each image its `k_test` most similar texts, and for each text its
       `k_test` most similar images, are re-scored on a text-guided vision
       pass of the pair: the ITM head's "match" logit plus the ITC
       similarity, as ALBEF's evaluation scores them (the similarity breaks
       the ties of a weak ITM head). Candidates off the shortlist rank below
       it.
    3. Recall@1/5/10 in both directions (`retrieval_recall`), after the
       re-ranking and, prefixed `itc_`, by the ITC similarities alone.

    N images and M texts cost N + (N + M) * k_test vision passes, not N * M.

    Args:
        pretrainer: a `TRIPSPretrainer` (its backbone, ITC projections and
            ITM head are used).
        k_test: int. Shortlist length.
        batch_size: int. Pairs per ITM batch.

    Example:
    ```python
    evaluator = RetrievalEvaluator(pretrainer, k_test=16)
    evaluator.evaluate(images, token_ids, padding_mask, text_images)
    # {"image_to_text_r1": ..., ..., "mean_recall": ..., "itc_image_to_text_r1":
    #  ..., "itc_mean_recall": ...}
    ```
    """

    def __init__(self, pretrainer, k_test=16, batch_size=64):
        if k_test < 1:
            raise ValueError(f"`k_test` must be positive. Received: {k_test}")
        self.pretrainer = pretrainer
        self.k_test = k_test
        self.batch_size = batch_size

    def itc_similarity(self, images, token_ids, padding_mask):
        """`(num_images, num_texts)` ITC similarities, and the text states
        (reused for the ITM pass)."""
        # No text embedding: the vision encoder selects by the image [CLS].
        embed_images = CompiledFunction(
            self.pretrainer,
            lambda model, x: model.embed_image(
                model.backbone.encode_image(x["images"])
            ),
        )
        image_embeddings = embed_images.predict_in_batches(
            {"images": images}, self.batch_size
        )
        embed_texts = CompiledFunction(self.pretrainer, _text_states_and_embeddings)
        texts = embed_texts.predict_in_batches(
            {"token_ids": token_ids, "padding_mask": padding_mask}, self.batch_size
        )
        return image_embeddings @ texts["embeddings"].T, texts["states"]

    def itm_scores(self, images, text_states, padding_mask, pairs):
        """The ITM head's "match" logits (`TRIPSPretrainer.match_probability`)
        of `(image index, text index)` pairs, each image encoded under its
        text's guidance."""
        match = CompiledFunction(self.pretrainer, _guided_match_logit)
        image_index, text_index = pairs[:, 0], pairs[:, 1]
        return match.predict_in_batches(
            {
                "images": images[image_index],
                "text_states": text_states[text_index],
                "padding_mask": padding_mask[text_index],
            },
            self.batch_size,
        )

    def evaluate(self, images, token_ids, padding_mask, text_images, ks=(1, 5, 10)):
        """Recall@K of the gallery (see `retrieval_recall`).

        Args:
            images: `(N, H, W, 3)` normalised images, each once.
            token_ids, padding_mask: `(M, L)` the texts.
            text_images: `(M,)` the image of each text.
            ks: the K values.
        """
        images, padding_mask = np.asarray(images), np.asarray(padding_mask)
        similarity, text_states = self.itc_similarity(images, token_ids, padding_mask)
        num_images, num_texts = similarity.shape
        image_to_text = np.full(similarity.shape, -np.inf, "float32")
        text_to_image = np.full(similarity.T.shape, -np.inf, "float32")
        k_texts = min(self.k_test, num_texts)
        k_images = min(self.k_test, num_images)
        top_texts = np.argsort(-similarity, axis=1)[:, :k_texts]
        top_images = np.argsort(-similarity.T, axis=1)[:, :k_images]
        pairs = np.concatenate(
            [
                np.stack(
                    [np.repeat(np.arange(num_images), k_texts), top_texts.ravel()], 1
                ),
                np.stack(
                    [top_images.ravel(), np.repeat(np.arange(num_texts), k_images)], 1
                ),
            ]
        )
        # A pair shortlisted in both directions is scored once.
        pairs, where = np.unique(pairs, axis=0, return_inverse=True)
        scores = self.itm_scores(images, text_states, padding_mask, pairs)
        scores = (scores + similarity[pairs[:, 0], pairs[:, 1]])[where.ravel()]
        first = num_images * k_texts
        image_to_text[np.repeat(np.arange(num_images), k_texts), top_texts.ravel()] = (
            scores[:first]
        )
        text_to_image[np.repeat(np.arange(num_texts), k_images), top_images.ravel()] = (
            scores[first:]
        )
        recalls = retrieval_recall(image_to_text, text_to_image, text_images, ks)
        itc_recalls = retrieval_recall(similarity, similarity.T, text_images, ks)
        return {**recalls, **{f"itc_{k}": v for k, v in itc_recalls.items()}}


def _text_states_and_embeddings(pretrainer, inputs):
    states = pretrainer.backbone.encode_text(
        inputs["token_ids"], inputs["padding_mask"]
    )
    return {
        "states": states,
        "embeddings": pretrainer.embed_text(states, inputs["padding_mask"]),
    }


def _guided_match_logit(pretrainer, inputs):
    texts = inputs["text_states"]
    tokens = pretrainer.backbone.encode_image(inputs["images"], texts[:, 0])
    _, logits = pretrainer.match_probability(
        texts, tokens, inputs["padding_mask"], return_logits=True
    )
    return logits[:, 1]

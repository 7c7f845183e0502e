"""Recall@K of image-text retrieval in both directions."""

import numpy as np


def retrieval_recall(image_to_text, text_to_image, text_images, ks=(1, 5, 10)):
    """Recall@K for image->text and text->image retrieval.

    An image is retrieved correctly at K when any of its captions is among
    its K best texts; a text when its image is among its K best images. A
    wrong candidate that ties with the correct one ranks above it, so a
    model that scores everything alike gets no credit.

    Args:
        image_to_text: `(num_images, num_texts)` scores of each image's
            texts (higher is better).
        text_to_image: `(num_texts, num_images)` scores of each text's
            images. The two may differ (re-ranked by ITM in each direction).
        text_images: `(num_texts,)` the index of each text's image.
        ks: the K values.

    Returns:
        dict: `"image_to_text_r{K}"`, `"text_to_image_r{K}"` (fractions in
        [0, 1]) and `"mean_recall"`, their mean.

    Example:
    ```python
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    retrieval_recall(scores, scores.T, [0, 1], ks=(1,))
    # {"image_to_text_r1": 1.0, "text_to_image_r1": 1.0, "mean_recall": 1.0}
    ```
    """
    image_to_text = np.asarray(image_to_text)
    text_to_image = np.asarray(text_to_image)
    text_images = np.asarray(text_images)
    num_images, num_texts = image_to_text.shape
    if text_to_image.shape != (num_texts, num_images):
        raise ValueError(
            f"`text_to_image` must have shape {(num_texts, num_images)}. "
            f"Received: {text_to_image.shape}"
        )
    # Rank of the best correct answer: how many wrong candidates score as
    # high or higher (a tie counts against it, so equal scores earn nothing).
    own_text = text_images[None, :] == np.arange(num_images)[:, None]
    best_own_text = np.max(np.where(own_text, image_to_text, -np.inf), axis=1)
    image_rank = np.sum((image_to_text >= best_own_text[:, None]) & ~own_text, axis=1)
    own_image = np.arange(num_images)[None, :] == text_images[:, None]
    own_image_score = text_to_image[np.arange(num_texts), text_images]
    text_rank = np.sum((text_to_image >= own_image_score[:, None]) & ~own_image, axis=1)
    results = {}
    for k in ks:
        results[f"image_to_text_r{k}"] = float(np.mean(image_rank < k))
    for k in ks:
        results[f"text_to_image_r{k}"] = float(np.mean(text_rank < k))
    results["mean_recall"] = float(np.mean(list(results.values())))
    return results

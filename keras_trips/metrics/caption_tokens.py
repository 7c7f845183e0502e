import re

# What coco-caption's PTB tokenizer drops: punctuation tokens.
_PUNCTUATION = re.compile(r"[^\w\s]")


def caption_tokens(caption):
    """Lower-cased words of a caption without punctuation, as coco-caption
    tokenises before BLEU and CIDEr (its PTB tokenizer needs Java).

    Example:
    ```python
    caption_tokens("A dog, left of a Cat.")  # ["a", "dog", "left", "of", "a", "cat"]
    ```
    """
    if not isinstance(caption, str):
        raise ValueError(f"A caption must be a string. Received: {caption!r}")
    return _PUNCTUATION.sub(" ", caption.lower()).split()

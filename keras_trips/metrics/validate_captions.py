def validate_captions(candidates, references):
    """Checks the inputs of the caption metrics: one candidate string and a
    non-empty list of reference strings per image."""
    if len(candidates) != len(references):
        raise ValueError(
            f"Got {len(candidates)} candidates for {len(references)} reference "
            "lists: one generated caption per image is needed."
        )
    if not candidates:
        raise ValueError("No captions to score: `candidates` is empty.")
    for index, (candidate, refs) in enumerate(zip(candidates, references)):
        if not isinstance(candidate, str):
            raise ValueError(
                f"Candidate {index} must be a string. Received: {candidate!r}"
            )
        if isinstance(refs, str) or not refs:
            raise ValueError(
                f"`references[{index}]` must be a non-empty list of captions. "
                f"Received: {refs!r}"
            )
        if not all(isinstance(r, str) and r.strip() for r in refs):
            raise ValueError(
                f"`references[{index}]` holds an empty or non-string caption: {refs!r}"
            )

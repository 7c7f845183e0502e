import keras

# Variables that AdamW's weight decay leaves alone, by name.
NO_WEIGHT_DECAY = ["bias", "gamma", "beta", "temperature", "class_token", "position"]


def default_optimizer(
    learning_rate,
    weight_decay,
    warmup_steps=0,
    total_steps=None,
    gradient_accumulation_steps=None,
    learning_rate_floor=0.0,
):
    """AdamW as in ALBEF: weight decay on every weight but norms, biases, the
    temperature and position embeddings; the learning rate warmed up
    linearly for `warmup_steps`, then cosine-decayed to
    `learning_rate_floor` times its peak (ALBEF: 0) at `total_steps`
    (constant without `total_steps`).

    Example:
    ```python
    model.compile(optimizer=default_optimizer(1e-4, 0.02, total_steps=1000))
    ```
    """
    if not 0.0 <= learning_rate_floor < 1.0:
        raise ValueError(
            "`learning_rate_floor` is a fraction of the peak learning rate, in "
            f"[0, 1). Received: {learning_rate_floor}"
        )
    schedule = learning_rate
    if total_steps is not None:
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else learning_rate,
            decay_steps=max(1, total_steps - warmup_steps),
            warmup_target=learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
            alpha=learning_rate_floor,
        )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
    return optimizer

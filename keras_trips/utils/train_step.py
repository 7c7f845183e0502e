"""Building a Keras train function that traces anew."""

import contextlib
import functools


@contextlib.contextmanager
def distinct_train_step(model):
    """While inside, `model.train_step` is a function object of its own.

    JAX caches a traced function by the function it jits, and Keras' JAX
    trainer jits `model.train_step`: a bound method, equal to every other
    bound `train_step` of the same model. A train function built after a
    change of Python state (a keep rate, the objectives trained) would
    reuse the trace of the first one. Build it inside this context.

    Example:
    ```python
    encoder.set_keep_rate(0.5)
    model.train_function = None
    with distinct_train_step(model):
        model.make_train_function()
    ```
    """
    # Nested use (a scheduler rebuilding a model's own split train
    # function) restores the outer context's function on exit.
    outer = vars(model).get("train_step")
    model.train_step = functools.partial(type(model).train_step, model)
    try:
        yield
    finally:
        if outer is None:
            del model.train_step
        else:
            model.train_step = outer

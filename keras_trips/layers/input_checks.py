"""Static checks of the tensors given to the public layers and models.

They read shapes and dtypes only, in Python, so they cost nothing inside a
compiled function; a dimension unknown at trace time (a dynamic batch) is
not compared.
"""

import keras

_KINDS = {
    "float": ("floating point", lambda dtype: "float" in dtype),
    "int": ("integers", lambda dtype: "int" in dtype),
    "mask": ("bool or integers", lambda dtype: dtype == "bool" or "int" in dtype),
}


def check_tensor(x, name, shape, kind):
    """Raise a `ValueError` naming `name` unless `x` has `len(shape)` axes,
    each of the size in `shape` where that is an int (a str names a free
    axis, e.g. "batch"), and a dtype of `kind` (see `check_dtype`).
    """
    actual = tuple(x.shape)
    if len(actual) != len(shape) or any(
        isinstance(size, int) and dim is not None and dim != size
        for dim, size in zip(actual, shape, strict=True)
    ):
        expected = ", ".join(str(size) for size in shape)
        raise ValueError(
            f"`{name}` must have shape ({expected}), but received shape {actual}."
        )
    check_dtype(x, name, kind)


def check_dtype(x, name, kind):
    """Raise a `ValueError` naming `name` unless `x`'s dtype is of `kind`:
    "float", "int" or "mask" (bool or integers)."""
    description, accepts = _KINDS[kind]
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not accepts(dtype):
        raise ValueError(f"`{name}` must be {description}, but received dtype {dtype}.")


def check_batch_sizes(**tensors):
    """Raise a `ValueError` naming the arguments when two of `tensors`
    (tensors or shapes; None ones are ignored) have different known sizes
    in their first axis."""
    shapes = {
        name: tuple(getattr(x, "shape", x))
        for name, x in tensors.items()
        if x is not None
    }
    sizes = {
        name: shape[0]
        for name, shape in shapes.items()
        if shape and shape[0] is not None
    }
    if len(set(sizes.values())) > 1:
        described = ", ".join(f"`{name}` {size}" for name, size in sizes.items())
        raise ValueError(
            f"{' and '.join(f'`{name}`' for name in sizes)} must have the same "
            f"batch size, but received {described}."
        )


def check_keys(inputs, name, required, optional=()):
    """Raise a `ValueError` naming `name` unless the dict `inputs` holds the
    `required` keys and otherwise only `optional` ones."""
    if not isinstance(inputs, dict):
        raise ValueError(f"`{name}` must be a dict. Received: {type(inputs).__name__}")
    missing = [key for key in required if key not in inputs]
    unknown = sorted(set(inputs) - set(required) - set(optional))
    if missing or unknown:
        raise ValueError(
            f"`{name}` must hold {list(required)} (optionally {list(optional)}); "
            f"missing {missing}, unknown {unknown}."
        )

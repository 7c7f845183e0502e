"""Reading checkpoints and checking their tensors, shared by the converters.

A converter gathers `(variable, value)` pairs with the helpers here, each one
checked against its target variable's shape, and assigns them only once all
are checked, so a checkpoint that does not fit leaves the model unchanged.
"""

import json
import math
import os

import numpy as np
from safetensors import safe_open

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class TensorSource:
    """Named tensors to convert from; `tensor` raises on a missing name.

    Args:
        tensors: dict mapping names to numpy arrays.
        location: str. Where the tensors come from, for error messages.

    Example:

    ```python
    source = TensorSource({"kernel": np.zeros((2, 3))}, location="a model")
    source.tensor("kernel").shape  # (2, 3)
    ```
    """

    def __init__(self, tensors, location):
        self._tensors = tensors
        self.location = location

    @property
    def names(self):
        return sorted(self._tensors)

    def tensor(self, name):
        """The tensor `name` as a numpy array."""
        if name not in self._tensors:
            raise ValueError(f"Checkpoint {self.location} is missing tensor '{name}'.")
        return np.asarray(self._tensors[name])


class SafetensorsCheckpoint(TensorSource):
    """A Hugging Face checkpoint folder (`config.json`, `model.safetensors`).

    Tensors are read lazily. Subclasses set `family` (used in messages) and
    `model_types` (the accepted `config.json` model types) and may override
    `canonical_name` to strip task-head prefixes or rename legacy tensors.

    Args:
        checkpoint_dir: path to a folder holding `config.json` and
            `model.safetensors`.

    Attributes:
        config: dict, the parsed `config.json`.
        names: sorted list of the canonical tensor names.

    Example:

    ```python
    class GPT2Checkpoint(SafetensorsCheckpoint):
        family, model_types = "GPT-2", ("gpt2",)

    GPT2Checkpoint("path/to/gpt2").tensor("wte.weight").shape
    ```
    """

    family = "Hugging Face"
    model_types = ()

    def __init__(self, checkpoint_dir):
        checkpoint_dir = os.fspath(checkpoint_dir)
        if not os.path.isdir(checkpoint_dir):
            raise FileNotFoundError(
                f"{self.family} checkpoint folder {checkpoint_dir} does not exist."
            )
        config_path = os.path.join(checkpoint_dir, CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(
                f"{self.family} config file {config_path} does not exist."
            )
        with open(config_path, encoding="utf-8") as file:
            self.config = json.load(file)
        self.model_type = self.config.get("model_type")
        if self.model_type not in self.model_types:
            raise ValueError(
                f"{config_path} has model_type {self.model_type!r}, which is not "
                f"a {self.family} architecture; supported model types: "
                f"{self.model_types}."
            )
        weights_path = os.path.join(checkpoint_dir, WEIGHTS_FILE)
        if not os.path.isfile(weights_path):
            hint = ""
            if os.path.isfile(os.path.join(checkpoint_dir, "pytorch_model.bin")):
                hint = (
                    " pytorch_model.bin is not read (it needs torch); re-save "
                    "the model with `save_pretrained(path, "
                    "safe_serialization=True)`."
                )
            raise FileNotFoundError(
                f"{self.family} weights file {weights_path} does not exist.{hint}"
            )
        self.weights_path = weights_path
        with safe_open(weights_path, framework="numpy") as weights:
            stored_names = weights.keys()
        self._stored_names = {self.canonical_name(name): name for name in stored_names}
        super().__init__(self._stored_names, location=weights_path)

    def canonical_name(self, name):
        """The name converters use for the stored tensor `name`."""
        return name

    def tensor(self, name):
        """The tensor `name` (canonical name) as a numpy array."""
        if name not in self._stored_names:
            return super().tensor(name)
        with safe_open(self.weights_path, framework="numpy") as weights:
            return weights.get_tensor(self._stored_names[name])


def checked(source, name, variable, expected=None):
    """Tensor `name` of `source`, after checking its shape is `expected` (by
    default the variable's shape)."""
    tensor = source.tensor(name)
    expected = tuple(variable.shape) if expected is None else tuple(expected)
    if tuple(tensor.shape) != expected:
        raise ValueError(
            f"Checkpoint tensor '{name}' has shape {tuple(tensor.shape)}, but "
            f"{variable.path} of shape {tuple(variable.shape)} needs {expected}."
        )
    return tensor


def linear_kernel(source, name, variable, input_axes=1):
    """A torch Linear weight `[out, in]` as a Keras kernel whose first
    `input_axes` axes are the input and the rest the output."""
    shape = tuple(variable.shape)
    expected = (math.prod(shape[input_axes:]), math.prod(shape[:input_axes]))
    weight = checked(source, name, variable, expected)
    return variable, np.reshape(weight.T, shape)


def reshaped(source, name, variable, shape=None):
    """A tensor of `shape` (by default the variable's, flattened: a bias, a
    LayerNorm scale) reshaped to the variable's shape."""
    target = tuple(variable.shape)
    value = checked(source, name, variable, shape or (math.prod(target),))
    return variable, np.reshape(value, target)


def table(source, name, variable):
    """A tensor stored exactly as the variable is."""
    return variable, checked(source, name, variable)


def assign_all(assignments):
    for variable, value in assignments:
        variable.assign(value)

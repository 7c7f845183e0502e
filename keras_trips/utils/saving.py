"""Saving and loading: errors that name the file and the cause, and config
entries that keep quantized layers quantized."""

import os
import zipfile
import zlib

import keras


def load_model(path, **kwargs):
    """`keras.saving.load_model(path, **kwargs)`, checking the file first.

    Keras reports a truncated or corrupt `.keras` file as "File not found";
    this says which file is wrong and how: missing, not a zip archive
    (truncated, still being written, or another kind of file), missing its
    config, or failing a member's checksum. Errors while Keras rebuilds the
    model are re-raised as `ValueError`s that name the file.

    Args:
        path: str. A `.keras` file (or anything `keras.saving.load_model`
            reads), or a preset directory (`save_to_preset`): its task (the
            pretrainer) when it holds one, else its backbone.
        **kwargs: passed to `keras.saving.load_model` (`compile`,
            `custom_objects`, `safe_mode`).

    Example:
    ```python
    pretrainer = keras_trips.utils.load_model("trips.keras", compile=False)
    ```
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model file {path} does not exist.")
    from keras_trips.models import preset_directory

    if preset_directory.is_preset_directory(path):
        # The task when the preset holds one, else the backbone.
        task = preset_directory.load_preset_task(path)
        return task or preset_directory.load_preset_backbone(path)
    if path.endswith(".keras"):
        _check_keras_archive(path)
    try:
        return keras.saving.load_model(path, **kwargs)
    except Exception as error:
        raise ValueError(
            f"Could not load the model {path}: {type(error).__name__}: {error}"
        ) from error


def _check_keras_archive(path):
    size = os.path.getsize(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"Model file {path} ({size} bytes) is not a valid .keras file: it "
            "is not a zip archive (truncated, still being written, or not a "
            "Keras model)."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise ValueError(
                    f"Model file {path} is not a valid .keras file: the archive "
                    "has no config.json."
                )
            damaged = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError) as error:
        raise ValueError(
            f"Model file {path} is a corrupt .keras file: {error}"
        ) from None
    if damaged is not None:
        raise ValueError(
            f"Model file {path} is a corrupt .keras file: its member {damaged} "
            "fails its checksum."
        )


def dtype_policy_config(model, policy=None):
    """The `dtype` entry of a config, quantized layers included.

    A model that builds its own sublayers gives them its float policy, so a
    loaded copy of a quantized model would build float layers that cannot
    take the saved quantized weights. As keras-hub's `Backbone` does, the
    entry becomes a `DTypePolicyMap` from each quantized layer's path to its
    policy: the loaded model's layers, built under the same paths, find
    their quantized policies there.

    Args:
        model: a built `keras.Model` whose layers pass its `dtype_policy` to
            the layers they build (or, for a task, its backbone's).
        policy: the policy the map defaults to (and the entry when nothing
            is quantized); by default `model.dtype_policy`.
    """
    policy = model.dtype_policy if policy is None else policy
    if not isinstance(policy, keras.dtype_policies.DTypePolicyMap):
        quantized = {
            layer.path: layer.dtype_policy
            for layer in model._flatten_layers()
            if layer.quantization_mode is not None
        }
        if quantized:
            # By name: the map keeps its default as given, and a policy object
            # would serialize with a shared-object id that loading adds.
            policy = keras.dtype_policies.DTypePolicyMap(policy.name, quantized)
    return keras.dtype_policies.serialize(policy)


def serialize_backbone(task):
    """`task.backbone` serialized for `task`'s config.

    A task builds its heads with its backbone's dtype policy, so the
    backbone's `dtype` entry maps the task's quantized layers, heads
    included (`dtype_policy_config`).
    """
    config = keras.saving.serialize_keras_object(task.backbone)
    config["config"]["dtype"] = dtype_policy_config(task, task.backbone.dtype_policy)
    return config

"""Preset directories: a trained model's config, weights and vocabulary.

The layout is keras-hub's, so a preset reads the same to a keras-hub user:

    config.json            the backbone's Keras config
    model.weights.h5       the backbone's weights
    task.json              a task's (e.g. the pretrainer's) config, if saved
    task.weights.h5        its weights, the backbone's among them
    preprocessor.json      the text preprocessor's config, if saved
    image_converter.json   the image converter's config (raw pixels in)
    assets/tokenizer/vocabulary.txt
    metadata.json          versions, parameter count, where the weights came from
"""

import datetime
import json
import os
import shutil

import keras

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
TASK_CONFIG_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
PREPROCESSOR_FILE = "preprocessor.json"
METADATA_FILE = "metadata.json"
VOCABULARY_FILE = os.path.join("assets", "tokenizer", "vocabulary.txt")


def save_preset(backbone, directory, task=None, preprocessor=None):
    """Writes `backbone` (and `task`, a model holding it) as a preset.

    Args:
        backbone: a built `TRIPSBackbone` (its `image_shape` sizes the
            image converter the preset holds).
        directory: str. Created if missing; files there are replaced.
        task: None, or a model built on `backbone` (a `TRIPSPretrainer`).
        preprocessor: None, or the `TRIPSTextPreprocessor` the model was
            trained with (its config is kept, its vocabulary copied). The
            default vocabulary is copied without one.
    """
    from keras_trips.data.vocabulary import default_vocabulary_path
    from keras_trips.models.trips_image_converter import TRIPSImageConverter

    os.makedirs(
        os.path.join(directory, os.path.dirname(VOCABULARY_FILE)), exist_ok=True
    )
    _write_json(directory, CONFIG_FILE, keras.saving.serialize_keras_object(backbone))
    backbone.save_weights(os.path.join(directory, WEIGHTS_FILE))
    if task is not None:
        _write_json(
            directory, TASK_CONFIG_FILE, keras.saving.serialize_keras_object(task)
        )
        task.save_weights(os.path.join(directory, TASK_WEIGHTS_FILE))
    TRIPSImageConverter(image_size=backbone.image_shape[:2]).save_to_preset(directory)
    vocabulary = default_vocabulary_path()
    if preprocessor is not None:
        config = preprocessor.get_config()
        # The copy in the preset replaces the path of the training machine.
        vocabulary = config.pop("vocabulary") or vocabulary
        _write_json(directory, PREPROCESSOR_FILE, config)
    if isinstance(vocabulary, (list, tuple)):
        with open(os.path.join(directory, VOCABULARY_FILE), "w") as file:
            file.write("\n".join(vocabulary) + "\n")
    else:
        shutil.copyfile(vocabulary, os.path.join(directory, VOCABULARY_FILE))
    _write_json(
        directory,
        METADATA_FILE,
        {
            "keras_version": keras.__version__,
            "keras_trips_version": _version(),
            "parameter_count": (task or backbone).count_params(),
            "weights": "trained",
            "date_saved": datetime.datetime.now().isoformat(timespec="seconds"),
        },
    )


def is_preset_directory(path):
    """Whether `path` is a folder holding a preset's `config.json`."""
    return os.path.isfile(os.path.join(os.fspath(path), CONFIG_FILE))


def load_preset_backbone(directory, expected_class=None):
    """The backbone of a preset directory, with its weights; with
    `expected_class`, checked to be one."""
    return _load(directory, CONFIG_FILE, WEIGHTS_FILE, expected_class)


def has_task(directory):
    """Whether a preset directory holds a task (`task.json`)."""
    return os.path.isfile(os.path.join(directory, TASK_CONFIG_FILE))


def load_preset_task(directory, expected_class=None):
    """The task (`task.json`) of a preset directory, or None if it holds a
    backbone only; with `expected_class`, checked to be one."""
    if not has_task(directory):
        return None
    return _load(directory, TASK_CONFIG_FILE, TASK_WEIGHTS_FILE, expected_class)


def check_no_overrides(directory, overrides):
    """A trained preset is loaded as saved: arguments for it are an error."""
    if overrides:
        raise ValueError(
            f"The preset {directory} holds a trained model; its arguments "
            f"cannot be overridden. Received: {sorted(overrides)}"
        )


def preset_preprocessor_config(directory):
    """The text preprocessor's arguments of a preset: its saved config (if
    any) with `vocabulary` set to the preset's copy."""
    vocabulary = os.path.join(directory, VOCABULARY_FILE)
    if not os.path.isfile(vocabulary):
        raise FileNotFoundError(
            f"The preset {directory} has no vocabulary ({VOCABULARY_FILE})."
        )
    config = {}
    path = os.path.join(directory, PREPROCESSOR_FILE)
    if os.path.isfile(path):
        config = _read_json(path)
        for name in ("name", "trainable", "dtype"):
            config.pop(name, None)
    return {**config, "vocabulary": vocabulary}


def _load(directory, config_file, weights_file, expected_class):
    for name in (config_file, weights_file):
        if not os.path.isfile(os.path.join(directory, name)):
            raise FileNotFoundError(
                f"The preset {directory} is incomplete: {name} is missing."
            )
    model = keras.saving.deserialize_keras_object(
        _read_json(os.path.join(directory, config_file))
    )
    if expected_class is not None and not isinstance(model, expected_class):
        raise ValueError(
            f"The preset {directory} holds a {type(model).__name__} in "
            f"{config_file}, not a {expected_class.__name__}."
        )
    weights = os.path.join(directory, weights_file)
    try:
        model.load_weights(weights)
    except Exception as error:
        raise ValueError(
            f"Could not load the weights {weights} into the model of "
            f"{config_file}: {type(error).__name__}: {error}"
        ) from error
    return model


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a valid JSON file: {error}") from None


def _write_json(directory, name, content):
    with open(os.path.join(directory, name), "w", encoding="utf-8") as file:
        json.dump(content, file, indent=2)


def _version():
    from importlib import metadata

    try:
        return metadata.version("keras_trips")
    except metadata.PackageNotFoundError:
        return None

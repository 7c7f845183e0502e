"""`keras_trips.utils.load_model`: a broken model file is named with its cause."""

import zipfile

import keras
import numpy as np
import pytest

from keras_trips.utils import load_model


@pytest.fixture
def saved(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "model.keras"
    model.save(path)
    return model, path


def test_a_good_file_loads_as_keras_loads_it(saved):
    model, path = saved
    x = np.ones((1, 3), "float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(load_model(path)(x)),
        keras.ops.convert_to_numpy(model(x)),
    )


def test_truncated_file_is_named_with_its_cause(saved):
    _, path = saved
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"model\.keras \(\d+ bytes\) is not a valid"):
        load_model(path)


def test_archive_without_config_or_missing_file(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    with pytest.raises(ValueError, match=r"other\.keras .* has no config\.json"):
        load_model(tmp_path / "other.keras")
    with pytest.raises(FileNotFoundError, match=r"absent\.keras does not exist"):
        load_model(tmp_path / "absent.keras")


def test_damaged_member_fails_its_checksum(saved, tmp_path):
    _, path = saved
    damaged = tmp_path / "damaged.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(damaged, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info.filename))
    content = bytearray(damaged.read_bytes())
    with zipfile.ZipFile(damaged) as archive:
        info = archive.getinfo("config.json")
    # Flip one byte of config.json's stored data, after its local header.
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 5
    content[offset] ^= 0xFF
    damaged.write_bytes(bytes(content))
    with pytest.raises(
        ValueError, match=r"damaged\.keras is a corrupt .* config\.json"
    ):
        load_model(damaged)

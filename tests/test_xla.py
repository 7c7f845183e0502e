import os

import keras

from keras_trips.utils import xla

OTHER_FLAG = "--xla_force_host_platform_device_count=2"


def test_tensorflow_gets_the_cpu_flag_once_beside_the_users_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", OTHER_FLAG)
    flags = xla.configure_tensorflow_xla()
    if keras.backend.backend() == "tensorflow":
        assert flags == f"{OTHER_FLAG} --xla_cpu_use_fusion_emitters=false"
    else:
        assert flags == OTHER_FLAG
    assert os.environ["XLA_FLAGS"] == flags
    assert xla.configure_tensorflow_xla() == flags


def test_the_users_own_setting_of_the_flag_wins(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    assert xla.configure_tensorflow_xla() == "--xla_cpu_use_fusion_emitters=true"

import os

# JAX compiles every eager op for its shapes; for tests, compile fast and keep
# the compiled ops across runs. Set before keras imports jax.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.expanduser("~"), ".cache", "keras_trips", "jax_test_cache"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# pytest captures stderr itself: the recipes loaded in tests leave it alone
# (tests/test_native_logs.py runs the filter in a process of its own).
os.environ.setdefault("KERAS_TRIPS_NATIVE_LOGS", "1")

import keras
import numpy as np
import pytest
from backend_utils import configure_tensorflow_for_tests

if keras.backend.backend() == "torch":
    import torch

    # The test models are tiny: threads cost more in sync than they save.
    torch.set_num_threads(1)
if keras.backend.backend() == "tensorflow":
    configure_tensorflow_for_tests()


@pytest.fixture(autouse=True)
def fixed_seed():
    keras.utils.set_random_seed(1337)
    np.random.seed(1337)
    yield


@pytest.fixture(scope="session")
def scenes_cache(tmp_path_factory):
    """Points the recipes at one tiny generated scenes dataset, shared by the
    tests (and the per-backend sessions) that train on it."""
    cache = os.environ.get("KERAS_TRIPS_TEST_CACHE") or str(
        tmp_path_factory.getbasetemp().parent / "keras_trips_cache"
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("KERAS_TRIPS_CACHE", cache)
        yield cache


def pytest_collection_modifyitems(items):
    # Under `--dist loadgroup` (`tools/test.sh`, TensorFlow) the tests
    # spread one by one over the workers, which balances them better than
    # whole files; the tests of a module-scoped fixture stay on one worker,
    # which then builds it once.
    for item in items:
        fixtures = item._fixtureinfo.name2fixturedefs.values()
        if any(definitions[-1].scope == "module" for definitions in fixtures):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))

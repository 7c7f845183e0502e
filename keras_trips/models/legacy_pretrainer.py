"""Converts `.keras` pretrainers of the first layout to today's.

The first layout kept the momentum model's layers and queues in the
`TRIPSPretrainer` itself; they now form its `TRIPSMomentumModel`, whose
variables are saved under its own path. Pretrainers without the momentum
model saved the same paths then as now and load as they are.
"""

import io
import json
import zipfile

import h5py

WEIGHTS = "model.weights.h5"
MOMENTUM_MODEL = "layers/trips_momentum_model"
# Where the first layout saved each momentum layer (Keras names a model's
# layers by class, numbered in their order), and where it goes now.
LEGACY_MOMENTUM_LAYERS = {
    "layers/trips_text_encoder": "text_encoder",
    "layers/trips_vision_encoder": "vision_encoder",
    "layers/trips_fusion_encoder": "fusion_encoder",
    "layers/masked_lm_head_1": "mlm_head",
    "layers/dense_3": "vision_projection",
    "layers/dense_4": "text_projection",
}
# The pretrainer's own variables then: the temperature, then the queues and
# their pointer, which the momentum model owns now.
LEGACY_QUEUE_VARIABLES = {"vars/1": "0", "vars/2": "1", "vars/3": "2"}


def convert_legacy_pretrainer(source, destination):
    """Writes `source`, a `.keras` `TRIPSPretrainer` of the first layout, as
    `destination` in today's layout (same configuration, weights, optimizer
    state and sampler state).

    Example:
    ```python
    convert_legacy_pretrainer("old/pretrainer.keras", "pretrainer.keras")
    pretrainer = keras.saving.load_model("pretrainer.keras")
    ```
    """
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    if config.get("class_name") != "TRIPSPretrainer":
        raise ValueError(
            f"{source} holds a {config.get('class_name')}, not a TRIPSPretrainer."
        )
    with (
        h5py.File(io.BytesIO(files[WEIGHTS]), "r") as legacy,
        io.BytesIO() as buffer,
    ):
        if MOMENTUM_MODEL in legacy:
            raise ValueError(f"{source} is saved in today's layout already.")
        with h5py.File(buffer, "w") as converted:
            _copy_converted(legacy, converted)
        files[WEIGHTS] = buffer.getvalue()
    with zipfile.ZipFile(destination, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)


def _copy_converted(legacy, converted):
    converted.attrs.update(legacy.attrs)
    for name in legacy:
        if name not in ("layers", "vars"):
            legacy.copy(legacy[name], converted, name=name)
    for group in ("layers", "vars"):
        for child in legacy.get(group, {}):
            path = f"{group}/{child}"
            if path in LEGACY_MOMENTUM_LAYERS:
                target = f"{MOMENTUM_MODEL}/{LEGACY_MOMENTUM_LAYERS[path]}"
            elif path in LEGACY_QUEUE_VARIABLES:
                target = f"{MOMENTUM_MODEL}/vars/{LEGACY_QUEUE_VARIABLES[path]}"
            else:
                target = path
            parent, _, leaf = target.rpartition("/")
            legacy.copy(legacy[path], converted.require_group(parent), name=leaf)

"""Data parallelism on an existing engine: JAX DataParallel, TF MirroredStrategy.

`--batch-size` is the global batch; each step computes the single-device
losses of it. JAX shards each global batch over the devices and the model
sees it as one array. TensorFlow's MirroredStrategy runs the step once per
replica on its share, and the pretrainer gathers the other shares for the
contrastive and hard negatives and the momentum queues
(`keras_trips.utils.replicas`). The torch backend trains on one device.
"""

import contextlib

import keras


def data_parallel_devices():
    """The devices a data-parallel run spreads over, on this backend.

    JAX: `keras.distribution.list_devices()`. TensorFlow: the GPUs, else the
    logical CPUs (so that several virtual CPUs can stand in for devices).
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_logical_devices(
            "GPU"
        ) or tf.config.list_logical_devices("CPU")
        return [device.name for device in devices]
    return keras.distribution.list_devices()


def distribution_scope(devices):
    """Sets up data parallelism over `devices` (None: one device).

    Returns the context in which to build and compile the model: the
    `MirroredStrategy` scope on TensorFlow, a null context elsewhere (JAX
    takes its distribution globally: `keras.distribution.set_distribution`,
    undone on leaving the context).
    """
    if devices is None:
        return contextlib.nullcontext()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy(devices=devices).scope()
    return _global_distribution(keras.distribution.DataParallel(devices=devices))


@contextlib.contextmanager
def _global_distribution(distribution):
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)

"""Losses over the global batch when each replica holds a share of it.

On one device, and under `keras.distribution` on JAX (one program over the
sharded global batch), the model already sees every pair: each function here
is then the identity. TensorFlow's `MirroredStrategy` runs the train step once
per replica on its share; there these functions gather the other replicas'
rows (gradients flow back to them), so that contrastive negatives and hard
negatives span the global batch and a data-parallel step computes the
single-device losses.
"""

import keras
from keras import ops


def _replica_context():
    """The tf.distribute replica context of a multi-replica step, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def all_gather(x):
    """The global batch of `x` (a tensor or a structure of them): the
    replicas' shares concatenated in order."""
    context = _replica_context()
    if context is None:
        return x
    import tensorflow as tf

    # The gather's gradient is an all-reduce, which takes dense tensors only
    # (rows picked from the gathered batch give sparse ones).
    @tf.custom_gradient
    def dense_gradient(gathered):
        return tf.identity(gathered), tf.convert_to_tensor

    return keras.tree.map_structure(
        lambda rows: dense_gradient(context.all_gather(rows, axis=0)), x
    )


def global_rows(batch_size):
    """Indices of this replica's `batch_size` rows in the global batch."""
    rows = ops.arange(batch_size, dtype="int32")
    context = _replica_context()
    if context is None:
        return rows
    return rows + ops.cast(context.replica_id_in_sync_group, "int32") * batch_size


def global_mean(values, weights=None):
    """This replica's share of the weighted mean over the global batch.

    Scaled so that the replicas' shares average to the global mean, since
    Keras averages the replicas' losses and metric values. A mean over no
    rows (all weights 0) is 0.

    Args:
        values: per-row values of this replica's rows.
        weights: 0/1 weights of the same shape, or None (all rows count).
    """
    values = ops.cast(values, "float32")
    weights = ops.ones_like(values) if weights is None else ops.cast(weights, "float32")
    total = ops.stop_gradient(ops.sum(weights))
    context = _replica_context()
    if context is None:
        return ops.sum(values * weights) / ops.maximum(total, 1.0)
    total = context.all_reduce("sum", total)
    share = ops.sum(values * weights) * context.num_replicas_in_sync
    return share / ops.maximum(total, 1.0)

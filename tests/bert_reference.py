"""A plain-numpy forward pass of a Hugging Face `BertModel` checkpoint.

The reference the converted Keras encoders are checked against: float64,
written from the BERT definition (post-LN, exact GELU, absolute positions,
segment 0), independent of keras-hub and of the converter.
"""

import numpy as np
from scipy.special import erf


def bert_sequence_output(tensors, config, token_ids, padding_mask, num_layers=None):
    """BERT's last hidden state `(batch, length, hidden)` as float64.

    Args:
        tensors: dict of the checkpoint's tensors by `BertModel` name.
        config: the checkpoint's `config.json` dict.
        token_ids: int array `(batch, length)`.
        padding_mask: bool array `(batch, length)`, True for real tokens.
        num_layers: run only the first `num_layers` layers (default: all).
    """
    t = {name: np.asarray(value, np.float64) for name, value in tensors.items()}
    eps = config.get("layer_norm_eps", 1e-12)
    num_heads = config["num_attention_heads"]
    num_layers = config["num_hidden_layers"] if num_layers is None else num_layers
    length = token_ids.shape[1]

    x = (
        t["embeddings.word_embeddings.weight"][token_ids]
        + t["embeddings.position_embeddings.weight"][:length]
        + t["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, t, "embeddings.LayerNorm", eps)
    # Additive key mask, as BERT: padded keys get a large negative score.
    key_bias = np.where(padding_mask, 0.0, -1e9)[:, None, None, :]
    for i in range(num_layers):
        p = f"encoder.layer.{i}."
        attended = _attention(x, t, p + "attention.", num_heads, key_bias)
        x = _layer_norm(x + attended, t, p + "attention.output.LayerNorm", eps)
        h = _linear(x, t, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        h = _linear(h, t, p + "output.dense")
        x = _layer_norm(x + h, t, p + "output.LayerNorm", eps)
    return x


def mean_pool(sequence, padding_mask):
    """Mean over real tokens then L2 norm (sentence-transformers pooling)."""
    mask = np.asarray(padding_mask, np.float64)[..., None]
    pooled = (np.asarray(sequence, np.float64) * mask).sum(1) / mask.sum(1)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def _attention(x, t, prefix, num_heads, key_bias):
    batch, length, hidden = x.shape
    head_dim = hidden // num_heads

    def heads(name):
        y = _linear(x, t, prefix + "self." + name)
        return y.reshape(batch, length, num_heads, head_dim).transpose(0, 2, 1, 3)

    q, k, v = heads("query"), heads("key"), heads("value")
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim) + key_bias
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    probs = scores / scores.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
    return _linear(context, t, prefix + "output.dense")


def _linear(x, t, prefix):
    # torch Linear: weight is [out, in].
    return x @ t[prefix + ".weight"].T + t[prefix + ".bias"]


def _layer_norm(x, t, prefix, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * t[prefix + ".weight"] + t[prefix + ".bias"]

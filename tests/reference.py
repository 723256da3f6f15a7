"""Independent NumPy implementations of the paper's formulas.

Written from "Attention Is All You Need", not from keras_tfm's code, and fed
the layers' own weights.
"""

import numpy as np

from tests.conftest import to_numpy


def softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def projection(dense, x):
    """Applies an EinsumDense projection layer with NumPy."""
    kernel = to_numpy(dense.kernel)
    if kernel.ndim == 3 and x.ndim == 3:  # (width, heads, head_dim)
        out = np.einsum("btd,dnh->btnh", x, kernel)
    else:  # (heads, head_dim, width)
        out = np.einsum("btnh,nhd->btd", x, kernel)
    if dense.bias is not None:
        out = out + to_numpy(dense.bias)
    return out


def multi_head_attention(layer, x, context=None, mask=None):
    """softmax(Q K^T / sqrt(d_k)) V per head, concatenated, projected.

    `mask` is boolean `(batch, q_len, k_len)`; masked keys get zero weight.
    Returns `(outputs, weights)` with weights `(batch, heads, q_len, k_len)`.
    """
    context = x if context is None else context
    query = projection(layer.query_dense, x)
    key = projection(layer.key_dense, context)
    value = projection(layer.value_dense, context)
    groups = query.shape[2] // key.shape[2]
    key = np.repeat(key, groups, axis=2)
    value = np.repeat(value, groups, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", query, key) / np.sqrt(query.shape[-1])
    if mask is not None:
        logits = np.where(mask[:, None], logits, -np.inf)
    weights = softmax(logits)
    heads = np.einsum("bnts,bsnh->btnh", weights, value)
    return projection(layer.output_dense, heads), weights


def causal(length):
    return np.tril(np.ones((length, length), bool))


def sinusoidal(length, dim, max_wavelength=10000):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    signal = np.zeros((length, dim))
    for pos in range(length):
        for i in range(0, dim, 2):
            angle = pos / max_wavelength ** (i / dim)
            signal[pos, i] = np.sin(angle)
            if i + 1 < dim:
                signal[pos, i + 1] = np.cos(angle)
    return signal

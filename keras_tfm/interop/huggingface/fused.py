"""One checkpoint `Linear` that fills several keras_tfm layers.

Phi-3 joins its query, key and value projections in `qkv_proj` and its
gate and up projections in `gate_up_proj`: the parts one after the other
along the output axis. GPT-NeoX joins query, key and value in
`query_key_value` per head instead: its output axis is `(heads, 3,
head_dim)`. Both are the kind `fused(...)`, on the layer that holds the
parts (`self_attention`, `feed_forward`).
"""

import math

import numpy as np

from keras_tfm.interop.huggingface import core


def _joined(parts, heads):
    """The checkpoint's rows from each part's rows `(out_i, ...)`: one part
    after the other, or (`heads`) head by head."""
    if heads is None:
        return np.concatenate(parts)
    trailing = parts[0].shape[1:]
    per_head = [part.reshape(heads, -1, *trailing) for part in parts]
    return np.stack(per_head, 1).reshape(-1, *trailing)


def _split(rows, sizes, heads):
    """The inverse of `_joined`: each part's rows, of `sizes` rows each."""
    if heads is None:
        return np.split(rows, np.cumsum(sizes)[:-1])
    trailing = rows.shape[1:]
    grouped = rows.reshape(heads, len(sizes), -1, *trailing)
    return [
        grouped[:, index].reshape(-1, *trailing) for index in range(len(sizes))
    ]


def fused(parts, per_head=False):
    """The kind of a PyTorch `Linear` whose output rows are those of the
    layers `parts` (attribute names, space-separated, in the checkpoint's
    order) of the layer it is declared on, concatenated, or interleaved
    head by head with `per_head=True`. A bias is fused the same way."""

    def tensors(name, owner):
        layers = [getattr(owner, part) for part in parts.split()]
        heads = layers[0].kernel.shape[1] if per_head else None
        found = [_fused_tensor(f"{name}.weight", layers, "kernel", heads)]
        if layers[0].bias is not None:
            found.append(_fused_tensor(f"{name}.bias", layers, "bias", heads))
        return found

    return tensors


def _fused_tensor(name, layers, attribute, heads):
    """The checkpoint tensor of `attribute` (`kernel` or `bias`) of each of
    `layers`, whose rows are the layers' outputs (`(out, in)` kernels)."""
    shapes = [tuple(getattr(layer, attribute).shape) for layer in layers]
    kernel = attribute == "kernel"
    sizes = [math.prod(shape[1:] if kernel else shape) for shape in shapes]

    def rows(array):
        if kernel:
            return array.reshape(array.shape[0], -1).T
        return array.reshape(-1)

    def to_keras(array):
        pieces = _split(array, sizes, heads)
        return [
            (piece.T if kernel else piece).reshape(shape)
            for piece, shape in zip(pieces, shapes, strict=True)
        ]

    def to_checkpoint(arrays):
        return _joined([rows(array) for array in arrays], heads)

    weights = [(layer, attribute) for layer in layers]
    return core.Tensor(name, weights, to_keras, to_checkpoint)

"""One checkpoint `Linear` that fills several keras_tfm layers.

Phi-3 joins its query, key and value projections in `qkv_proj` and its
gate and up projections in `gate_up_proj`: the parts one after the other
along the output axis. GPT-NeoX joins query, key and value in
`query_key_value` per head instead: its output axis is `(heads, 3,
head_dim)`. Both are the kind `fused(...)`, on the layer that holds the
parts (`self_attention`, `feed_forward`).
"""

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
        shapes = [tuple(layer.kernel.shape) for layer in layers]
        heads = shapes[0][1] if per_head else None
        sizes = [int(np.prod(shape[1:])) for shape in shapes]
        width = shapes[0][0]

        def kernels_to_keras(matrix):
            parts = _split(matrix, sizes, heads)
            return [
                part.T.reshape(shape)
                for part, shape in zip(parts, shapes, strict=True)
            ]

        def kernels_to_checkpoint(kernels):
            rows = [kernel.reshape(width, -1).T for kernel in kernels]
            return _joined(rows, heads)

        found = [
            core.Tensor(
                f"{name}.weight",
                [(layer, "kernel") for layer in layers],
                kernels_to_keras,
                kernels_to_checkpoint,
            )
        ]
        if layers[0].bias is not None:
            found.append(_fused_bias(f"{name}.bias", layers, sizes, heads))
        return found

    return tensors


def _fused_bias(name, layers, sizes, heads):
    shapes = [tuple(layer.bias.shape) for layer in layers]

    def to_keras(vector):
        parts = _split(vector, sizes, heads)
        return [
            part.reshape(shape)
            for part, shape in zip(parts, shapes, strict=True)
        ]

    def to_checkpoint(biases):
        return _joined([bias.reshape(-1) for bias in biases], heads)

    return core.Tensor(name, [(layer, "bias") for layer in layers], to_keras,
                       to_checkpoint)  # fmt: skip

"""Attention masks: reading, checking, building and merging them.

Every mask here is boolean with `True` meaning "may attend". The merged mask
has shape `(batch, 1, q_len, k_len)` (or a broadcastable part of it), which is
what `keras.ops.dot_product_attention` takes.
"""

from keras import ops
from keras.backend import standardize_dtype

# Keras attaches the implicit mask of `mask_zero=True` embeddings to the
# tensor itself and has no public getter for it; keras-hub and Keras's own
# MultiHeadAttention read it the same way.
from keras.src.backend import get_keras_mask

from keras_tfm.layers.validation import check_shape

__all__ = [
    "causal_mask",
    "check_masks",
    "get_keras_mask",
    "merge_masks",
    "visible_positions",
]


def causal_mask(query_length, key_length, start_index=0, sliding_window=None):
    """Returns a `(query_length, key_length)` boolean lower-triangular mask.

    Query `i` sits at absolute position `start_index + i` and may attend to
    keys at positions up to and including its own; `start_index` is the
    number of positions already in a key/value cache. With a
    `sliding_window`, only to the last `sliding_window` of them (see
    `visible_positions`).
    """
    return visible_positions(
        ops.arange(query_length) + start_index,
        ops.arange(key_length),
        sliding_window,
    )


def visible_positions(
    query_positions, key_positions, sliding_window=None, causal=True
):
    """`(queries, keys)`: whether each query may see each key, from their
    positions.

    A query at position `i` sees the keys at `j >= 0` (a negative key
    position marks an empty cache slot), with `j <= i` if `causal`. A
    `sliding_window` `w` keeps the keys less than `w` positions away: in a
    causal layer the query and the `w - 1` keys before it (transformers'
    `sliding_window_overlay`), otherwise the query and the `w - 1` keys on
    each side (ModernBERT's local attention, with `w = local_attention // 2
    + 1`).
    """
    query_positions = ops.expand_dims(query_positions, 1)
    key_positions = ops.expand_dims(key_positions, 0)
    visible = key_positions >= 0
    if causal:
        visible = ops.logical_and(visible, key_positions <= query_positions)
    if sliding_window is None:
        return visible
    visible = ops.logical_and(
        visible, key_positions > query_positions - sliding_window
    )
    if causal:
        return visible
    return ops.logical_and(
        visible, key_positions < query_positions + sliding_window
    )


def check_masks(
    query_shape,
    key_shape,
    padding_mask=None,
    attention_mask=None,
    padding_mask_name="padding_mask",
):
    """Raises a `ValueError` naming the mask whose shape or dtype is wrong."""
    batch, query_length = query_shape[0], query_shape[1]
    key_length = key_shape[1]
    if padding_mask is not None:
        check_shape(
            padding_mask_name,
            padding_mask.shape,
            (batch, key_length),
            "(batch, key_length)",
        )
    if attention_mask is not None:
        check_shape(
            "attention_mask",
            attention_mask.shape,
            (batch, query_length, key_length),
            "(batch, query_length, key_length)",
        )
    _check_mask_dtype(padding_mask_name, padding_mask)
    _check_mask_dtype("attention_mask", attention_mask)


def _check_mask_dtype(name, mask):
    """Masks are boolean or integer; a float mask is refused, because an
    additive mask (0 to keep, -inf to hide, as in PyTorch) read as boolean
    would keep exactly the wrong keys."""
    if mask is None:
        return
    dtype = standardize_dtype(mask.dtype)
    if dtype != "bool" and "int" not in dtype:
        raise ValueError(
            f"`{name}` must be boolean or integer, true or 1 where attention "
            f"is allowed. Received: {name}.dtype={dtype}. Convert an additive "
            "float mask (0 = keep, -inf = hide) with `mask == 0`."
        )


def merge_masks(padding_mask=None, attention_mask=None, causal=None):
    """Combines the masks that apply to one attention call.

    Args:
        padding_mask: `(batch, k_len)`, true for real keys.
        attention_mask: `(batch, q_len, k_len)`.
        causal: `(q_len, k_len)` boolean mask from `causal_mask()`.

    Returns:
        A boolean mask broadcastable to `(batch, heads, q_len, k_len)`, or
        `None` when no mask applies.
    """
    parts = []
    if padding_mask is not None:
        parts.append(ops.cast(padding_mask, "bool")[:, None, None, :])
    if attention_mask is not None:
        parts.append(ops.cast(attention_mask, "bool")[:, None, :, :])
    if causal is not None:
        parts.append(causal[None, None, :, :])
    if not parts:
        return None
    mask = parts[0]
    for part in parts[1:]:
        mask = ops.logical_and(mask, part)
    # A query that may see no key at all (a padding row under a causal mask,
    # an all-padding sequence) would give 0/0 in softmax on some kernels. It
    # attends to every key instead, as in Keras's MultiHeadAttention: the
    # output is finite and, being a padding position, ignored downstream.
    sees_a_key = ops.any(mask, axis=-1, keepdims=True)
    return ops.logical_or(mask, ops.logical_not(sees_a_key))

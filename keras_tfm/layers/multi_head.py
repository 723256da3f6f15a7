"""What the attention layers share: projections, the attention step,
the key/value cache layout and the named results of their calls."""

import numbers
import typing

import keras
from keras import ops

from keras_tfm.layers import kernels
from keras_tfm.layers.validation import (
    check_choice,
    check_divisible,
    check_positive_int,
    check_rate,
    positive_number,
)

PROJECTIONS = ("query", "key", "value", "output")
QUERY_KEY_NORM_DEFAULTS = {
    "type": "rms",
    "epsilon": 1e-6,
    "scope": "head",
    "offset": 0.0,
}


class AttentionResult(typing.NamedTuple):
    """An attention layer's or encoder block's output and its attention
    weights, from a call with `return_attention_scores=True`.

    Attributes:
        outputs: `(batch, q_len, width)`.
        scores: `(batch, num_heads, q_len, k_len)`.
    """

    outputs: typing.Any
    scores: typing.Any


class CachedResult(typing.NamedTuple):
    """The output and the updated key/value cache, from `call_with_cache`.

    Attributes:
        outputs: `(batch, n, width)`, the new positions.
        cache: The updated cache, to pass to the next call.
    """

    outputs: typing.Any
    cache: typing.Any


def heads_first_cache(key, value):
    """Keys and values `(batch, length, heads, head_dim)` as one cache
    `(batch, 2, heads, length, head_dim)`.

    Kept heads-first because the attention kernels read keys and values in
    that layout: PyTorch's made a copy of the whole cache at every decoding
    step from the sequence-first layout (measured: a third of a step).
    """
    return ops.transpose(ops.stack([key, value], axis=1), (0, 1, 3, 2, 4))


def write_positions(cache, start, update):
    """`cache` `(batch, 2, heads, length, head_dim)` with `update` (the same
    but `n` positions) written at positions `start` to `start + n - 1`.

    On PyTorch, `index_copy`: Keras's `slice_update` there builds an index
    for every number of the update, which made up a fifth of the decoding
    step's trace, and copies the cache first (the traced step writes in
    place instead: `generation.torch_step.simplify`).
    """
    if keras.backend.backend() != "torch":
        return ops.slice_update(cache, (0, 0, 0, start, 0), update)
    import torch

    positions = torch.arange(update.shape[3], device=cache.device) + start
    return torch.index_copy(cache, 3, positions, update)


def keys_and_values(cache):
    """The keys and values of a heads-first cache, `(batch, length, heads,
    head_dim)` each (transposed views where the backend has them)."""
    return (
        ops.transpose(cache[:, 0], (0, 2, 1, 3)),
        ops.transpose(cache[:, 1], (0, 2, 1, 3)),
    )


def query_key_norm_options(query_key_norm):
    """The complete `query_key_norm` option, checked: None, or a dict with
    the keys of `QUERY_KEY_NORM_DEFAULTS` (those left out take their
    default)."""
    if query_key_norm is None:
        return None
    if not isinstance(query_key_norm, dict):
        raise ValueError(
            "`query_key_norm` must be None or a dict with keys among "
            f"{list(QUERY_KEY_NORM_DEFAULTS)}. "
            f"Received: query_key_norm={query_key_norm!r}"
        )
    options = {**QUERY_KEY_NORM_DEFAULTS, **query_key_norm}
    for key in options:
        check_choice("query_key_norm key", key, tuple(QUERY_KEY_NORM_DEFAULTS))
    check_choice("query_key_norm['type']", options["type"], ("rms",))
    check_choice(
        "query_key_norm['scope']", options["scope"], ("head", "projection")
    )
    offset = options["offset"]
    if isinstance(offset, bool) or not isinstance(offset, numbers.Real):
        raise ValueError(
            "`query_key_norm['offset']` must be a number. "
            f"Received: offset={offset!r}"
        )
    epsilon = positive_number("query_key_norm['epsilon']", options["epsilon"])
    return {**options, "epsilon": epsilon, "offset": float(offset)}


def rolling_cache_positions(length, next_position):
    """The position held by each slot of a rolling cache of `length` slots
    (position `p` in slot `p % length`) once the positions before
    `next_position` are written: `(length,)`, negative for an empty slot."""
    last = next_position - 1
    # `+ length` keeps the operand of `mod` non-negative on every backend.
    return last - ops.mod(last - ops.arange(length) + length, length)


def rolling_cache_update(cache, cache_index, key, value):
    """`cache`, a rolling buffer (position `p` in slot `p % length`), with
    the keys and values `(batch, n, heads, head_dim)` of the positions from
    `cache_index` on written; of more than `length` new positions, the last
    `length` are kept."""
    update = ops.cast(heads_first_cache(key, value), cache.dtype)
    length, count = cache.shape[3], update.shape[3]
    if count == 1:
        return write_positions(cache, ops.mod(cache_index, length), update)
    positions = rolling_cache_positions(length, cache_index + count)
    is_new = (positions >= cache_index)[None, None, None, :, None]
    new = ops.take(
        update, ops.clip(positions - cache_index, 0, count - 1), axis=3
    )
    return ops.where(is_new, new, cache)


def _biased_projections(use_bias):
    """The projections that have a bias, from `use_bias`: a bool or a list
    of projection names."""
    if isinstance(use_bias, bool):
        return PROJECTIONS if use_bias else ()
    if not isinstance(use_bias, (list, tuple)):
        raise ValueError(
            "`use_bias` must be a bool or a list of projections among "
            f"{list(PROJECTIONS)}. Received: use_bias={use_bias!r}"
        )
    for name in use_bias:
        check_choice("use_bias", name, PROJECTIONS)
    return tuple(use_bias)


class MultiHeadAttentionBase(keras.layers.Layer):
    """Projections and the attention step shared by the public layers.

    Queries, keys and values are projected straight to
    `(batch, seq, heads, head_dim)` with `EinsumDense`, the layout
    `keras.ops.dot_product_attention` takes, so no reshape or transpose is
    needed on the way in or out.
    """

    def __init__(
        self,
        num_heads,
        key_dim=None,
        num_kv_heads=None,
        dropout=0.0,
        use_bias=True,
        attention_scale=None,
        logit_soft_cap=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        if key_dim is not None:
            check_positive_int("key_dim", key_dim)
        if num_kv_heads is not None:
            check_positive_int("num_kv_heads", num_kv_heads)
            check_divisible(
                "num_heads", num_heads, "num_kv_heads", num_kv_heads
            )
        check_rate("dropout", dropout)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.num_kv_heads = num_kv_heads
        self.dropout = dropout
        self.use_bias = (
            list(use_bias) if isinstance(use_bias, tuple) else use_bias
        )
        self.biased_projections = _biased_projections(use_bias)
        self.attention_scale = attention_scale
        if logit_soft_cap is not None:
            logit_soft_cap = positive_number("logit_soft_cap", logit_soft_cap)
        self.logit_soft_cap = logit_soft_cap
        self.supports_masking = True

    def _build_projections(self, query_shape, key_value_shape):
        width = query_shape[-1]
        head_dim = self.key_dim
        if head_dim is None:
            check_divisible(
                "the input width", width, "num_heads", self.num_heads
            )
            head_dim = width // self.num_heads
        kv_heads = self.num_kv_heads or self.num_heads
        self.query_dense = self._input_projection(
            "query", self.num_heads, head_dim, query_shape
        )
        self.key_dense = self._input_projection(
            "key", kv_heads, head_dim, key_value_shape
        )
        self.value_dense = self._input_projection(
            "value", kv_heads, head_dim, key_value_shape
        )
        # "a" (heads) sorts before "h" (head size): PyTorch's einsum orders
        # the summed axes by letter, and with "n" for the heads it copied
        # the whole kernel into (head size, heads) order at every call, a
        # third of a SmolLM2-135M decoding step.
        self.output_dense = keras.layers.EinsumDense(
            "btah,ahd->btd",
            output_shape=(None, width),
            bias_axes="d" if "output" in self.biased_projections else None,
            name="output",
            dtype=self.dtype_policy,
        )
        self.output_dense.build((None, None, self.num_heads, head_dim))
        self.output_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy
        )

    def _input_projection(self, name, heads, head_dim, input_shape):
        projection = keras.layers.EinsumDense(
            "btd,dnh->btnh",
            output_shape=(None, heads, head_dim),
            bias_axes="nh" if name in self.biased_projections else None,
            name=name,
            dtype=self.dtype_policy,
        )
        # The attention layer has already read the Keras mask of its input;
        # passing it through spares a "mask dropped" warning on every call.
        projection.supports_masking = True
        projection.build(input_shape)
        return projection

    def _attend(
        self, query, key, value, mask, *, bias, is_causal, explicit, training
    ):
        """Attention, output projection and dropout: `(outputs, scores)`,
        with scores None on the fused path.

        `explicit` selects `kernels.attention_with_scores` over the fused
        kernel; `is_causal` (fused path only) asks the kernel for
        causality; `bias` is added to the logits. Soft-capped logits take
        the explicit path: Keras's `dot_product_attention` caps them on
        JAX's TPU kernel only.
        """
        scale, scores = self.attention_scale, None
        if explicit or self.logit_soft_cap is not None:
            outputs, scores = kernels.attention_with_scores(
                query, key, value, mask, bias=bias, scale=scale,
                soft_cap=self.logit_soft_cap,
            )  # fmt: skip
        else:
            outputs = kernels.fused_attention(
                query, key, value, mask, bias, scale, is_causal
            )
        outputs = self.output_dense(outputs)
        return self.output_dropout(outputs, training=training), scores

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "num_kv_heads": self.num_kv_heads,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "attention_scale": self.attention_scale,
            "logit_soft_cap": self.logit_soft_cap,
        }

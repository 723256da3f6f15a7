"""Multi-head self-attention, with a key/value cache for decoding."""

import math

import keras
from keras import ops

from keras_tfm.layers import kernels
from keras_tfm.layers.masks import (
    causal_mask,
    check_masks,
    get_keras_mask,
    merge_masks,
    visible_positions,
)
from keras_tfm.layers.multi_head import (
    AttentionResult,
    CachedResult,
    MultiHeadAttentionBase,
    heads_first_cache,
    keys_and_values,
    query_key_norm_options,
    rolling_cache_positions,
    rolling_cache_update,
    write_positions,
)
from keras_tfm.layers.normalization import OffsetRMSNormalization
from keras_tfm.layers.rotary import RotaryEmbedding, rotary_options
from keras_tfm.layers.validation import (
    check_positive_int,
    check_rank,
    check_shape,
)


@keras.saving.register_keras_serializable(package="keras_tfm")
class MultiHeadSelfAttention(MultiHeadAttentionBase):
    """Multi-head self-attention with padding and causal masks.

    Each position attends to the positions of the same sequence. The width is
    read from the input. Attention runs through
    `keras.ops.dot_product_attention`, so the backend's fused kernel (flash
    attention, cuDNN, PyTorch SDPA) is used where it exists; a causal layer
    with no other mask reaches the kernel's `is_causal` path without building
    a mask tensor. Where the explicit formula measured faster (CPUs), it is
    used instead: `keras_tfm.layers.kernels` holds the rules.

    Masks: a Keras mask on `x` (from `mask_zero=True` embeddings) or an
    explicit `padding_mask` hides padding keys; `attention_mask` hides any
    (query, key) pair; `causal=True` hides later positions. They are
    combined. A query that may see no key attends to every key, so its output
    is finite.

    These arguments are the `attention` options of `EncoderBlock`,
    `DecoderBlock` and the models, which pass them here unchanged.

    Args:
        num_heads: Number of attention heads.
        key_dim: Size of each head. Defaults to `width // num_heads`, which
            then must divide evenly.
        num_kv_heads: Number of key/value heads. Fewer than `num_heads` gives
            grouped-query attention (1 gives multi-query attention); it must
            divide `num_heads`. Defaults to `num_heads`.
        dropout: Dropout rate on the layer's output. Dropout on the attention
            weights would disable the fused kernels, so there is none.
        use_bias: Whether the projections have biases: a bool for all four,
            or a list of those that have one among `"query"`, `"key"`,
            `"value"` and `"output"` (Qwen2: `["query", "key", "value"]`).
        attention_scale: Multiplies the query-key logits; defaults to
            `1 / sqrt(head_dim)` (T5 uses 1).
        causal: Whether each position may attend only to itself and earlier
            positions.
        rotary: Rotary position embeddings on queries and keys: `False` or
            None for none, `True` for the defaults, or a dict of
            `RotaryEmbedding` arguments (`max_wavelength`, `scaling`,
            `fraction`).
        query_key_norm: None, or a dict to RMS-normalise queries and keys
            after their projection, before rotary positions (Qwen3, Gemma 3,
            OLMo 2): `"epsilon"` (1e-6), `"scope"` (`"head"`: each head, one
            scale of `head_dim` shared by the heads; `"projection"`: the
            whole projection, OLMo 2), `"offset"` (0.0; Gemma's norms scale
            by `1 + weight`: 1.0) and `"type"` (`"rms"`). The norms are the
            sublayers `query_norm` and `key_norm`, weight `scale`.
        logit_soft_cap: None, or a positive number `c`: the scaled logits
            become `c * tanh(logits / c)` before masking (Gemma 2). Takes
            the explicit attention formula.
        sliding_window: None, or a positive int `w`: each position
            attends to the positions less than `w` away, itself included.
            In a causal layer, itself and the `w - 1` positions before it
            (Mistral, Gemma 2 local layers), and its cache is a rolling
            buffer of `min(max_length, w)` positions; otherwise itself and
            the `w - 1` positions on each side (ModernBERT's local layers,
            `w = local_attention // 2 + 1`).
        **kwargs: Standard layer arguments (`name`, `dtype`, ...). The flat
            `rotary_max_wavelength` of keras_tfm 0.1 is still taken.

    Call arguments:
        x: Input of shape `(batch, seq, width)`.
        padding_mask: Optional `(batch, seq)` mask, true or 1 for real tokens.
            Overrides the Keras mask of `x`.
        attention_mask: Optional `(batch, seq, seq)` mask, true or 1 where a
            query may attend to a key.
        attention_bias: Optional float tensor added to the attention logits,
            broadcastable to `(batch, num_heads, seq, key_length)`, such as
            `RelativePositionBias`'s output.
        return_attention_scores: Whether to also return the attention weights.
        training: Whether dropout is active.

    Returns:
        The output, of shape `(batch, seq, width)`; with
        `return_attention_scores=True`, an `AttentionResult(outputs,
        scores)` with scores of shape `(batch, num_heads, seq, seq)`.
        Incremental decoding has its own method, `call_with_cache`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import MultiHeadSelfAttention

    x = np.random.rand(2, 6, 16).astype("float32")
    padding_mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    attention = MultiHeadSelfAttention(
        num_heads=4, causal=True, rotary={"max_wavelength": 500000}
    )
    outputs, scores = attention(
        x, padding_mask=padding_mask, return_attention_scores=True
    )  # (2, 6, 16) and (2, 4, 6, 6)

    # Incremental decoding: the first 4 positions, then the 5th alone.
    cache = attention.initial_cache(batch_size=2, max_length=6)
    _, cache = attention.call_with_cache(x[:, :4], cache, cache_index=0)
    step, cache = attention.call_with_cache(x[:, 4:5], cache, cache_index=4)
    # `step` equals `attention(x)[:, 4:5]`.
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Ainslie et al., 2023 (GQA)](https://arxiv.org/abs/2305.13245)
    """

    def __init__(
        self,
        num_heads,
        key_dim=None,
        num_kv_heads=None,
        dropout=0.0,
        use_bias=True,
        causal=False,
        rotary=False,
        attention_scale=None,
        query_key_norm=None,
        logit_soft_cap=None,
        sliding_window=None,
        **kwargs,
    ):
        legacy_max_wavelength = kwargs.pop("rotary_max_wavelength", None)
        super().__init__(
            num_heads=num_heads,
            key_dim=key_dim,
            num_kv_heads=num_kv_heads,
            dropout=dropout,
            use_bias=use_bias,
            attention_scale=attention_scale,
            logit_soft_cap=logit_soft_cap,
            **kwargs,
        )
        self.causal = causal
        self.rotary = rotary_options(rotary, legacy_max_wavelength)
        self.query_key_norm = query_key_norm_options(query_key_norm)
        if sliding_window is not None:
            check_positive_int("sliding_window", sliding_window)
        self.sliding_window = sliding_window

    def build(self, x_shape):
        check_rank("x", x_shape, 3, "(batch, seq, width)")
        self._build_projections(x_shape, x_shape)
        if self.query_key_norm is not None:
            self.query_norm = self._query_key_norm(
                "query_norm", self.query_dense
            )
            self.key_norm = self._query_key_norm("key_norm", self.key_dense)
        if self.rotary is not None:
            self.rotary_embedding = RotaryEmbedding(
                **self.rotary, name="rotary_embedding", dtype=self.dtype_policy
            )

    def _project(self, x):
        """Queries, keys and values of `x`, each `(batch, seq, heads,
        head_dim)`: in one matmul over the three kernels where that is
        faster (`kernels.fuses_projections`), else through the three
        projection layers (always when one carries LoRA or quantized
        weights, which their own call handles)."""
        projections = (self.query_dense, self.key_dense, self.value_dense)
        # LoRA and quantized layers first: their `kernel` is computed.
        if any(
            layer.lora_enabled or layer.quantization_mode is not None
            for layer in projections
        ) or not kernels.fuses_projections(
            sum(math.prod(layer.kernel.shape) for layer in projections)
        ):
            return tuple(layer(x) for layer in projections)

        def joined(weights):
            weights = [
                ops.cast(weight, self.compute_dtype) for weight in weights
            ]
            return ops.concatenate(weights, axis=-2)  # the heads axis

        outputs = ops.einsum(
            "btd,dnh->btnh", x, joined([layer.kernel for layer in projections])
        )
        if any(layer.bias is not None for layer in projections):
            outputs = outputs + joined(
                [_bias_or_zeros(layer) for layer in projections]
            )
        # Slices: `ops.split` was the slower of the two in eager PyTorch.
        keys_end = self.num_heads + self.key_dense.kernel.shape[1]
        return (
            outputs[:, :, : self.num_heads],
            outputs[:, :, self.num_heads : keys_end],
            outputs[:, :, keys_end:],
        )

    def _query_key_norm(self, name, projection):
        """The RMS norm of a projection's heads: its scale has `head_dim`
        numbers (scope `"head"`) or `heads * head_dim` (`"projection"`)."""
        norm = OffsetRMSNormalization(
            epsilon=self.query_key_norm["epsilon"],
            offset=self.query_key_norm["offset"],
            name=name,
            dtype=self.dtype_policy,
        )
        _, heads, head_dim = projection.kernel.shape
        by_head = self.query_key_norm["scope"] == "head"
        norm.build((None, None, head_dim if by_head else heads * head_dim))
        return norm

    def _normalized(self, norm, x):
        """`norm` over each head of `x` `(batch, seq, heads, head_dim)`, or
        over all of them."""
        if self.query_key_norm["scope"] == "head":
            return norm(x)
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        flat = ops.reshape(x, (batch, length, x.shape[2] * x.shape[3]))
        return ops.reshape(norm(flat), ops.shape(x))

    def _positioned_projections(self, x, start_index):
        query, key, value = self._project(x)
        if self.query_key_norm is not None:
            query = self._normalized(self.query_norm, query)
            key = self._normalized(self.key_norm, key)
        if self.rotary is not None:
            # Rotated together: the angles are computed once.
            heads = query.shape[2]
            rotated = self.rotary_embedding(
                ops.concatenate([query, key], axis=2), start_index=start_index
            )
            query, key = rotated[:, :, :heads], rotated[:, :, heads:]
        return query, key, value

    def call(
        self,
        x,
        padding_mask=None,
        attention_mask=None,
        attention_bias=None,
        return_attention_scores=False,
        training=None,
    ):
        check_rank("x", x.shape, 3, "(batch, seq, width)")
        if padding_mask is None:
            padding_mask = get_keras_mask(x)
        query, key, value = self._positioned_projections(x, 0)
        outputs, scores = self._attend_keys(
            query, key, value, padding_mask, attention_mask, attention_bias,
            start_index=None, explicit=return_attention_scores,
            training=training,
        )  # fmt: skip
        if return_attention_scores:
            return AttentionResult(outputs, scores)
        return outputs

    def call_with_cache(
        self,
        x,
        cache,
        cache_index,
        padding_mask=None,
        attention_mask=None,
        attention_bias=None,
    ):
        """Attention for the positions of `x`, with a key/value cache.

        The keys and values of `x` are written at `cache_index` and `x`
        attends to every written position of the cache (the earlier ones
        only, in a causal layer). Dropout is off.

        Args:
            x: `(batch, n, width)`, the positions `cache_index` to
                `cache_index + n - 1`.
            cache: From `initial_cache()` or the previous call:
                `(batch, 2, num_kv_heads, max_length, head_dim)`; in a
                causal layer with a `sliding_window`, a rolling buffer of
                the window's size (and then the call takes no masks or
                bias).
            cache_index: Position of `x[:, 0]` (an int or a scalar tensor).
            padding_mask: Optional `(batch, max_length)` mask over the
                cache's positions.
            attention_mask: Optional `(batch, n, max_length)` mask.
            attention_bias: Optional bias, broadcastable to
                `(batch, num_heads, n, max_length)`.

        Returns:
            `CachedResult(outputs, cache)`: `(batch, n, width)` and the
            updated cache.
        """
        x = ops.convert_to_tensor(x, dtype=self.compute_dtype)
        check_rank("x", x.shape, 3, "(batch, seq, width)")
        query, key, value = self._positioned_projections(x, cache_index)
        _check_cache(cache, key)
        if self._rolling_cache:
            _check_no_masks(padding_mask, attention_mask, attention_bias)
            return self._sliding_call_with_cache(
                query, key, value, cache, cache_index
            )
        cache = self._update_cache(cache, cache_index, key, value)
        key, value = keys_and_values(cache)
        outputs, _ = self._attend_keys(
            query, key, value, padding_mask, attention_mask, attention_bias,
            start_index=cache_index, explicit=False, training=False,
        )  # fmt: skip
        return CachedResult(outputs, cache)

    def _attend_keys(
        self, query, key, value, padding_mask, attention_mask, bias, *,
        start_index, explicit, training,
    ):  # fmt: skip
        """Attention of `query` over `key` and `value` with every mask:
        `start_index` is None without a cache, else the queries' first
        position in it."""
        check_masks(query.shape, key.shape, padding_mask, attention_mask)
        explicit = (
            explicit
            or self.logit_soft_cap is not None  # see `_attend`
            or kernels.explicit_attention_is_faster(query, key)
        )
        # The fused kernels take causality as a flag; a mask tensor is built
        # only when another mask must be combined with it, or for the
        # explicit path, or for a cache (whose unfilled keys are hidden).
        is_causal = self.causal and not (
            self.sliding_window is not None
            or start_index is not None
            or explicit
            or any(m is not None for m in (padding_mask, attention_mask, bias))
        )
        visible = None
        if (
            start_index is not None
            or self.sliding_window is not None
            or (self.causal and not is_causal)
        ):
            visible = self._visible_keys(
                ops.shape(query)[1],
                ops.shape(key)[1],
                0 if start_index is None else start_index,
            )
        mask = merge_masks(padding_mask, attention_mask, visible)
        return self._attend(
            query, key, value, mask, bias=bias, is_causal=is_causal,
            explicit=explicit, training=training,
        )  # fmt: skip

    def _sliding_call_with_cache(self, query, key, value, cache, cache_index):
        """`call_with_cache` over a rolling cache: the queries attend to the
        cached keys and their own, each at its position, then the new keys
        and values are written (a prefill longer than the cache attends to
        all of its keys before the earliest are dropped)."""
        cached_keys, cached_values = keys_and_values(cache)
        key, value = ops.cast(key, cache.dtype), ops.cast(value, cache.dtype)
        query_positions = ops.arange(ops.shape(query)[1]) + cache_index
        key_positions = ops.concatenate(
            [
                rolling_cache_positions(cache.shape[3], cache_index),
                query_positions,
            ]
        )
        visible = visible_positions(
            query_positions, key_positions, self.sliding_window
        )
        keys = ops.concatenate([cached_keys, key], axis=1)
        values = ops.concatenate([cached_values, value], axis=1)
        outputs, _ = self._attend(
            query, keys, values, merge_masks(causal=visible), bias=None,
            is_causal=False,
            explicit=kernels.explicit_attention_is_faster(query, keys),
            training=False,
        )  # fmt: skip
        cache = rolling_cache_update(cache, cache_index, key, value)
        return CachedResult(outputs, cache)

    def _update_cache(self, cache, cache_index, key, value):
        update = ops.cast(heads_first_cache(key, value), cache.dtype)
        return write_positions(cache, cache_index, update)

    def _visible_keys(self, query_length, key_length, start_index):
        """`(query_length, key_length)`: which keys each query may see.

        Query `i` sits at position `start_index + i`. A causal layer sees up
        to that position; otherwise every key that has been written, which
        without a cache is every key; both within the `sliding_window`.
        """
        if self.causal:
            return causal_mask(
                query_length, key_length, start_index, self.sliding_window
            )
        written = ops.arange(key_length) < start_index + query_length
        visible = ops.broadcast_to(written[None, :], (query_length, key_length))
        if self.sliding_window is None:
            return visible
        window = visible_positions(
            ops.arange(query_length) + start_index,
            ops.arange(key_length),
            self.sliding_window,
            causal=False,
        )
        return ops.logical_and(visible, window)

    @property
    def _rolling_cache(self):
        """Whether the cache is a rolling buffer: a causal layer's with a
        window (a bidirectional window may see keys not yet written)."""
        return self.causal and self.sliding_window is not None

    def initial_cache(self, batch_size, max_length):
        """An empty key/value cache for incremental decoding.

        Args:
            batch_size: Number of sequences decoded together.
            max_length: Longest sequence the cache will hold (prompt and
                generated tokens).

        Returns:
            Zeros of shape
            `(batch_size, 2, num_kv_heads, max_length, head_dim)` in the
            layer's compute dtype: keys at index 0 of axis 1, values at 1,
            heads before positions as attention kernels read them. In a
            causal layer with a `sliding_window`, a rolling buffer of
            `min(max_length, sliding_window)` positions instead (position
            `p` in slot `p % length`).
        """
        if not self.built:
            raise ValueError(
                f"`{self.name}` must be built before `initial_cache()`, "
                "which reads the head size from the projections: call it on "
                "an input or `build()` it first."
            )
        # Inside a compiled function the sizes may be tensors.
        for name, size in (
            ("batch_size", batch_size),
            ("max_length", max_length),
        ):
            if isinstance(size, int):
                check_positive_int(name, size)
        _, heads, head_dim = self.key_dense.kernel.shape
        length = max_length
        if self._rolling_cache:
            length = (
                min(max_length, self.sliding_window)
                if isinstance(max_length, int)
                else ops.minimum(max_length, self.sliding_window)
            )
        return ops.zeros(
            (batch_size, 2, heads, length, head_dim), self.compute_dtype
        )

    def get_config(self):
        return {
            **super().get_config(),
            "causal": self.causal,
            "rotary": self.rotary,
            "query_key_norm": self.query_key_norm,
            "sliding_window": self.sliding_window,
        }


def _check_no_masks(*masks):
    if any(mask is not None for mask in masks):
        raise ValueError(
            "`call_with_cache` of a layer with a `sliding_window` takes no "
            "`padding_mask`, `attention_mask` or `attention_bias`: its cache "
            "is a rolling buffer, whose slots are not positions."
        )


def _check_cache(cache, key):
    batch, _, heads, head_dim = key.shape
    check_shape(
        "cache",
        cache.shape,
        (batch, 2, heads, None, head_dim),
        "(batch, 2, num_kv_heads, max_length, head_dim), from "
        "`initial_cache()`",
    )


def _bias_or_zeros(layer):
    if layer.bias is not None:
        return layer.bias
    return ops.zeros(layer.kernel.shape[1:], layer.kernel.dtype)

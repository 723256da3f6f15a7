"""Multi-head attention: self-attention and cross-attention."""

import functools
import math

import keras
from keras import ops

from keras_tfm.layers.masks import (
    causal_mask,
    check_masks,
    get_keras_mask,
    merge_masks,
)
from keras_tfm.layers.positional import RotaryEmbedding
from keras_tfm.layers.validation import (
    check_divisible,
    check_positive_int,
    check_rank,
    check_rate,
    check_shape,
)

# The float32 logit given to masked keys on the explicit path. A finite value
# rather than -inf: softmax of a row with every key masked stays finite
# even for callers of `attention_with_scores` that skip `merge_masks`.
_MASKED_LOGIT = -30000.0


def attention_with_scores(query, key, value, mask=None, bias=None, scale=None):
    """Scaled dot-product attention that also returns the weights.

    `softmax(Q K^T / sqrt(d) + bias) V` written out, for when the caller asks
    for the attention weights (fused kernels do not return them). Softmax
    runs in float32 so that mixed precision cannot overflow.

    Args:
        query: `(batch, q_len, heads, head_dim)`.
        key: `(batch, k_len, kv_heads, head_dim)`; `heads` must be a multiple
            of `kv_heads`.
        value: Same shape as `key`.
        mask: Boolean, broadcastable to `(batch, heads, q_len, k_len)`.
        bias: Added to the logits, broadcastable like `mask`.
        scale: Multiplies `Q K^T`; defaults to `1 / sqrt(head_dim)`.

    Returns:
        `(outputs, scores)`: `(batch, q_len, heads, head_dim)` and
        `(batch, heads, q_len, k_len)`.
    """
    key, value = _repeat_kv_heads(query, key, value)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    logits = ops.einsum("btnh,bsnh->bnts", query, key)
    logits = ops.cast(logits, "float32") * scale
    if bias is not None:
        logits = logits + ops.cast(bias, "float32")
    if mask is not None:
        logits = ops.where(mask, logits, _MASKED_LOGIT)
    scores = ops.cast(ops.softmax(logits, axis=-1), query.dtype)
    return ops.einsum("bnts,bsnh->btnh", scores, value), scores


# PyTorch's CPU kernel in bfloat16 lost to the explicit formula up to this
# key length (1.4x to 2.5x at 64 and 128), drew at 192 and won from 256 on
# (`python -m benchmarks.attention --precision mixed_bfloat16`, 2-core CPU).
_TORCH_CPU_BFLOAT16_EXPLICIT_MAX_LENGTH = 128


def explicit_attention_is_faster(query, key):
    """Whether to skip `ops.dot_product_attention` for these inputs.

    TensorFlow and JAX have no fused attention kernel for CPUs, and there the
    einsum + softmax of `attention_with_scores` trained 1.15x to 2.3x faster
    than `ops.dot_product_attention` at every shape measured by
    `python -m benchmarks.attention`. PyTorch's CPU kernel won at every
    length in float32 but only past short sequences in bfloat16, and
    accelerators have flash attention, so they keep the fused path.

    Args:
        query: `(batch, q_len, heads, head_dim)`.
        key: `(batch, k_len, kv_heads, head_dim)`.
    """
    if keras.backend.backend() == "torch":
        return (
            query.device.type == "cpu"
            and keras.backend.standardize_dtype(query.dtype) == "bfloat16"
            and key.shape[1] <= _TORCH_CPU_BFLOAT16_EXPLICIT_MAX_LENGTH
        )
    return keras.backend.backend() in ("tensorflow", "jax") and _only_cpus()


@functools.cache
def _only_cpus():
    # Asks Keras, not a tensor: this may first run inside a compiled trace.
    devices = keras.distribution.list_devices()
    return all(device.lower().startswith("cpu") for device in devices)


def _fuses_projections():
    """Whether self-attention projects queries, keys and values with one
    matmul over the three kernels, joined.

    Keras runs PyTorch eagerly, where a step is bound by the cost of each
    call and kernel launch: one matmul instead of three trained BERT-small
    (batch 32) 8% to 13% faster per step on an H100 and 0.99x to 1.09x as
    fast on a CPU (`python -m benchmarks.projections`). On the CPU,
    TensorFlow's joined step was 0.84x to 1.00x as fast and JAX's level
    from width 128 up, so both keep three. The weights stay three variables
    either way.
    """
    return keras.backend.backend() == "torch"


def _mask_for_jax_cudnn(mask, query, key):
    """Spells a padding mask out over the queries for JAX's cuDNN kernel.

    On a GPU, Keras's JAX `dot_product_attention` tries cuDNN's flash kernel,
    which rejects a mask that broadcasts over the query axis (`(batch, 1, 1,
    k_len)`, a padding mask) and Keras then falls back to XLA's unfused
    attention. Measured on an H100 (JAX 0.11): with the mask broadcast to
    `(batch, 1, q_len, k_len)` the kernel is used.
    """
    if mask is None or keras.backend.backend() != "jax":
        return mask
    batch, query_length = ops.shape(query)[0], ops.shape(query)[1]
    shape = (batch, 1, query_length, ops.shape(key)[1])
    return ops.broadcast_to(mask, shape)


def _fold_mask_into_bias(bias, mask, dtype):
    """One additive bias for kernels that take a bias or a mask, not both
    (Keras's PyTorch `dot_product_attention`)."""
    bias = ops.cast(bias, dtype)
    if mask is None:
        return bias
    return ops.where(mask, bias, ops.cast(_MASKED_LOGIT, dtype))


def _heads_first_cache(key, value):
    """Keys and values `(batch, length, heads, head_dim)` as one cache
    `(batch, 2, heads, length, head_dim)`.

    Kept heads-first because the attention kernels read keys and values in
    that layout: PyTorch's made a copy of the whole cache at every decoding
    step from the sequence-first layout (measured: a third of a step).
    """
    return ops.transpose(ops.stack([key, value], axis=1), (0, 1, 3, 2, 4))


def _keys_and_values(cache):
    """The keys and values of a heads-first cache, `(batch, length, heads,
    head_dim)` each (transposed views where the backend has them)."""
    return (
        ops.transpose(cache[:, 0], (0, 2, 1, 3)),
        ops.transpose(cache[:, 1], (0, 2, 1, 3)),
    )


def _repeat_kv_heads(query, key, value):
    """Keys and values with as many heads as the query (grouped-query)."""
    groups = query.shape[2] // key.shape[2]
    if groups == 1:
        return key, value
    return ops.repeat(key, groups, axis=2), ops.repeat(value, groups, axis=2)


class _MultiHeadAttention(keras.layers.Layer):
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
        self.use_bias = use_bias
        self.attention_scale = attention_scale
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
        self.output_dense = keras.layers.EinsumDense(
            "btnh,nhd->btd",
            output_shape=(None, width),
            bias_axes="d" if self.use_bias else None,
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
            bias_axes="nh" if self.use_bias else None,
            name=name,
            dtype=self.dtype_policy,
        )
        # The attention layer has already read the Keras mask of its input;
        # passing it through spares a "mask dropped" warning on every call.
        projection.supports_masking = True
        projection.build(input_shape)
        return projection

    def _attend(
        self,
        query,
        key,
        value,
        mask,
        *,
        bias=None,
        is_causal,
        explicit,
        return_attention_scores,
        training,
    ):
        """Attention, output projection and dropout.

        `explicit` selects `attention_with_scores` over the fused kernel;
        `is_causal` (fused path only) asks the kernel for causality; `bias`
        is added to the logits.
        """
        scale = self.attention_scale
        if explicit:
            outputs, scores = attention_with_scores(
                query, key, value, mask, bias=bias, scale=scale
            )
        else:
            if keras.backend.backend() != "jax":
                # Keras 3.12's TensorFlow and PyTorch kernels never repeat
                # key/value heads, and 3.15's TensorFlow one not a single
                # head; JAX's kernels take grouped heads as they are.
                key, value = _repeat_kv_heads(query, key, value)
            if bias is not None:
                bias, mask = _fold_mask_into_bias(bias, mask, query.dtype), None
            mask = _mask_for_jax_cudnn(mask, query, key)
            outputs = ops.dot_product_attention(
                query,
                key,
                value,
                bias=bias,
                mask=mask,
                scale=scale,
                is_causal=is_causal,
            )
        outputs = self.output_dense(outputs)
        outputs = self.output_dropout(outputs, training=training)
        if return_attention_scores:
            return outputs, scores
        return outputs

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "num_kv_heads": self.num_kv_heads,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "attention_scale": self.attention_scale,
        }


@keras.saving.register_keras_serializable(package="keras_tfm")
class MultiHeadSelfAttention(_MultiHeadAttention):
    """Multi-head self-attention with padding and causal masks.

    Each position attends to the positions of the same sequence. The width is
    read from the input. Attention runs through
    `keras.ops.dot_product_attention`, so the backend's fused kernel (flash
    attention, cuDNN, PyTorch SDPA) is used where it exists; a causal layer
    with no other mask reaches the kernel's `is_causal` path without building
    a mask tensor. On CPUs under TensorFlow and JAX, which have no fused
    kernel, the plain einsum + softmax formula is used instead because it
    measured faster (`python -m benchmarks.attention`).

    Masks: a Keras mask on `x` (from `mask_zero=True` embeddings) or an
    explicit `padding_mask` hides padding keys; `attention_mask` hides any
    (query, key) pair; `causal=True` hides later positions. They are
    combined. A query that may see no key attends to every key, so its output
    is finite.

    Args:
        num_heads: Number of attention heads.
        key_dim: Size of each head. Defaults to `width // num_heads`, which
            then must divide evenly.
        num_kv_heads: Number of key/value heads. Fewer than `num_heads` gives
            grouped-query attention (1 gives multi-query attention); it must
            divide `num_heads`. Defaults to `num_heads`.
        dropout: Dropout rate on the layer's output. Dropout on the attention
            weights would disable the fused kernels, so there is none.
        use_bias: Whether the projections have biases.
        attention_scale: Multiplies the query-key logits; defaults to
            `1 / sqrt(head_dim)` (T5 uses 1).
        causal: Whether each position may attend only to itself and earlier
            positions.
        rotary: Whether to apply rotary position embeddings to queries and
            keys.
        rotary_max_wavelength: The rotary embeddings' longest wavelength
            (Hugging Face's `rope_theta`).
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: Input of shape `(batch, seq, width)`.
        padding_mask: Optional `(batch, seq)` mask, true or 1 for real tokens.
            Overrides the Keras mask of `x`.
        attention_mask: Optional `(batch, seq, seq)` mask, true or 1 where a
            query may attend to a key.
        attention_bias: Optional float tensor added to the attention logits,
            broadcastable to `(batch, num_heads, seq, key_length)`, such as
            `RelativePositionBias`'s output.
        cache: Optional key/value cache for incremental decoding, from
            `initial_cache()`: `(batch, 2, num_kv_heads, max_length,
            head_dim)`. The keys and values of `x` are written at
            `cache_index` and `x` attends to the cache. With a cache, masks
            refer to the cache's `max_length` keys (a `padding_mask` of
            shape `(batch, max_length)`), and the Keras mask of `x` is not
            used.
        cache_index: Position of the first element of `x` in the sequence
            (an int or a scalar tensor); used with `cache` and rotary
            embeddings.
        return_attention_scores: Whether to also return the attention weights.
        training: Whether dropout is active.

    Returns:
        The output, of shape `(batch, seq, width)`; with
        `return_attention_scores=True`, the tuple `(output, scores)` with
        scores of shape `(batch, num_heads, seq, seq)`. With a `cache`, the
        updated cache is appended: `(output, cache)` or
        `(output, scores, cache)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import MultiHeadSelfAttention

    x = np.random.rand(2, 6, 16).astype("float32")
    padding_mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    attention = MultiHeadSelfAttention(num_heads=4, causal=True)
    outputs, scores = attention(
        x, padding_mask=padding_mask, return_attention_scores=True
    )  # (2, 6, 16) and (2, 4, 6, 6)

    # Incremental decoding: the first 4 positions, then the 5th alone.
    cache = attention.initial_cache(batch_size=2, max_length=6)
    _, cache = attention(x[:, :4], cache=cache, cache_index=0)
    step, cache = attention(x[:, 4:5], cache=cache, cache_index=4)
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
        rotary_max_wavelength=10000,
        attention_scale=None,
        **kwargs,
    ):
        super().__init__(
            num_heads=num_heads,
            key_dim=key_dim,
            num_kv_heads=num_kv_heads,
            dropout=dropout,
            use_bias=use_bias,
            attention_scale=attention_scale,
            **kwargs,
        )
        self.causal = causal
        self.rotary = rotary
        self.rotary_max_wavelength = rotary_max_wavelength

    def build(self, x_shape):
        check_rank("x", x_shape, 3, "(batch, seq, width)")
        self._build_projections(x_shape, x_shape)
        if self.rotary:
            self.rotary_embedding = RotaryEmbedding(
                self.rotary_max_wavelength,
                name="rotary_embedding",
                dtype=self.dtype_policy,
            )

    def _project(self, x):
        """Queries, keys and values of `x`, each `(batch, seq, heads,
        head_dim)`: in one matmul over the three kernels where that is
        faster, else through the three projection layers (always when
        one carries LoRA or quantized weights, which their own call
        handles)."""
        projections = (self.query_dense, self.key_dense, self.value_dense)
        if not _fuses_projections() or any(
            layer.lora_enabled or layer.quantization_mode is not None
            for layer in projections
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
        if self.use_bias:
            outputs = outputs + joined([layer.bias for layer in projections])
        # Slices: `ops.split` was the slower of the two in eager PyTorch.
        keys_end = self.num_heads + self.key_dense.kernel.shape[1]
        return (
            outputs[:, :, : self.num_heads],
            outputs[:, :, self.num_heads : keys_end],
            outputs[:, :, keys_end:],
        )

    def call(
        self,
        x,
        padding_mask=None,
        attention_mask=None,
        attention_bias=None,
        cache=None,
        cache_index=0,
        return_attention_scores=False,
        training=None,
    ):
        check_rank("x", x.shape, 3, "(batch, seq, width)")
        query, key, value = self._project(x)
        if self.rotary:
            query = self.rotary_embedding(query, start_index=cache_index)
            key = self.rotary_embedding(key, start_index=cache_index)
        if cache is None:
            if padding_mask is None:
                padding_mask = get_keras_mask(x)
            key_shape = x.shape
        else:
            cache = self._update_cache(cache, cache_index, key, value)
            key, value = _keys_and_values(cache)
            key_shape = key.shape
        check_masks(x.shape, key_shape, padding_mask, attention_mask)
        explicit = return_attention_scores or explicit_attention_is_faster(
            query, key
        )
        # The fused kernels take causality as a flag; a mask tensor is built
        # only when another mask must be combined with it, or for the
        # explicit path, or for a cache (whose unfilled keys are hidden).
        is_causal = (
            self.causal
            and cache is None
            and padding_mask is None
            and attention_mask is None
            and attention_bias is None
            and not explicit
        )
        visible = None
        if cache is not None or (self.causal and not is_causal):
            visible = self._visible_keys(
                ops.shape(x)[1], ops.shape(key)[1], cache_index
            )
        mask = merge_masks(padding_mask, attention_mask, visible)
        outputs = self._attend(
            query,
            key,
            value,
            mask,
            bias=attention_bias,
            is_causal=is_causal,
            explicit=explicit,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        if cache is None:
            return outputs
        if return_attention_scores:
            return (*outputs, cache)
        return outputs, cache

    def _update_cache(self, cache, cache_index, key, value):
        batch, _, heads, head_dim = key.shape
        check_shape(
            "cache",
            cache.shape,
            (batch, 2, heads, None, head_dim),
            "(batch, 2, num_kv_heads, max_length, head_dim), from "
            "`initial_cache()`",
        )
        update = ops.cast(_heads_first_cache(key, value), cache.dtype)
        return ops.slice_update(cache, (0, 0, 0, cache_index, 0), update)

    def _visible_keys(self, query_length, key_length, start_index):
        """`(query_length, key_length)`: which keys each query may see.

        Query `i` sits at position `start_index + i`. A causal layer sees up
        to that position; otherwise every key that has been written, which
        without a cache is every key.
        """
        if self.causal:
            return causal_mask(query_length, key_length, start_index)
        written = ops.arange(key_length) < start_index + query_length
        return ops.broadcast_to(written[None, :], (query_length, key_length))

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
            heads before positions as attention kernels read them.
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
        return ops.zeros(
            (batch_size, 2, heads, max_length, head_dim), self.compute_dtype
        )

    def get_config(self):
        return {
            **super().get_config(),
            "causal": self.causal,
            "rotary": self.rotary,
            "rotary_max_wavelength": self.rotary_max_wavelength,
        }


@keras.saving.register_keras_serializable(package="keras_tfm")
class MultiHeadCrossAttention(_MultiHeadAttention):
    """Multi-head attention from one sequence (`x`) to another (`context`).

    The decoder's attention over the encoder output. Queries come from `x`,
    keys and values from `context`; the two may differ in length and width.
    Attention runs through `keras.ops.dot_product_attention`.

    Masks: a Keras mask on `context` or an explicit `context_padding_mask`
    hides padding positions of the context; `attention_mask` hides any
    (query, key) pair.

    Args:
        num_heads: Number of attention heads.
        key_dim: Size of each head. Defaults to `width // num_heads` where
            `width` is the width of `x`.
        dropout: Dropout rate on the layer's output.
        use_bias: Whether the projections have biases.
        attention_scale: Multiplies the query-key logits; defaults to
            `1 / sqrt(head_dim)` (T5 uses 1).
        **kwargs: Standard layer arguments.

    Call arguments:
        x: Queries' source, of shape `(batch, q_len, width)`.
        context: Keys' and values' source, `(batch, k_len, context_width)`.
        context_padding_mask: Optional `(batch, k_len)` mask, true or 1 for
            real context tokens. Overrides the Keras mask of `context`.
        attention_mask: Optional `(batch, q_len, k_len)` mask.
        cache: Optional keys and values from `compute_cache(context)`, used
            instead of `context` so that a decoder does not project the
            same context at every step.
        return_attention_scores: Whether to also return the attention weights.
        training: Whether dropout is active.

    Returns:
        The output, of shape `(batch, q_len, width)`; with
        `return_attention_scores=True`, the tuple `(output, scores)` with
        scores of shape `(batch, num_heads, q_len, k_len)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import MultiHeadCrossAttention

    x = np.random.rand(2, 5, 16).astype("float32")
    context = np.random.rand(2, 7, 16).astype("float32")
    attention = MultiHeadCrossAttention(num_heads=4)
    outputs = attention(x, context)  # (2, 5, 16)
    cache = attention.compute_cache(context)  # once per context
    same_outputs = attention(x, cache=cache)
    ```
    """

    def __init__(
        self,
        num_heads,
        key_dim=None,
        dropout=0.0,
        use_bias=True,
        attention_scale=None,
        **kwargs,
    ):
        super().__init__(
            num_heads=num_heads,
            key_dim=key_dim,
            dropout=dropout,
            use_bias=use_bias,
            attention_scale=attention_scale,
            **kwargs,
        )

    def build(self, x_shape, context_shape):
        check_rank("x", x_shape, 3, "(batch, q_len, width)")
        check_rank("context", context_shape, 3, "(batch, k_len, width)")
        self._build_projections(x_shape, context_shape)

    def call(
        self,
        x,
        context=None,
        context_padding_mask=None,
        attention_mask=None,
        cache=None,
        return_attention_scores=False,
        training=None,
    ):
        if cache is None:
            check_cross_attention_inputs(x, context)
            if context_padding_mask is None:
                context_padding_mask = get_keras_mask(context)
            key = self.key_dense(context)
            value = self.value_dense(context)
        else:
            check_rank("x", x.shape, 3, "(batch, q_len, width)")
            heads, head_dim = self.key_dense.kernel.shape[1:]
            check_shape(
                "cache",
                cache.shape,
                (x.shape[0], 2, heads, None, head_dim),
                "(batch, 2, num_heads, k_len, head_dim), from "
                "`compute_cache()`",
            )
            key, value = _keys_and_values(cache)
        check_masks(
            x.shape,
            key.shape,
            context_padding_mask,
            attention_mask,
            padding_mask_name="context_padding_mask",
        )
        mask = merge_masks(context_padding_mask, attention_mask)
        query = self.query_dense(x)
        return self._attend(
            query,
            key,
            value,
            mask,
            is_causal=False,
            explicit=return_attention_scores
            or explicit_attention_is_faster(query, key),
            return_attention_scores=return_attention_scores,
            training=training,
        )

    def compute_cache(self, context):
        """Projects `context` to keys and values once, for decoding.

        Args:
            context: `(batch, k_len, context_width)`.

        Returns:
            `(batch, 2, num_heads, k_len, head_dim)`: keys at index 0 of
            axis 1, values at 1. Pass it as `cache` instead of `context`.
        """
        check_rank("context", context.shape, 3, "(batch, k_len, width)")
        return _heads_first_cache(
            self.key_dense(context), self.value_dense(context)
        )

    def get_config(self):
        config = super().get_config()
        del config["num_kv_heads"]
        return config


def split_attention_result(result, *, has_scores, has_cache):
    """`(outputs, scores, cache)` from what an attention layer returned.

    The layers return their output, then the scores when
    `return_attention_scores=True`, then the updated cache when given one
    (see `MultiHeadSelfAttention`); the parts not asked for are None here.
    """
    if not (has_scores or has_cache):
        return result, None, None
    outputs = result[0]
    scores = result[1] if has_scores else None
    cache = result[-1] if has_cache else None
    return outputs, scores, cache


def check_cross_attention_inputs(x, context):
    check_rank("x", x.shape, 3, "(batch, q_len, width)")
    check_rank("context", context.shape, 3, "(batch, k_len, width)")
    x_batch, context_batch = x.shape[0], context.shape[0]
    if None not in (x_batch, context_batch) and x_batch != context_batch:
        raise ValueError(
            "`x` and `context` must have the same batch size. Received: "
            f"x.shape={tuple(x.shape)}, context.shape={tuple(context.shape)}"
        )

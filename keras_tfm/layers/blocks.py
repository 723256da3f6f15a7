"""Transformer encoder and decoder blocks."""

import keras

from keras_tfm.layers.attention import (
    MultiHeadCrossAttention,
    MultiHeadSelfAttention,
    split_attention_result,
)
from keras_tfm.layers.feed_forward import ACTIVATIONS, FeedForward
from keras_tfm.layers.masks import get_keras_mask
from keras_tfm.layers.validation import (
    check_choice,
    check_positive_int,
    check_rank,
    check_rate,
)

NORM_LAYERS = {
    "layer": keras.layers.LayerNormalization,
    "rms": keras.layers.RMSNormalization,
}


class _TransformerBlock(keras.layers.Layer):
    """Options, sublayer builders and the residual step both blocks share."""

    def __init__(
        self,
        num_heads,
        ff_dim,
        dropout=0.1,
        activation="relu",
        norm_first=False,
        norm="layer",
        layer_norm_epsilon=1e-5,
        rotary=False,
        num_kv_heads=None,
        use_bias=True,
        rotary_max_wavelength=10000,
        key_dim=None,
        attention_scale=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("ff_dim", ff_dim)
        check_rate("dropout", dropout)
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("norm", norm, tuple(NORM_LAYERS))
        if num_kv_heads is not None:
            check_positive_int("num_kv_heads", num_kv_heads)
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.activation = activation
        self.norm_first = norm_first
        self.norm = norm
        self.layer_norm_epsilon = layer_norm_epsilon
        self.rotary = rotary
        self.num_kv_heads = num_kv_heads
        self.use_bias = use_bias
        self.rotary_max_wavelength = rotary_max_wavelength
        self.key_dim = key_dim
        self.attention_scale = attention_scale
        self.supports_masking = True

    def _build_self_attention(self, x_shape, causal):
        self.self_attention = MultiHeadSelfAttention(
            self.num_heads,
            key_dim=self.key_dim,
            num_kv_heads=self.num_kv_heads,
            dropout=self.dropout,
            use_bias=self.use_bias,
            attention_scale=self.attention_scale,
            causal=causal,
            rotary=self.rotary,
            rotary_max_wavelength=self.rotary_max_wavelength,
            name="self_attention",
            dtype=self.dtype_policy,
        )
        self.self_attention.build(x_shape)
        self.self_attention_norm = self._norm_layer(
            "self_attention_norm", x_shape
        )

    def _build_feed_forward(self, x_shape):
        self.feed_forward = FeedForward(
            self.ff_dim,
            activation=self.activation,
            dropout=self.dropout,
            use_bias=self.use_bias,
            name="feed_forward",
            dtype=self.dtype_policy,
        )
        self.feed_forward.build(x_shape)
        self.feed_forward_norm = self._norm_layer("feed_forward_norm", x_shape)

    def _norm_layer(self, name, x_shape):
        layer = NORM_LAYERS[self.norm](
            epsilon=self.layer_norm_epsilon, name=name, dtype=self.dtype_policy
        )
        layer.build(x_shape)
        return layer

    def _sublayer_input(self, x, norm):
        return norm(x) if self.norm_first else x

    def _add_residual(self, x, outputs, norm):
        """`x + outputs` (pre-norm) or `norm(x + outputs)` (post-norm)."""
        return x + outputs if self.norm_first else norm(x + outputs)

    def _self_attention_residual(
        self,
        x,
        *,
        padding_mask,
        attention_mask,
        return_attention_scores,
        training,
        attention_bias=None,
        cache=None,
        cache_index=0,
    ):
        """The self-attention sublayer with its residual.

        Without `padding_mask` or a cache, the Keras mask of the block's
        input is used. Returns `(x, scores, cache)`: `scores` is None unless
        asked for, `cache` the updated cache or None without one.
        """
        if padding_mask is None and cache is None:
            padding_mask = get_keras_mask(x)
        result = self.self_attention(
            self._sublayer_input(x, self.self_attention_norm),
            padding_mask=padding_mask,
            attention_mask=attention_mask,
            attention_bias=attention_bias,
            cache=cache,
            cache_index=cache_index,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        outputs, scores, cache = split_attention_result(
            result,
            has_scores=return_attention_scores,
            has_cache=cache is not None,
        )
        x = self._add_residual(x, outputs, self.self_attention_norm)
        return x, scores, cache

    def _feed_forward_residual(self, x, training):
        outputs = self.feed_forward(
            self._sublayer_input(x, self.feed_forward_norm), training=training
        )
        return self._add_residual(x, outputs, self.feed_forward_norm)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
            "activation": self.activation,
            "norm_first": self.norm_first,
            "norm": self.norm,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "rotary": self.rotary,
            "num_kv_heads": self.num_kv_heads,
            "use_bias": self.use_bias,
            "rotary_max_wavelength": self.rotary_max_wavelength,
            "key_dim": self.key_dim,
            "attention_scale": self.attention_scale,
        }


@keras.saving.register_keras_serializable(package="keras_tfm")
class EncoderBlock(_TransformerBlock):
    """Transformer encoder block: self-attention and feed-forward.

    Each sublayer is wrapped in a residual connection and a normalization,
    after the sum (post-norm, as in the paper) or before the sublayer
    (`norm_first=True`). The width is read from the input.

    Masks: a Keras mask on `x` (from a `mask_zero=True` embedding) or an
    explicit `padding_mask` hides padding tokens from attention, and the Keras
    mask is passed on to the output, so stacked blocks need no extra wiring.

    Args:
        num_heads: Number of attention heads; must divide the input width.
        ff_dim: Hidden width of the feed-forward network.
        dropout: Dropout rate on the output of each sublayer before it is
            added to the residual stream (the paper's residual dropout).
        activation: Feed-forward activation: `"relu"`, `"gelu"`,
            `"gelu_tanh"`, `"swiglu"` or `"geglu_tanh"`.
        norm_first: `False` (the paper's post-norm, `norm(x + f(x))`) or
            `True` (pre-norm, `x + f(norm(x))`, steadier for deep stacks).
        norm: `"layer"` (LayerNormalization) or `"rms"` (RMSNormalization).
        layer_norm_epsilon: Epsilon of the normalization layers.
        rotary: Whether self-attention applies rotary position embeddings.
        num_kv_heads: Key/value heads of self-attention, for grouped-query
            attention. Defaults to `num_heads`.
        use_bias: Whether the attention and feed-forward projections have
            biases.
        rotary_max_wavelength: Longest wavelength of the rotary embeddings
            (Hugging Face's `rope_theta`).
        key_dim: Size of each attention head; defaults to
            `width // num_heads`.
        attention_scale: Multiplies the query-key logits; defaults to
            `1 / sqrt(key_dim)` (T5 uses 1).
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: Input of shape `(batch, seq, width)`.
        padding_mask: Optional `(batch, seq)` mask, true or 1 for real tokens.
        attention_mask: Optional `(batch, seq, seq)` mask, true or 1 where a
            query may attend to a key.
        attention_bias: Optional float tensor added to the self-attention
            logits, broadcastable to `(batch, num_heads, seq, seq)` (T5's
            relative positions, from `RelativePositionBias`).
        return_attention_scores: Whether to also return the self-attention
            weights.
        training: Whether dropout is active.

    Returns:
        A tensor with the shape of `x`; with `return_attention_scores=True`,
        the tuple `(outputs, scores)` with scores of shape
        `(batch, num_heads, seq, seq)`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_tfm import EncoderBlock, PositionalEmbedding

    tokens = keras.Input(shape=(None,), dtype="int32")
    x = PositionalEmbedding(100, 32, 16, mask_zero=True)(tokens)
    x = EncoderBlock(num_heads=2, ff_dim=32)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(tokens, keras.layers.Dense(2)(x))
    logits = model(np.array([[4, 9, 2, 0], [7, 3, 0, 0]]))  # (2, 2)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Xiong et al., 2020 (pre-norm)](https://arxiv.org/abs/2002.04745)
    """

    def build(self, x_shape):
        check_rank("x", x_shape, 3, "(batch, seq, width)")
        self._build_self_attention(x_shape, causal=False)
        self._build_feed_forward(x_shape)

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
        x, scores, _ = self._self_attention_residual(
            x,
            padding_mask=padding_mask,
            attention_mask=attention_mask,
            attention_bias=attention_bias,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        x = self._feed_forward_residual(x, training)
        return (x, scores) if return_attention_scores else x


@keras.saving.register_keras_serializable(package="keras_tfm")
class DecoderBlock(_TransformerBlock):
    """Transformer decoder block: self-, cross-attention and feed-forward.

    Causal self-attention, cross-attention on the encoder output, and the
    feed-forward network.

    Self-attention is always causal: position `t` sees positions `<= t` only.
    With `cross_attention=True` (the paper's decoder) the block also attends
    to `context`, which must then be given; with `cross_attention=False` it is
    a decoder-only (GPT-style) block. Residuals and normalization as in
    `EncoderBlock`.

    Masks: a Keras mask on `x` or `padding_mask` hides padding tokens of the
    target; a Keras mask on `context` or `context_padding_mask` hides padding
    of the source; `attention_mask` further restricts self-attention. With no
    padding and no `attention_mask`, causal self-attention reaches the fused
    kernel's `is_causal` path with no mask tensor.

    Args:
        num_heads: Number of attention heads; must divide the input width.
        ff_dim: Hidden width of the feed-forward network.
        dropout: Dropout rate on the output of each sublayer before it is
            added to the residual stream (the paper's residual dropout).
        activation: Feed-forward activation: `"relu"`, `"gelu"`,
            `"gelu_tanh"`, `"swiglu"` or `"geglu_tanh"`.
        norm_first: `False` (the paper's post-norm, `norm(x + f(x))`) or
            `True` (pre-norm, `x + f(norm(x))`, steadier for deep stacks).
        norm: `"layer"` (LayerNormalization) or `"rms"` (RMSNormalization).
        layer_norm_epsilon: Epsilon of the normalization layers.
        rotary: Whether self-attention applies rotary position embeddings.
        num_kv_heads: Key/value heads of self-attention, for grouped-query
            attention. Defaults to `num_heads`.
        use_bias: Whether the attention and feed-forward projections have
            biases.
        rotary_max_wavelength: Longest wavelength of the rotary embeddings
            (Hugging Face's `rope_theta`).
        key_dim: Size of each attention head; defaults to
            `width // num_heads`.
        attention_scale: Multiplies the query-key logits; defaults to
            `1 / sqrt(key_dim)` (T5 uses 1).
        cross_attention: Whether the block attends to `context`.
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: Target-side input, `(batch, seq, width)`.
        context: Encoder output, `(batch, context_seq, context_width)`.
            Required when `cross_attention=True`, not allowed otherwise.
        padding_mask: Optional `(batch, seq)` mask for `x`.
        context_padding_mask: Optional `(batch, context_seq)` mask for
            `context`.
        attention_mask: Optional `(batch, seq, seq)` mask for self-attention,
            combined with the causal mask.
        attention_bias: Optional float tensor added to the self-attention
            logits, broadcastable to `(batch, num_heads, seq, key_length)`.
        cache: Optional self-attention key/value cache from
            `initial_cache()`, for incremental decoding: `x` holds the
            positions from `cache_index` on, and the updated cache is
            returned last. See `MultiHeadSelfAttention`.
        cache_index: Position of the first element of `x`, with `cache`.
        cross_attention_cache: Optional result of
            `compute_cross_attention_cache(context)`, used instead of
            `context` so that decoding steps do not project the encoder
            output again.
        return_attention_scores: Whether to also return the attention
            weights.
        training: Whether dropout is active.

    Returns:
        A tensor with the shape of `x`. With `return_attention_scores=True`,
        the tuple `(outputs, self_attention_scores, cross_attention_scores)`,
        of shapes `(batch, num_heads, seq, seq)` and
        `(batch, num_heads, seq, context_seq)`; a block without
        cross-attention returns `(outputs, self_attention_scores)`. With a
        `cache`, the updated cache is appended to the result.

    Example:

    ```python
    import numpy as np
    from keras_tfm import DecoderBlock

    target = np.random.rand(2, 5, 16).astype("float32")
    encoded = np.random.rand(2, 7, 16).astype("float32")
    outputs = DecoderBlock(num_heads=2, ff_dim=32)(target, encoded)
    gpt_block = DecoderBlock(num_heads=2, ff_dim=32, cross_attention=False)
    outputs = gpt_block(target)  # (2, 5, 16)

    # Incremental decoding: positions 0-3 at once, then position 4.
    cache = gpt_block.initial_cache(batch_size=2, max_length=5)
    _, cache = gpt_block(target[:, :4], cache=cache, cache_index=0)
    last, cache = gpt_block(target[:, 4:], cache=cache, cache_index=4)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def __init__(
        self,
        num_heads,
        ff_dim,
        dropout=0.1,
        activation="relu",
        norm_first=False,
        norm="layer",
        layer_norm_epsilon=1e-5,
        rotary=False,
        num_kv_heads=None,
        use_bias=True,
        rotary_max_wavelength=10000,
        key_dim=None,
        attention_scale=None,
        cross_attention=True,
        **kwargs,
    ):
        super().__init__(
            num_heads,
            ff_dim,
            dropout=dropout,
            activation=activation,
            norm_first=norm_first,
            norm=norm,
            layer_norm_epsilon=layer_norm_epsilon,
            rotary=rotary,
            num_kv_heads=num_kv_heads,
            use_bias=use_bias,
            rotary_max_wavelength=rotary_max_wavelength,
            key_dim=key_dim,
            attention_scale=attention_scale,
            **kwargs,
        )
        self.cross_attention = cross_attention

    def build(self, x_shape, context_shape=None):
        check_rank("x", x_shape, 3, "(batch, seq, width)")
        self._check_context(context_shape)
        self._build_self_attention(x_shape, causal=True)
        if self.cross_attention:
            check_rank("context", context_shape, 3, "(batch, seq, width)")
            self.cross_attention_layer = MultiHeadCrossAttention(
                self.num_heads,
                key_dim=self.key_dim,
                dropout=self.dropout,
                use_bias=self.use_bias,
                attention_scale=self.attention_scale,
                name="cross_attention",
                dtype=self.dtype_policy,
            )
            self.cross_attention_layer.build(x_shape, context_shape)
            self.cross_attention_norm = self._norm_layer(
                "cross_attention_norm", x_shape
            )
        self._build_feed_forward(x_shape)

    def _check_context(self, context, cross_attention_cache=None):
        if self.cross_attention and context is None:
            if cross_attention_cache is not None:
                return
            raise ValueError(
                "This DecoderBlock has `cross_attention=True`, so `context` "
                "(the encoder output) is required. Received: context=None. "
                "Build it with `cross_attention=False` for a decoder-only "
                "block."
            )
        if not self.cross_attention and (
            context is not None or cross_attention_cache is not None
        ):
            raise ValueError(
                "This DecoderBlock has `cross_attention=False`, so it takes "
                "no `context` or `cross_attention_cache`. Received one; build "
                "it with `cross_attention=True` to attend to an encoder "
                "output."
            )

    def call(
        self,
        x,
        context=None,
        padding_mask=None,
        context_padding_mask=None,
        attention_mask=None,
        attention_bias=None,
        cache=None,
        cache_index=0,
        cross_attention_cache=None,
        return_attention_scores=False,
        training=None,
    ):
        check_rank("x", x.shape, 3, "(batch, seq, width)")
        self._check_context(context, cross_attention_cache)
        x, self_scores, cache = self._self_attention_residual(
            x,
            padding_mask=padding_mask,
            attention_mask=attention_mask,
            attention_bias=attention_bias,
            return_attention_scores=return_attention_scores,
            training=training,
            cache=cache,
            cache_index=cache_index,
        )
        scores = (self_scores,)
        if self.cross_attention:
            result = self.cross_attention_layer(
                self._sublayer_input(x, self.cross_attention_norm),
                context,
                context_padding_mask=context_padding_mask,
                cache=cross_attention_cache,
                return_attention_scores=return_attention_scores,
                training=training,
            )
            outputs, cross_scores, _ = split_attention_result(
                result, has_scores=return_attention_scores, has_cache=False
            )
            x = self._add_residual(x, outputs, self.cross_attention_norm)
            scores += (cross_scores,)
        x = self._feed_forward_residual(x, training)
        result = (x, *scores) if return_attention_scores else (x,)
        if cache is not None:
            result += (cache,)
        return result if len(result) > 1 else x

    def initial_cache(self, batch_size, max_length):
        """An empty self-attention key/value cache for decoding.

        See `MultiHeadSelfAttention.initial_cache`.
        """
        return self.self_attention.initial_cache(batch_size, max_length)

    def compute_cross_attention_cache(self, context):
        """The cross-attention keys and values of `context`, computed once.

        See `MultiHeadCrossAttention.compute_cache`.
        """
        self._check_context(context)
        return self.cross_attention_layer.compute_cache(context)

    def get_config(self):
        return {**super().get_config(), "cross_attention": self.cross_attention}

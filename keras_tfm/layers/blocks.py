"""Transformer encoder and decoder blocks."""

import typing

import keras
from keras import ops

from keras_tfm.layers.block_base import TransformerBlock
from keras_tfm.layers.cross_attention import (
    MultiHeadCrossAttention,
    cross_attention_options,
)
from keras_tfm.layers.multi_head import AttentionResult, CachedResult
from keras_tfm.layers.options import LEGACY_POSITIONAL
from keras_tfm.layers.validation import check_rank


@keras.saving.register_keras_serializable(package="keras_tfm")
class EncoderBlock(TransformerBlock):
    """Transformer encoder block: self-attention and feed-forward.

    Each sublayer is wrapped in a residual connection and a normalization,
    after the sum (post-norm, as in the paper), before the sublayer
    (`"pre"`), before and after it (`"sandwich"`, Gemma 2) or after it only
    (`"output"`, OLMo 2), by `norm["placement"]`. With a parallel
    `residual`, attention and feed-forward both read the block's input.
    The width is read from the input.

    Masks: a Keras mask on `x` (from a `mask_zero=True` embedding) or an
    explicit `padding_mask` hides padding tokens from attention, and the Keras
    mask is passed on to the output, so stacked blocks need no extra wiring.

    Options come in one dict per concept, passed unchanged to the layer that
    uses them (see `keras_tfm.layers.options`); the flat arguments of
    keras_tfm 0.1 (`activation=`, `norm_first=`, `rotary=`, ...) still work.

    Args:
        num_heads: Number of attention heads; must divide the input width.
        ff_dim: Hidden width of the feed-forward network.
        dropout: Dropout rate on the output of each sublayer before it is
            added to the residual stream (the paper's residual dropout).
        attention: Dict of `MultiHeadSelfAttention` arguments
            (`num_kv_heads`, `key_dim`, `use_bias`, `attention_scale`,
            `rotary`, ...); with `"type": "disentangled"`, of
            `DisentangledSelfAttention` (DeBERTa), which then needs
            `relative_embeddings` at each call.
        feed_forward: Dict of `FeedForward` arguments (`activation`:
            `"relu"`, `"gelu"`, `"gelu_tanh"`, `"swiglu"`, `"geglu_tanh"`;
            `use_bias`).
        norm: `"layer"`, `"rms"`, or a dict with `"type"`, `"epsilon"`,
            `"placement"` (`"post"`, the default, `"pre"`, `"sandwich"`,
            `"output"`) and an RMS `"offset"` (Gemma's `1 + weight`).
        residual: `"sequential"` (default), `"parallel"`
            (`x + attn(norm_1(x)) + ff(norm_2(x))`, GPT-NeoX) or
            `"parallel_shared_norm"` (`x + attn(norm(x)) + ff(norm(x))`,
            Phi-2); parallel ones need pre-norm placement.
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: Input of shape `(batch, seq, width)`.
        padding_mask: Optional `(batch, seq)` mask, true or 1 for real tokens.
        attention_mask: Optional `(batch, seq, seq)` mask, true or 1 where a
            query may attend to a key.
        attention_bias: Optional float tensor added to the self-attention
            logits, broadcastable to `(batch, num_heads, seq, seq)` (T5's
            relative positions, from `RelativePositionBias`).
        relative_embeddings: The relative-position table of a
            disentangled attention (`attention={"type": "disentangled"}`,
            DeBERTa), `(2 * span, width)` from `RelativePositionEmbedding`;
            required by that attention, refused by the others.
        return_attention_scores: Whether to also return the self-attention
            weights.
        training: Whether dropout is active.

    Returns:
        A tensor with the shape of `x`; with `return_attention_scores=True`,
        an `AttentionResult(outputs, scores)` with scores of shape
        `(batch, num_heads, seq, seq)`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_tfm import EncoderBlock, PositionalEmbedding

    tokens = keras.Input(shape=(None,), dtype="int32")
    x = PositionalEmbedding(100, 32, 16, mask_zero=True)(tokens)
    x = EncoderBlock(
        num_heads=2, ff_dim=32, feed_forward={"activation": "gelu"},
        norm={"type": "rms", "placement": "pre"},
    )(x)
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
        relative_embeddings=None,
        return_attention_scores=False,
        training=None,
    ):
        check_rank("x", x.shape, 3, "(batch, seq, width)")
        block_input = x
        x, scores = self._self_attention_residual(
            x, padding_mask, attention_mask, attention_bias,
            return_attention_scores, training, relative_embeddings,
        )  # fmt: skip
        x = self._feed_forward_residual(x, block_input, training)
        if return_attention_scores:
            return AttentionResult(x, scores)
        return x


class DecoderResult(typing.NamedTuple):
    """A decoder block's output and attention weights, from a call with
    `return_attention_scores=True`.

    Attributes:
        outputs: `(batch, seq, width)`.
        self_attention_scores: `(batch, num_heads, seq, seq)`.
        cross_attention_scores: `(batch, num_heads, seq, context_seq)`, or
            None for a block without cross-attention.
    """

    outputs: typing.Any
    self_attention_scores: typing.Any
    cross_attention_scores: typing.Any


@keras.saving.register_keras_serializable(package="keras_tfm")
class DecoderBlock(TransformerBlock):
    """Transformer decoder block: self-, cross-attention and feed-forward.

    Causal self-attention, cross-attention on the encoder output, and the
    feed-forward network. Self-attention is always causal: position `t`
    sees positions `<= t` only. With `cross_attention=True` (the paper's
    decoder) the block also attends to `context`, which must then be given;
    with `cross_attention=False` it is a decoder-only (GPT-style) block.
    Residuals, normalization and options as in `EncoderBlock`; the
    cross-attention takes the `attention` options that are not about one
    sequence alone (not `num_kv_heads` or `rotary`).

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
        attention: Dict of `MultiHeadSelfAttention` arguments.
        feed_forward: Dict of `FeedForward` arguments.
        norm: `"layer"`, `"rms"`, or a dict with `"type"`, `"epsilon"`,
            `"placement"` and `"offset"`.
        cross_attention: Whether the block attends to `context`.
        residual: `"sequential"`, `"parallel"` or
            `"parallel_shared_norm"`, as in `EncoderBlock`; parallel ones
            for a block without cross-attention only.
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
        return_attention_scores: Whether to also return the attention
            weights.
        training: Whether dropout is active.

    Returns:
        A tensor with the shape of `x`. With `return_attention_scores=True`,
        a `DecoderResult(outputs, self_attention_scores,
        cross_attention_scores)`, of shapes `(batch, num_heads, seq, seq)`
        and `(batch, num_heads, seq, context_seq)` (None without
        cross-attention). Incremental decoding has its own method,
        `call_with_cache`.

    Attributes:
        self_attention: The `MultiHeadSelfAttention`.
        cross_attention_layer: The `MultiHeadCrossAttention`, or None.
        feed_forward: The `FeedForward`.
        has_cross_attention: Whether the block attends to a context.

    Example:

    ```python
    import numpy as np
    from keras_tfm import DecoderBlock

    target = np.random.rand(2, 5, 16).astype("float32")
    encoded = np.random.rand(2, 7, 16).astype("float32")
    outputs = DecoderBlock(num_heads=2, ff_dim=32)(target, encoded)
    gpt_block = DecoderBlock(
        num_heads=2, ff_dim=32, cross_attention=False,
        attention={"num_kv_heads": 1, "rotary": True},
    )
    outputs = gpt_block(target)  # (2, 5, 16)

    # Incremental decoding: positions 0-3 at once, then position 4.
    cache = gpt_block.initial_cache(batch_size=2, max_length=5)
    _, cache = gpt_block.call_with_cache(target[:, :4], cache, 0)
    last, cache = gpt_block.call_with_cache(target[:, 4:], cache, 4)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def __init__(
        self,
        num_heads=None,
        ff_dim=None,
        dropout=0.1,
        *legacy_arguments,
        attention=None,
        feed_forward=None,
        norm=None,
        cross_attention=True,
        residual="sequential",
        **kwargs,
    ):
        if len(legacy_arguments) > len(LEGACY_POSITIONAL):  # 0.1's order
            *legacy_arguments, cross_attention = legacy_arguments
        super().__init__(
            num_heads, ff_dim, dropout, *legacy_arguments,
            attention=attention, feed_forward=feed_forward, norm=norm,
            residual=residual, **kwargs,
        )  # fmt: skip
        if cross_attention and "type" in self.attention_options:
            raise ValueError(
                "A DecoderBlock with cross-attention takes the plain "
                "multi-head attention only. Received: attention['type']="
                f"{self.attention_options['type']!r}"
            )
        if cross_attention and residual != "sequential":
            raise ValueError(
                f"`residual={residual!r}` is for decoder-only blocks: with "
                "cross-attention the sublayers run in sequence. Received: "
                "cross_attention=True"
            )
        self.has_cross_attention = cross_attention
        self.cross_attention_layer = None

    def build(self, x_shape, context_shape=None):
        check_rank("x", x_shape, 3, "(batch, seq, width)")
        self._check_context(context_shape)
        self._build_self_attention(x_shape, causal=True)
        if self.has_cross_attention:
            check_rank("context", context_shape, 3, "(batch, seq, width)")
            self.cross_attention_layer = MultiHeadCrossAttention(
                **cross_attention_options(self.attention_options),
                dropout=self.dropout,
                name="cross_attention",
                dtype=self.dtype_policy,
            )
            self.cross_attention_layer.build(x_shape, context_shape)
            self.cross_attention_norm, self.cross_attention_output_norm = (
                self._norm_layers("cross_attention", x_shape)
            )
        self._build_feed_forward(x_shape)

    def _check_context(self, context, cross_attention_cache=None):
        given = context is not None or cross_attention_cache is not None
        if self.has_cross_attention and not given:
            raise ValueError(
                "This DecoderBlock has `cross_attention=True`, so `context` "
                "(the encoder output) is required. Received: context=None. "
                "Build it with `cross_attention=False` for a decoder-only "
                "block."
            )
        if not self.has_cross_attention and given:
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
        return_attention_scores=False,
        training=None,
    ):
        check_rank("x", x.shape, 3, "(batch, seq, width)")
        self._check_context(context)
        block_input = x
        x, self_scores = self._self_attention_residual(
            x, padding_mask, attention_mask, attention_bias,
            return_attention_scores, training,
        )  # fmt: skip
        x, cross_scores = self._cross_attention_residual(
            x, context, None, context_padding_mask, return_attention_scores,
            training,
        )  # fmt: skip
        x = self._feed_forward_residual(x, block_input, training)
        if return_attention_scores:
            return DecoderResult(x, self_scores, cross_scores)
        return x

    def call_with_cache(
        self,
        x,
        cache,
        cache_index,
        context=None,
        cross_attention_cache=None,
        context_padding_mask=None,
        attention_mask=None,
        attention_bias=None,
    ):
        """The block for the positions of `x`, with a key/value cache.

        See `MultiHeadSelfAttention.call_with_cache`; masks and biases refer
        to the cache's `max_length` keys. Dropout is off.

        Args:
            x: `(batch, n, width)`, positions `cache_index` on.
            cache: From `initial_cache()` or the previous call.
            cache_index: Position of `x[:, 0]` (an int or a scalar tensor).
            context: The encoder output, for a block with cross-attention
                (or `cross_attention_cache` instead).
            cross_attention_cache: From
                `compute_cross_attention_cache(context)`, so that decoding
                steps do not project the encoder output again.
            context_padding_mask: Optional `(batch, context_seq)` mask.
            attention_mask: Optional `(batch, n, max_length)` mask.
            attention_bias: Optional self-attention bias.

        Returns:
            `CachedResult(outputs, cache)`.
        """
        self._check_context(context, cross_attention_cache)
        block_input = x = ops.convert_to_tensor(x, dtype=self.compute_dtype)
        attention = self.self_attention.call_with_cache(
            self._sublayer_input(x, self.self_attention_norm),
            cache,
            cache_index,
            attention_mask=attention_mask,
            attention_bias=attention_bias,
        )
        x = self._add_residual(
            x, attention.outputs, self.self_attention_norm,
            self.self_attention_output_norm,
        )  # fmt: skip
        x, _ = self._cross_attention_residual(
            x, context, cross_attention_cache, context_padding_mask, False,
            False,
        )  # fmt: skip
        x = self._feed_forward_residual(x, block_input)
        return CachedResult(x, attention.cache)

    def _cross_attention_residual(
        self, x, context, cache, context_padding_mask, return_scores, training
    ):
        """`(x, scores)` after the cross-attention sublayer, if any."""
        if self.cross_attention_layer is None:
            return x, None
        result = self.cross_attention_layer(
            self._sublayer_input(x, self.cross_attention_norm),
            context,
            context_padding_mask=context_padding_mask,
            cache=cache,
            return_attention_scores=return_scores,
            training=training,
        )
        outputs = result.outputs if return_scores else result
        x = self._add_residual(
            x, outputs, self.cross_attention_norm,
            self.cross_attention_output_norm,
        )  # fmt: skip
        return x, result.scores if return_scores else None

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
        return {
            **super().get_config(),
            "cross_attention": self.has_cross_attention,
        }

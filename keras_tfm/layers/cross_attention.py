"""Multi-head cross-attention: from a sequence to another one."""

import keras

from keras_tfm.layers import kernels
from keras_tfm.layers.masks import check_masks, get_keras_mask, merge_masks
from keras_tfm.layers.multi_head import (
    AttentionResult,
    MultiHeadAttentionBase,
    heads_first_cache,
    keys_and_values,
)
from keras_tfm.layers.validation import check_rank, check_shape


@keras.saving.register_keras_serializable(package="keras_tfm")
class MultiHeadCrossAttention(MultiHeadAttentionBase):
    """Multi-head attention from one sequence (`x`) to another (`context`).

    The decoder's attention over the encoder output. Queries come from `x`,
    keys and values from `context`; the two may differ in length and width.
    Attention runs through `keras.ops.dot_product_attention` (see
    `keras_tfm.layers.kernels`).

    Masks: a Keras mask on `context` or an explicit `context_padding_mask`
    hides padding positions of the context; `attention_mask` hides any
    (query, key) pair.

    Args:
        num_heads: Number of attention heads.
        key_dim: Size of each head. Defaults to `width // num_heads` where
            `width` is the width of `x`.
        dropout: Dropout rate on the layer's output.
        use_bias: Whether the projections have biases: a bool, or a list of
            projection names (as for `MultiHeadSelfAttention`).
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
        `return_attention_scores=True`, an `AttentionResult(outputs,
        scores)` with scores of shape `(batch, num_heads, q_len, k_len)`.

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
            cache = self.compute_cache(context)
        else:
            self._check_cache(x, cache)
        key, value = keys_and_values(cache)
        check_masks(
            x.shape,
            key.shape,
            context_padding_mask,
            attention_mask,
            padding_mask_name="context_padding_mask",
        )
        query = self.query_dense(x)
        outputs, scores = self._attend(
            query,
            key,
            value,
            merge_masks(context_padding_mask, attention_mask),
            bias=None,
            is_causal=False,
            explicit=return_attention_scores
            or kernels.explicit_attention_is_faster(query, key),
            training=training,
        )
        if return_attention_scores:
            return AttentionResult(outputs, scores)
        return outputs

    def _check_cache(self, x, cache):
        check_rank("x", x.shape, 3, "(batch, q_len, width)")
        heads, head_dim = self.key_dense.kernel.shape[1:]
        check_shape(
            "cache",
            cache.shape,
            (x.shape[0], 2, heads, None, head_dim),
            "(batch, 2, num_heads, k_len, head_dim), from `compute_cache()`",
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
        return heads_first_cache(
            self.key_dense(context), self.value_dense(context)
        )

    def get_config(self):
        config = super().get_config()
        del config["num_kv_heads"]
        return config


def cross_attention_options(attention):
    """The `MultiHeadCrossAttention` arguments among self-attention's
    `attention` options (those that are not about one sequence alone)."""
    own = (
        "num_kv_heads", "causal", "rotary", "rotary_max_wavelength",
        "query_key_norm", "sliding_window",
    )  # fmt: skip
    return {key: value for key, value in attention.items() if key not in own}


def check_cross_attention_inputs(x, context):
    check_rank("x", x.shape, 3, "(batch, q_len, width)")
    check_rank("context", context.shape, 3, "(batch, k_len, width)")
    x_batch, context_batch = x.shape[0], context.shape[0]
    if None not in (x_batch, context_batch) and x_batch != context_batch:
        raise ValueError(
            "`x` and `context` must have the same batch size. Received: "
            f"x.shape={tuple(x.shape)}, context.shape={tuple(context.shape)}"
        )

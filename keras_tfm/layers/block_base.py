"""What the encoder and decoder blocks share: their options, the builders
of their sublayers and norms, and the residual step around each sublayer."""

import keras

from keras_tfm.layers.masks import get_keras_mask
from keras_tfm.layers.normalization import (
    normalized_input,
    residual_sum,
    sublayer_norms,
)
from keras_tfm.layers.options import (
    LEGACY_POSITIONAL,
    attention_layer,
    block_options,
    check_residual,
    feed_forward_layer,
)
from keras_tfm.layers.validation import check_rate


class TransformerBlock(keras.layers.Layer):
    """Options, sublayer builders and the residual step both blocks share."""

    def __init__(
        self,
        num_heads=None,
        ff_dim=None,
        dropout=0.1,
        *legacy_arguments,
        attention=None,
        feed_forward=None,
        norm=None,
        residual="sequential",
        **kwargs,
    ):
        # 0.1's blocks took every option by position too.
        kwargs.update(zip(LEGACY_POSITIONAL, legacy_arguments, strict=False))
        norm = kwargs.pop("norm", norm)
        options = block_options(
            kwargs, num_heads, ff_dim, attention, feed_forward, norm
        )
        super().__init__(**kwargs)
        check_rate("dropout", dropout)
        self.dropout = dropout
        self.attention_options = options["attention"]
        self.feed_forward_options = options["feed_forward"]
        self.norm_options = options["norm"]
        check_residual(residual, self.norm_options)
        self.residual = residual
        self.supports_masking = True

    @property
    def norm_first(self):
        return self.norm_options["placement"] == "pre"

    def _build_self_attention(self, x_shape, causal):
        self.self_attention = attention_layer(
            self.attention_options,
            causal=causal,
            dropout=self.dropout,
            name="self_attention",
            dtype=self.dtype_policy,
        )
        self.self_attention.build(x_shape)
        self.self_attention_norm, self.self_attention_output_norm = (
            self._norm_layers("self_attention", x_shape)
        )

    def _build_feed_forward(self, x_shape):
        self.feed_forward = feed_forward_layer(
            self.feed_forward_options,
            dropout=self.dropout,
            name="feed_forward",
            dtype=self.dtype_policy,
        )
        self.feed_forward.build(x_shape)
        self.feed_forward_norm, self.feed_forward_output_norm = None, None
        if self.residual != "parallel_shared_norm":
            self.feed_forward_norm, self.feed_forward_output_norm = (
                self._norm_layers("feed_forward", x_shape)
            )

    def _norm_layers(self, sublayer, x_shape):
        return sublayer_norms(
            self.norm_options, sublayer, x_shape, self.dtype_policy
        )

    def _sublayer_input(self, x, norm):
        return normalized_input(self.norm_options["placement"], x, norm)

    def _add_residual(self, x, outputs, norm, output_norm):
        return residual_sum(
            self.norm_options["placement"], x, outputs, norm, output_norm
        )

    def _self_attention_residual(
        self, x, padding_mask, attention_mask, bias, return_scores, training,
        relative_embeddings=None,
    ):  # fmt: skip
        """`(x, scores)` after the self-attention sublayer; without
        `padding_mask`, the Keras mask of `x` is used. The attention takes
        `relative_embeddings` only when given (a disentangled attention's
        table)."""
        if padding_mask is None:
            padding_mask = get_keras_mask(x)
        table = {}
        if relative_embeddings is not None:
            table = {"relative_embeddings": relative_embeddings}
        result = self.self_attention(
            self._sublayer_input(x, self.self_attention_norm),
            padding_mask=padding_mask,
            attention_mask=attention_mask,
            attention_bias=bias,
            return_attention_scores=return_scores,
            training=training,
            **table,
        )
        outputs = result.outputs if return_scores else result
        x = self._add_residual(
            x,
            outputs,
            self.self_attention_norm,
            self.self_attention_output_norm,
        )
        return x, result.scores if return_scores else None

    def _feed_forward_residual(self, x, block_input, training=None):
        """`x` plus the feed-forward of `x` or, with a parallel residual, of
        the block's input (through the attention's norm when shared)."""
        source, norm = x, self.feed_forward_norm
        if self.residual != "sequential":
            source = block_input
        if self.residual == "parallel_shared_norm":
            norm = self.self_attention_norm
        outputs = self.feed_forward(
            self._sublayer_input(source, norm), training=training
        )
        return self._add_residual(
            x, outputs, self.feed_forward_norm, self.feed_forward_output_norm
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.attention_options["num_heads"],
            "ff_dim": self.feed_forward_options["hidden_dim"],
            "dropout": self.dropout,
            "attention": self.attention_options,
            "feed_forward": self.feed_forward_options,
            "norm": self.norm_options,
            "residual": self.residual,
        }

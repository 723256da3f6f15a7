"""A decoder-only (GPT-style) language model."""

import keras
from keras import ops

from keras_tfm.layers import DecoderBlock, PositionalEmbedding
from keras_tfm.layers.options import block_options
from keras_tfm.layers.validation import check_positive_int
from keras_tfm.models.base import (
    FunctionalModel,
    make_blocks,
    run_stack,
    stack_norm,
)

_DEFAULTS = {
    "attention": {"num_heads": 4},
    "feed_forward": {"hidden_dim": 1024, "activation": "gelu"},
    "norm": {"placement": "pre"},
}


@keras.saving.register_keras_serializable(package="keras_tfm")
class CausalLM(FunctionalModel):
    """A decoder-only (GPT-style) language model.

    Pre-norm causal `DecoderBlock`s with a final norm. Positions are learned,
    or, with rotary attention, applied inside attention as rotary embeddings
    (then the embedding adds none). With no `padding_id` (the default, for
    packed training text) causal attention takes the fused kernel's
    `is_causal` path with no mask tensor.

    The model implements the decoding contract of `keras_tfm.generation`
    (`initial_cache` and `call_with_cache`), so `generation.generate`
    decodes it with a key/value cache.

    Args:
        vocab_size: Vocabulary size.
        sequence_length: Longest sequence (context window).
        num_layers: Number of decoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block (default 4); shorthand for
            `attention["num_heads"]`.
        ff_dim: Feed-forward hidden width (default 1024); shorthand for
            `feed_forward["hidden_dim"]`.
        dropout: Dropout rate on embeddings and sublayer outputs.
        attention: Dict of `MultiHeadSelfAttention` options for every block
            (`num_kv_heads`, `key_dim`, `use_bias`, `rotary`, ...). With
            `rotary`, positions are rotary and the embedding adds none.
        feed_forward: Dict of `FeedForward` options (`activation`, default
            `"gelu"`; `use_bias`).
        norm: Norm options for the blocks and the final norm: `"layer"`
            (default), `"rms"` or a dict (placement `"pre"` by default;
            `"sandwich"`, `"output"`; an RMS `"offset"`).
        residual: How each block's sublayers meet the residual stream:
            `"sequential"` (default), `"parallel"` or
            `"parallel_shared_norm"` (see `DecoderBlock`).
        embedding_scale: None, or a number the token embeddings are
            multiplied by before the blocks (Gemma's `sqrt(embed_dim)`),
            cast to the compute dtype first, as `transformers` does.
        logit_soft_cap: None, or a cap `c` for the logits:
            `c * tanh(logits / c)` (Gemma 2's final logit soft-capping).
        layer_overrides: None, or a list with one entry per block: None, or
            a dict with any of `"attention"`, `"feed_forward"`, `"norm"`,
            whose options are merged over the model's for that block only
            (Gemma 2's local layers:
            `{"attention": {"sliding_window": 4096}}`; SmolLM3's layers
            without positions: `{"attention": {"rotary": None}}`). A nested
            dict (`rotary`) is merged key by key. With `attention["rotary"]`
            set, the embedding adds no positions whatever the overrides.
        tie_embeddings: Whether the output projection reuses the embedding.
        output_bias: Whether an untied output projection has a bias.
        padding_id: A token id to treat as padding (masked in attention
            and left out of the loss), or None for none (packed text).
        name: Model name.
        **kwargs: Standard model arguments (`trainable`,
            `special_token_ids`, ...). The flat arguments of keras_tfm 0.1
            (`rotary=`, `num_kv_heads=`, `activation=`, `mask_zero=`,
            `layer_norm_epsilon=`, `use_bias=`, `rotary_max_wavelength=`)
            are still taken.

    Call arguments:
        tokens: Int token ids `(batch, seq)` (input name `tokens`).

    Returns:
        Next-token logits `(batch, seq, vocab_size)`.

    Attributes:
        embedding: The `PositionalEmbedding` (`embedding`); with
            `tie_embeddings=True` also the output projection.
        embedding_dropout: Dropout after the embedding.
        blocks: The `DecoderBlock`s (`decoder_block_0`, ...).
        final_norm: The LayerNormalization after the last block
            (`decoder_norm`).
        output_projection: The Dense layer to logits (`logits`), or None
            when the embedding is tied.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.CausalLM(
        vocab_size=100, sequence_length=32, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64, attention={"rotary": True, "num_kv_heads": 1},
        feed_forward={"activation": "swiglu"}, norm="rms",
    )
    logits = model(np.array([[5, 6, 7]]))  # (1, 3, 100)

    # The same logits one position at a time, with a key/value cache.
    cache = model.initial_cache(batch_size=1, max_length=3)
    first, cache = model.call_with_cache(np.array([[5, 6]]), cache, 0)
    last, cache = model.call_with_cache(np.array([[7]]), cache, 2)
    ```
    """

    def __init__(
        self,
        vocab_size,
        sequence_length,
        num_layers=4,
        embed_dim=256,
        num_heads=None,
        ff_dim=None,
        dropout=0.1,
        *,
        attention=None,
        feed_forward=None,
        norm=None,
        tie_embeddings=True,
        output_bias=True,
        padding_id=None,
        residual="sequential",
        embedding_scale=None,
        logit_soft_cap=None,
        layer_overrides=None,
        name="causal_lm",
        **kwargs,
    ):
        check_positive_int("num_layers", num_layers)
        output_bias = kwargs.get("use_bias", output_bias)
        if kwargs.pop("mask_zero", False):
            padding_id = 0
        options = block_options(
            kwargs, num_heads, ff_dim, attention, feed_forward, norm, _DEFAULTS
        )
        rotary = options["attention"]["rotary"] is not None
        if embedding_scale is not None and not rotary:
            raise ValueError(
                "`embedding_scale` scales token embeddings, so it needs "
                "rotary positions (attention['rotary']): with learned "
                "positions it would scale them too. Received: "
                f"embedding_scale={embedding_scale!r}, rotary=None"
            )
        self.embedding = PositionalEmbedding(
            vocab_size,
            sequence_length,
            embed_dim,
            position=None if rotary else "learned",
            mask_zero=padding_id is not None,
            padding_id=padding_id or 0,
            name="embedding",
        )
        self.embedding_scaling = _optional_layer(
            keras.layers.Rescaling, embedding_scale, "embedding_scale"
        )
        self.embedding_dropout = keras.layers.Dropout(
            dropout, name="embedding_dropout"
        )
        self.blocks = make_blocks(
            DecoderBlock, num_layers, "decoder", options, layer_overrides,
            dropout=dropout, cross_attention=False, residual=residual,
        )  # fmt: skip
        self.logit_capping = _optional_layer(
            SoftCap, logit_soft_cap, "logit_soft_cap"
        )
        self.final_norm = stack_norm("decoder", True, options["norm"])
        self.output_projection = (
            None
            if tie_embeddings
            else keras.layers.Dense(
                vocab_size, use_bias=output_bias, name="logits"
            )
        )

        tokens = keras.Input((None,), dtype="int32", name="tokens")
        x = self.embedding_dropout(self._embed(tokens))
        x = run_stack(x, self.blocks)
        super().__init__(tokens, self._logits(x), name=name, **kwargs)

        self.vocab_size = vocab_size
        self.sequence_length = sequence_length
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.attention_options = options["attention"]
        self.feed_forward_options = options["feed_forward"]
        self.norm_options = options["norm"]
        self.tie_embeddings = tie_embeddings
        self.output_bias = output_bias
        self.padding_id = padding_id
        self.residual = residual
        self.embedding_scale = embedding_scale
        self.logit_soft_cap = logit_soft_cap
        self.layer_overrides = layer_overrides

    def _embed(self, tokens, start_index=0):
        x = self.embedding(tokens, start_index=start_index)
        if self.embedding_scaling is None:
            return x
        return self.embedding_scaling(x)

    def _logits(self, x):
        x = self.final_norm(x)
        if self.output_projection is None:
            logits = self.embedding(x, reverse=True)
        else:
            logits = self.output_projection(x)
        if self.logit_capping is None:
            return logits
        return self.logit_capping(logits)

    def initial_cache(self, batch_size, max_length):
        """An empty key/value cache: one tensor per block.

        Args:
            batch_size: Number of sequences decoded together.
            max_length: Longest sequence the cache holds.

        Returns:
            A tuple with one `(batch_size, 2, num_kv_heads, max_length,
            head_dim)` tensor per block (see
            `MultiHeadSelfAttention.initial_cache`).
        """
        return tuple(
            block.initial_cache(batch_size, max_length) for block in self.blocks
        )

    def call_with_cache(self, tokens, cache, cache_index):
        """The forward pass for positions from `cache_index` on, with a cache.

        Runs the model on `tokens` only, attending to the keys and values of
        earlier positions held in `cache`, and writes their own. A prefill
        is a call with the whole prompt at `cache_index=0`; a decoding step
        a call with one token. Dropout is off.

        Args:
            tokens: Int token ids `(batch, n)` at positions `cache_index` to
                `cache_index + n - 1`.
            cache: From `initial_cache()` or the previous call.
            cache_index: Position of `tokens[:, 0]` (an int or a scalar
                tensor).

        Returns:
            `(logits, cache)`: logits `(batch, n, vocab_size)` and the
            updated cache.
        """
        x = self._embed(tokens, start_index=cache_index)
        new_cache = []
        for block, block_cache in zip(self.blocks, cache, strict=True):
            x, block_cache = block.call_with_cache(x, block_cache, cache_index)
            new_cache.append(block_cache)
        return self._logits(x), tuple(new_cache)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "sequence_length": self.sequence_length,
            "num_layers": self.num_layers,
            "embed_dim": self.embed_dim,
            "num_heads": self.attention_options["num_heads"],
            "ff_dim": self.feed_forward_options["hidden_dim"],
            "dropout": self.dropout,
            "attention": self.attention_options,
            "feed_forward": self.feed_forward_options,
            "norm": self.norm_options,
            "tie_embeddings": self.tie_embeddings,
            "output_bias": self.output_bias,
            "padding_id": self.padding_id,
            "residual": self.residual,
            "embedding_scale": self.embedding_scale,
            "logit_soft_cap": self.logit_soft_cap,
            "layer_overrides": self.layer_overrides,
        }


def _optional_layer(layer_class, value, name):
    """`layer_class(value, name=name)`, or None for a None `value`."""
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or value <= 0:
        raise ValueError(
            f"`{name}` must be None or a positive number. Received: "
            f"{name}={value!r}"
        )
    return layer_class(value, name=name)


@keras.saving.register_keras_serializable(package="keras_tfm")
class SoftCap(keras.layers.Layer):
    """Squashes values smoothly into `(-cap, cap)`: `cap * tanh(x / cap)`.

    Gemma 2's soft-capping of the final logits. Masks pass through.

    Args:
        cap: The bound, a positive number.
        **kwargs: Standard layer arguments.

    Call arguments:
        x: Any tensor.

    Returns:
        A tensor with the shape and dtype of `x`.

    Example:

    ```python
    import numpy as np
    from keras_tfm.models.causal_lm import SoftCap

    capped = SoftCap(30.0)(np.array([1.0, 100.0]))  # [~1.0, ~29.9]
    ```
    """

    def __init__(self, cap, **kwargs):
        super().__init__(**kwargs)
        if cap <= 0:
            raise ValueError(
                f"`cap` must be a positive number. Received: cap={cap!r}"
            )
        self.cap = cap
        self.supports_masking = True

    def call(self, x):
        cap = ops.cast(self.cap, x.dtype)
        return cap * ops.tanh(x / cap)

    def compute_output_shape(self, x_shape):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "cap": self.cap}


def causal_lm(*args, **kwargs):
    """Builds a `CausalLM`; takes the same arguments.

    Args:
        *args: Positional arguments of `CausalLM`.
        **kwargs: Keyword arguments of `CausalLM`.

    Returns:
        A `CausalLM` from int tokens `(batch, seq)` (input name `tokens`)
        to next-token logits `(batch, seq, vocab_size)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.causal_lm(
        vocab_size=100, sequence_length=32, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64, attention={"rotary": True},
    )
    logits = model(np.array([[5, 6, 7]]))  # (1, 3, 100)
    ```
    """
    return CausalLM(*args, **kwargs)

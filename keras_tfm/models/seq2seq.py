"""The encoder-decoder Transformer of "Attention Is All You Need"."""

import keras
from keras import ops

from keras_tfm.layers import (
    DecoderBlock,
    EncoderBlock,
    PositionalEmbedding,
    RelativePositionBias,
)
from keras_tfm.layers.options import block_options
from keras_tfm.layers.validation import check_positive_int
from keras_tfm.models.base import (
    FunctionalModel,
    make_blocks,
    run_stack,
    stack_norm,
)

_DEFAULTS = {
    "attention": {"num_heads": 8},
    "feed_forward": {"hidden_dim": 2048},
}


@keras.saving.register_keras_serializable(package="keras_tfm")
class Seq2SeqTransformer(FunctionalModel):
    """The encoder-decoder Transformer of "Attention Is All You Need".

    The defaults are the paper's base model. Token id `padding_id` (0) is
    padding in both inputs and is masked throughout (and, through the Keras
    mask on the logits, left out of the loss). Embeddings are scaled by
    `sqrt(embed_dim)` and followed by dropout, as in the paper.

    With one vocabulary (`target_vocab_size` unset or equal to
    `vocab_size`) the encoder and the decoder share one embedding, and with
    `tie_embeddings=True` the output projection is that matrix too, with no
    bias; with a 37,000-token vocabulary the base model then has 63,082,496
    weights. With two vocabularies, tying shares the decoder embedding with
    the output projection only.

    The model implements the decoding contract of `keras_tfm.generation`:
    `initial_cache` encodes the source once and computes every
    cross-attention layer's keys and values, and `call_with_cache` runs the
    decoder on new target positions.

    Args:
        vocab_size: Source vocabulary size (and target, unless
            `target_vocab_size` is given).
        sequence_length: Longest source or target sequence.
        num_layers: Number of encoder blocks and of decoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block (default 8); shorthand for
            `attention["num_heads"]`.
        ff_dim: Feed-forward hidden width (default 2048); shorthand for
            `feed_forward["hidden_dim"]`.
        dropout: Dropout rate on embeddings and on each sublayer's output.
        attention: Dict of `MultiHeadSelfAttention` options for every block
            (`key_dim`, `use_bias`, `attention_scale`, ...); the decoder's
            cross-attention takes those that apply to it.
        feed_forward: Dict of `FeedForward` options (`activation`, default
            `"relu"`; `use_bias`).
        norm: Norm options (`"type"`, `"epsilon"`, `"placement"`: `"post"`
            by default, the paper's).
        target_vocab_size: Target vocabulary size, if different.
        tie_embeddings: Whether to share embedding and output matrices.
        output_bias: Whether an untied output projection has a bias.
        position: `"sinusoidal"` (the paper), `"learned"`, or `None` (with
            relative positions).
        stack_norms: Whether each stack ends with a normalization
            (`encoder_norm`, `decoder_norm`). Defaults to every placement
            but `"post"` (which already ends in a norm); `True` with
            post-norm blocks matches `torch.nn.Transformer`.
        relative_position_buckets: With a number, each stack adds T5's
            learned relative-position bias (`RelativePositionBias`, one per
            stack, shared by its blocks) to its self-attention logits. Use
            `position=None` with it.
        relative_position_max_distance: Distance from which relative
            positions share the last bucket.
        scale_embeddings: Whether token embeddings are multiplied by
            `sqrt(embed_dim)` (the paper).
        scale_tied_logits: Whether the decoder's output is multiplied by
            `embed_dim ** -0.5` before the tied projection (T5).
        decoder_mask_zero: Whether the target's `padding_id` is padding,
            hidden from self-attention and left out of the loss through the
            Keras mask. T5 starts every target with its padding id: `False`.
        padding_id: The padding token id of both inputs.
        name: Model name.
        **kwargs: Standard model arguments (`trainable`,
            `special_token_ids`, ...). The flat arguments of keras_tfm 0.1
            (`norm_first=`, `final_norm=`, `activation=`, `key_dim=`,
            `use_bias=`, `layer_norm_epsilon=`, ...) are still taken.

    Call arguments:
        inputs: `{"encoder_tokens": (batch, src_len), "decoder_tokens":
            (batch, tgt_len)}` int tensors.

    Returns:
        Logits `(batch, tgt_len, target_vocab_size)`.

    Attributes:
        encoder_embedding: The source `PositionalEmbedding` (`embedding`
            when shared, else `encoder_embedding`).
        decoder_embedding: The target `PositionalEmbedding`; the same layer
            as `encoder_embedding` when the vocabulary is shared.
        encoder_dropout, decoder_dropout: Dropout after each embedding.
        encoder_blocks: The `EncoderBlock`s (`encoder_block_0`, ...).
        decoder_blocks: The `DecoderBlock`s (`decoder_block_0`, ...).
        encoder_norm, decoder_norm: The final normalization of each stack,
            or None.
        encoder_position_bias, decoder_position_bias: The
            `RelativePositionBias` of each stack, or None.
        output_projection: The Dense layer to logits (`logits`), or None
            when tied to `decoder_embedding`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.Seq2SeqTransformer(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64,
    )
    source = np.array([[5, 6, 7, 0]])
    logits = model({
        "encoder_tokens": source,
        "decoder_tokens": np.array([[1, 8, 9]]),
    })  # (1, 3, 100)

    # The same logits with the encoder run once and a key/value cache.
    cache = model.initial_cache(1, max_length=3, encoder_tokens=source)
    first, cache = model.call_with_cache(np.array([[1, 8]]), cache, 0)
    last, cache = model.call_with_cache(np.array([[9]]), cache, 2)
    ```
    """

    def __init__(
        self,
        vocab_size,
        sequence_length,
        num_layers=6,
        embed_dim=512,
        num_heads=None,
        ff_dim=None,
        dropout=0.1,
        *,
        attention=None,
        feed_forward=None,
        norm=None,
        target_vocab_size=None,
        tie_embeddings=True,
        output_bias=True,
        position="sinusoidal",
        stack_norms=None,
        relative_position_buckets=None,
        relative_position_max_distance=128,
        scale_embeddings=True,
        scale_tied_logits=False,
        decoder_mask_zero=True,
        padding_id=0,
        name="seq2seq_transformer",
        **kwargs,
    ):
        check_positive_int("num_layers", num_layers)
        output_bias = kwargs.get("use_bias", output_bias)
        stack_norms = kwargs.pop("final_norm", stack_norms)
        options = block_options(
            kwargs, num_heads, ff_dim, attention, feed_forward, norm, _DEFAULTS
        )
        shared = target_vocab_size in (None, vocab_size)

        def embedding(vocab, layer_name):
            # The encoder's padding mask is computed from its tokens, so
            # `mask_zero` matters for the decoder's side only.
            return PositionalEmbedding(
                vocab,
                sequence_length,
                embed_dim,
                position=position,
                mask_zero=decoder_mask_zero,
                padding_id=padding_id,
                scale_embeddings=scale_embeddings,
                name=layer_name,
            )

        self.encoder_embedding = embedding(
            vocab_size, "embedding" if shared else "encoder_embedding"
        )
        self.decoder_embedding = (
            self.encoder_embedding
            if shared
            else embedding(target_vocab_size or vocab_size, "decoder_embedding")
        )
        self.encoder_dropout = keras.layers.Dropout(
            dropout, name="encoder_dropout"
        )
        self.decoder_dropout = keras.layers.Dropout(
            dropout, name="decoder_dropout"
        )
        self.encoder_blocks = make_blocks(
            EncoderBlock, num_layers, "encoder", options, dropout=dropout
        )
        self.decoder_blocks = make_blocks(
            DecoderBlock, num_layers, "decoder", options, dropout=dropout
        )
        if stack_norms is None:
            stack_norms = options["norm"]["placement"] != "post"
        self.encoder_norm, self.decoder_norm = (
            stack_norm(stack, stack_norms, options["norm"])
            for stack in ("encoder", "decoder")
        )
        self.encoder_position_bias, self.decoder_position_bias = (
            None
            if relative_position_buckets is None
            else RelativePositionBias(
                options["attention"]["num_heads"],
                relative_position_buckets,
                relative_position_max_distance,
                bidirectional=stack == "encoder",
                name=f"{stack}_position_bias",
            )
            for stack in ("encoder", "decoder")
        )
        self.output_projection = (
            None
            if tie_embeddings
            else keras.layers.Dense(
                target_vocab_size or vocab_size,
                use_bias=output_bias,
                name="logits",
            )
        )

        self.vocab_size = vocab_size
        self.sequence_length = sequence_length
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.attention_options = options["attention"]
        self.feed_forward_options = options["feed_forward"]
        self.norm_options = options["norm"]
        self.target_vocab_size = target_vocab_size
        self.tie_embeddings = tie_embeddings
        self.output_bias = output_bias
        self.position = position
        self.stack_norms = stack_norms
        self.relative_position_buckets = relative_position_buckets
        self.relative_position_max_distance = relative_position_max_distance
        self.scale_embeddings = scale_embeddings
        self.scale_tied_logits = scale_tied_logits
        self.decoder_mask_zero = decoder_mask_zero
        self.padding_id = padding_id

        encoder_tokens = keras.Input(
            (None,), dtype="int32", name="encoder_tokens"
        )
        decoder_tokens = keras.Input(
            (None,), dtype="int32", name="decoder_tokens"
        )
        context = self.encode(encoder_tokens)
        x = self.decoder_dropout(self.decoder_embedding(decoder_tokens))
        x = run_stack(
            x,
            self.decoder_blocks,
            context=context,
            context_padding_mask=ops.not_equal(encoder_tokens, self.padding_id),
            attention_bias=self._position_bias(self.decoder_position_bias, x),
        )
        super().__init__(
            {
                "encoder_tokens": encoder_tokens,
                "decoder_tokens": decoder_tokens,
            },
            self._logits(x),
            name=name,
            **kwargs,
        )

    def encode(self, encoder_tokens):
        """The encoder's output for `encoder_tokens`, computed once.

        Args:
            encoder_tokens: Int source ids `(batch, src_len)`, `padding_id`
                for padding.

        Returns:
            `(batch, src_len, embed_dim)`.
        """
        padding_mask = ops.not_equal(encoder_tokens, self.padding_id)
        x = self.encoder_dropout(self.encoder_embedding(encoder_tokens))
        return run_stack(
            x,
            self.encoder_blocks,
            self.encoder_norm,
            padding_mask=padding_mask,
            attention_bias=self._position_bias(self.encoder_position_bias, x),
        )

    @staticmethod
    def _position_bias(layer, x, key_length=None, start_index=0):
        if layer is None:
            return None
        return layer(x, key_length=key_length, start_index=start_index)

    def _logits(self, x):
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        if self.output_projection is not None:
            return self.output_projection(x)
        if self.scale_tied_logits:
            x = x * ops.cast(self.decoder_embedding.embed_dim**-0.5, x.dtype)
        return self.decoder_embedding(x, reverse=True)

    def initial_cache(self, batch_size, max_length, encoder_tokens=None):
        """Encodes the source and returns an empty decoder cache.

        Args:
            batch_size: Number of sequences decoded together.
            max_length: Longest target sequence the cache holds.
            encoder_tokens: Int source ids `(batch_size, src_len)`, 0 for
                padding.

        Returns:
            A dict: `"self_attention"`, one empty `(batch, 2, num_heads,
            max_length, head_dim)` key/value cache per decoder block;
            `"cross_attention"`, each block's keys and values of the
            encoder output; `"context_padding_mask"`, `(batch, src_len)`.
        """
        if encoder_tokens is None:
            raise ValueError(
                "A Seq2SeqTransformer decodes from a source: pass "
                "`encoder_tokens` (to `generation.generate`, a prompt dict "
                "with keys 'encoder_tokens' and 'decoder_tokens'). Received: "
                "encoder_tokens=None"
            )
        context = self.encode(encoder_tokens)
        return {
            "self_attention": tuple(
                block.initial_cache(batch_size, max_length)
                for block in self.decoder_blocks
            ),
            "cross_attention": tuple(
                block.compute_cross_attention_cache(context)
                for block in self.decoder_blocks
            ),
            "context_padding_mask": ops.not_equal(
                encoder_tokens, self.padding_id
            ),
        }

    def call_with_cache(self, tokens, cache, cache_index):
        """The decoder on target positions from `cache_index` on.

        See `CausalLM.call_with_cache`; the encoder's part of the cache is
        read, not changed.

        Args:
            tokens: Int target ids `(batch, n)` at positions `cache_index`
                to `cache_index + n - 1`.
            cache: From `initial_cache()` or the previous call.
            cache_index: Position of `tokens[:, 0]`.

        Returns:
            `(logits, cache)`: logits `(batch, n, target_vocab_size)` and
            the updated cache.
        """
        x = self.decoder_embedding(tokens, start_index=cache_index)
        max_length = ops.shape(cache["self_attention"][0])[3]
        attention_bias = self._position_bias(
            self.decoder_position_bias, x, max_length, cache_index
        )
        self_attention_cache = []
        for block, block_cache, cross_attention_cache in zip(
            self.decoder_blocks,
            cache["self_attention"],
            cache["cross_attention"],
            strict=True,
        ):
            x, block_cache = block.call_with_cache(
                x,
                block_cache,
                cache_index,
                cross_attention_cache=cross_attention_cache,
                context_padding_mask=cache["context_padding_mask"],
                attention_bias=attention_bias,
            )
            self_attention_cache.append(block_cache)
        new_cache = {**cache, "self_attention": tuple(self_attention_cache)}
        return self._logits(x), new_cache

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
            "target_vocab_size": self.target_vocab_size,
            "tie_embeddings": self.tie_embeddings,
            "output_bias": self.output_bias,
            "position": self.position,
            "stack_norms": self.stack_norms,
            "relative_position_buckets": self.relative_position_buckets,
            "relative_position_max_distance": (
                self.relative_position_max_distance
            ),
            "scale_embeddings": self.scale_embeddings,
            "scale_tied_logits": self.scale_tied_logits,
            "decoder_mask_zero": self.decoder_mask_zero,
            "padding_id": self.padding_id,
        }


def seq2seq_transformer(*args, **kwargs):
    """Builds a `Seq2SeqTransformer`; takes the same arguments.

    Args:
        *args: Positional arguments of `Seq2SeqTransformer`.
        **kwargs: Keyword arguments of `Seq2SeqTransformer`.

    Returns:
        A `Seq2SeqTransformer` taking `{"encoder_tokens": (batch, src_len),
        "decoder_tokens": (batch, tgt_len)}` int tensors and returning
        logits `(batch, tgt_len, target_vocab_size)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.seq2seq_transformer(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64,
    )
    logits = model({
        "encoder_tokens": np.array([[5, 6, 7, 0]]),
        "decoder_tokens": np.array([[1, 8, 9]]),
    })  # (1, 3, 100)
    ```
    """
    return Seq2SeqTransformer(*args, **kwargs)

"""The encoder-decoder Transformer of "Attention Is All You Need"."""

import keras
from keras import ops

from keras_tfm.layers import (
    DecoderBlock,
    EncoderBlock,
    PositionalEmbedding,
    RelativePositionBias,
)
from keras_tfm.layers.normalization import normalization
from keras_tfm.layers.options import block_options
from keras_tfm.layers.positional import SINUSOIDS, sinusoid
from keras_tfm.layers.validation import (
    check_choice,
    check_non_negative_int,
    check_positive_int,
)
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
STACK_POSITION_KEYS = ("type", "offset", "sinusoid")


def stack_position_options(stack_positions):
    """`stack_positions` completed with its defaults, checked."""
    if stack_positions is None:
        return None
    if not isinstance(stack_positions, dict):
        raise ValueError(
            "`stack_positions` must be None or a dict with keys among "
            f"{list(STACK_POSITION_KEYS)}. Received: "
            f"stack_positions={stack_positions!r}"
        )
    for key in stack_positions:
        check_choice("stack_positions key", key, STACK_POSITION_KEYS)
    options = {
        "type": "learned", "offset": 0, "sinusoid": "interleaved",
        **stack_positions,
    }  # fmt: skip
    check_choice(
        "stack_positions['type']", options["type"], ("learned", "sinusoidal")
    )
    check_non_negative_int("stack_positions['offset']", options["offset"])
    check_choice("stack_positions['sinusoid']", options["sinusoid"], SINUSOIDS)
    return options


@keras.saving.register_keras_serializable(package="keras_tfm")
class StackPositions(keras.layers.Layer):
    """Position vectors added to one stack's embeddings.

    A `Seq2SeqTransformer` with `stack_positions` shares its token
    embedding between the stacks but gives each stack its own positions
    (BART's two learned tables, Marian's and M2M-100's fixed sinusoids):
    this layer adds them after the (scaled) token embedding.

    Args:
        sequence_length: Longest sequence.
        type: `"learned"`, a table of `sequence_length + offset` rows, or
            `"sinusoidal"`, a fixed signal with no weights.
        offset: Position `i` reads row `i + offset` of the table, or the
            sinusoid of position `i + offset` (BART's and M2M-100's 2).
        sinusoid: The sinusoid's channel order: `"interleaved"` (the
            paper's: sine and cosine alternate), `"halves"` (the paper's
            sines, then its cosines: Marian) or `"tensor2tensor"` (sines
            then cosines of `dim // 2` wavelengths from 1 to 10000:
            fairseq's, M2M-100's).
        **kwargs: Standard layer arguments.

    Call arguments:
        x: Embeddings `(batch, seq, dim)`.
        start_index: Position of `x[:, 0]`, for cached decoding.

    Returns:
        `x` plus its positions, `(batch, seq, dim)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm.models.seq2seq import StackPositions

    x = np.zeros((2, 5, 8), "float32")
    StackPositions(16, type="learned", offset=2)(x)  # (2, 5, 8)
    StackPositions(16, type="sinusoidal", sinusoid="halves")(x)
    ```
    """

    def __init__(
        self,
        sequence_length,
        type="learned",
        offset=0,
        sinusoid="interleaved",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("sequence_length", sequence_length)
        options = stack_position_options(
            {"type": type, "offset": offset, "sinusoid": sinusoid}
        )
        self.sequence_length = sequence_length
        self.type = options["type"]
        self.offset = offset
        self.sinusoid = sinusoid
        self.supports_masking = True

    def build(self, x_shape):
        if self.type == "learned":
            self.embeddings = self.add_weight(
                name="embeddings",
                shape=(self.sequence_length + self.offset, x_shape[-1]),
                initializer="uniform",
            )

    def call(self, x, start_index=0):
        length = ops.shape(x)[1]
        if self.type == "learned":
            positions = ops.take(
                self.embeddings,
                ops.arange(length) + start_index + self.offset,
                axis=0,
            )
        else:
            positions = sinusoid(
                length, x.shape[-1], self.sinusoid, start_index + self.offset
            )
        return x + ops.cast(positions, x.dtype)[None]

    def compute_output_shape(self, x_shape):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "type": self.type,
            "offset": self.offset,
            "sinusoid": self.sinusoid,
        }


@keras.saving.register_keras_serializable(package="keras_tfm")
class LogitsBias(keras.layers.Layer):
    """A fixed bias added to the logits: a non-trainable weight, one value
    per token (BART's `final_logits_bias`, which stays out of training).

    Args:
        **kwargs: Standard layer arguments.

    Call arguments:
        logits: `(batch, seq, vocab)`.

    Returns:
        `logits` plus the bias.

    Example:

    ```python
    import numpy as np
    from keras_tfm.models.seq2seq import LogitsBias

    LogitsBias()(np.zeros((1, 3, 10), "float32"))  # zeros until loaded
    ```
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, logits_shape):
        self.bias = self.add_weight(
            name="bias",
            shape=(logits_shape[-1],),
            initializer="zeros",
            trainable=False,
        )

    def call(self, logits):
        return logits + ops.cast(self.bias, logits.dtype)

    def compute_output_shape(self, logits_shape):
        return logits_shape


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
            `target_vocab_size` is given); with `encoder_features`, the
            target's.
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
            relative positions or `stack_positions`).
        stack_positions: None, or a dict giving each stack positions of its
            own, added after the token embedding (which the stacks then
            share without positions; use `position=None`): `"type"`,
            `"learned"` (default; a table per stack) or `"sinusoidal"`;
            `"offset"`, rows (or sinusoid positions) before position 0;
            `"sinusoid"`, the channel order of a sinusoid (see
            `StackPositions`). BART: `{"offset": 2}`.
        stack_norms: Whether each stack ends with a normalization
            (`encoder_norm`, `decoder_norm`). Defaults to every placement
            but `"post"` (which already ends in a norm); `True` with
            post-norm blocks matches `torch.nn.Transformer`.
        embedding_norm: Whether each stack normalizes its embeddings
            (positions added) before the dropout and the first block, with
            the blocks' norm options (BART's `layernorm_embedding`).
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
        logits_bias: Whether a fixed, non-trainable bias (`LogitsBias`) is
            added to the logits (BART's `final_logits_bias`).
        decoder_mask_zero: Whether the target's `padding_id` is padding,
            hidden from self-attention and left out of the loss through the
            Keras mask. T5 starts every target with its padding id: `False`.
        padding_id: The padding token id of both inputs.
        encoder_features: None (the encoder embeds token ids), or a dict of
            `keras_tfm.layers.audio.AudioEmbedding` options (`channels`,
            and `sequence_length` where the encoder's differs): the encoder
            then takes float features `(batch, frames, channels)` under
            the input name `"encoder_features"`, with no padding mask, and
            `vocab_size` is the target's.
        decoder_start_token_id: The id every target starts with, which
            `generation.generate` starts from when a prompt dict has no
            `"decoder_tokens"` (BART's end id, Marian's padding id).
        forced_bos_token_id: None, or the id `generation.generate` forces
            as the first generated token (mBART's and NLLB's target
            language code).
        forced_eos_token_id: None, or the id `generation.generate` forces
            as the last token when `max_new_tokens` ends a target that has
            not ended (BART's end id).
        name: Model name.
        **kwargs: Standard model arguments (`trainable`,
            `special_token_ids`, ...). The flat arguments of keras_tfm 0.1
            (`norm_first=`, `final_norm=`, `activation=`, `key_dim=`,
            `use_bias=`, `layer_norm_epsilon=`, ...) are still taken.

    Call arguments:
        inputs: `{"encoder_tokens": (batch, src_len), "decoder_tokens":
            (batch, tgt_len)}` int tensors; with `encoder_features`,
            `"encoder_features"`: float `(batch, frames, channels)` in
            place of `"encoder_tokens"`.

    Returns:
        Logits `(batch, tgt_len, target_vocab_size)`.

    Attributes:
        encoder_embedding: The source `PositionalEmbedding` (`embedding`
            when shared, else `encoder_embedding`), or with
            `encoder_features` its `AudioEmbedding` (`encoder_embedding`).
        decoder_embedding: The target `PositionalEmbedding`; the same layer
            as `encoder_embedding` when the vocabulary is shared.
        encoder_positions, decoder_positions: The `StackPositions` of each
            stack (with `stack_positions`), or None.
        encoder_embedding_norm, decoder_embedding_norm: The embedding norm
            of each stack (with `embedding_norm`), or None.
        encoder_dropout, decoder_dropout: Dropout after each embedding.
        encoder_blocks: The `EncoderBlock`s (`encoder_block_0`, ...).
        decoder_blocks: The `DecoderBlock`s (`decoder_block_0`, ...).
        encoder_norm, decoder_norm: The final normalization of each stack,
            or None.
        encoder_position_bias, decoder_position_bias: The
            `RelativePositionBias` of each stack, or None.
        output_projection: The Dense layer to logits (`logits`), or None
            when tied to `decoder_embedding`.
        logits_bias_layer: The `LogitsBias` (with `logits_bias`), or None.

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
        stack_positions=None,
        stack_norms=None,
        embedding_norm=False,
        relative_position_buckets=None,
        relative_position_max_distance=128,
        scale_embeddings=True,
        scale_tied_logits=False,
        logits_bias=False,
        decoder_mask_zero=True,
        padding_id=0,
        encoder_features=None,
        decoder_start_token_id=None,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        name="seq2seq_transformer",
        **kwargs,
    ):
        check_positive_int("num_layers", num_layers)
        output_bias = kwargs.get("use_bias", output_bias)
        stack_norms = kwargs.pop("final_norm", stack_norms)
        options = block_options(
            kwargs, num_heads, ff_dim, attention, feed_forward, norm, _DEFAULTS
        )
        stack_positions = stack_position_options(stack_positions)
        if stack_positions is not None and position is not None:
            raise ValueError(
                "`stack_positions` gives each stack its positions, so the "
                "shared embedding adds none: use position=None. Received: "
                f"position={position!r}"
            )
        if encoder_features is not None and not isinstance(
            encoder_features, dict
        ):
            raise ValueError(
                "`encoder_features` must be None or a dict of AudioEmbedding "
                f"options. Received: encoder_features={encoder_features!r}"
            )
        shared = encoder_features is None and target_vocab_size in (
            None,
            vocab_size,
        )

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

        if encoder_features is not None:
            # Imported here: only speech models need the audio layers.
            from keras_tfm.layers.audio import AudioEmbedding

            self.encoder_embedding = AudioEmbedding(
                **{
                    "embed_dim": embed_dim,
                    "sequence_length": sequence_length,
                    **encoder_features,
                },
                name="encoder_embedding",
            )
        else:
            self.encoder_embedding = embedding(
                vocab_size, "embedding" if shared else "encoder_embedding"
            )
        self.decoder_embedding = (
            self.encoder_embedding
            if shared
            else embedding(target_vocab_size or vocab_size, "decoder_embedding")
        )
        self.encoder_positions, self.decoder_positions = (
            None
            if stack_positions is None
            or (stack == "encoder" and encoder_features is not None)
            else StackPositions(
                sequence_length, **stack_positions, name=f"{stack}_positions"
            )
            for stack in ("encoder", "decoder")
        )
        self.encoder_embedding_norm, self.decoder_embedding_norm = (
            normalization(options["norm"], f"{stack}_embedding_norm")
            if embedding_norm
            else None
            for stack in ("encoder", "decoder")
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
        self.logits_bias_layer = (
            LogitsBias(name="logits_bias") if logits_bias else None
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
        self.stack_positions = stack_positions
        self.stack_norms = stack_norms
        self.embedding_norm = embedding_norm
        self.relative_position_buckets = relative_position_buckets
        self.relative_position_max_distance = relative_position_max_distance
        self.scale_embeddings = scale_embeddings
        self.scale_tied_logits = scale_tied_logits
        self.logits_bias = logits_bias
        self.decoder_mask_zero = decoder_mask_zero
        self.padding_id = padding_id
        self.encoder_features = encoder_features
        self.decoder_start_token_id = decoder_start_token_id
        self.forced_bos_token_id = forced_bos_token_id
        self.forced_eos_token_id = forced_eos_token_id

        if encoder_features is None:
            source_name = "encoder_tokens"
            source = keras.Input((None,), dtype="int32", name=source_name)
        else:
            source_name = "encoder_features"
            channels = self.encoder_embedding.channels
            source = keras.Input((None, channels), name=source_name)
        decoder_tokens = keras.Input(
            (None,), dtype="int32", name="decoder_tokens"
        )
        context = self.encode(**{source_name: source})
        x = self._embed_target(decoder_tokens)
        x = run_stack(
            x,
            self.decoder_blocks,
            context=context,
            context_padding_mask=self._source_padding_mask(source),
            attention_bias=self._position_bias(self.decoder_position_bias, x),
        )
        super().__init__(
            {source_name: source, "decoder_tokens": decoder_tokens},
            self._logits(x),
            name=name,
            **kwargs,
        )

    def encode(self, encoder_tokens=None, encoder_features=None):
        """The encoder's output for the source, computed once.

        Args:
            encoder_tokens: Int source ids `(batch, src_len)`, `padding_id`
                for padding.
            encoder_features: Float features `(batch, frames, channels)`,
                in place of `encoder_tokens` for a model with
                `encoder_features`.

        Returns:
            `(batch, src_len, embed_dim)` (`src_len` the embedded frames
            for features).
        """
        source = self._source(encoder_tokens, encoder_features)
        x = self.encoder_embedding(source)
        if self.encoder_positions is not None:
            x = self.encoder_positions(x)
        if self.encoder_embedding_norm is not None:
            x = self.encoder_embedding_norm(x)
        x = self.encoder_dropout(x)
        return run_stack(
            x,
            self.encoder_blocks,
            self.encoder_norm,
            padding_mask=self._source_padding_mask(source),
            attention_bias=self._position_bias(self.encoder_position_bias, x),
        )

    def _source(self, encoder_tokens, encoder_features):
        """The source this model's encoder takes, or a ValueError naming
        the one it takes."""
        expected, given, other = (
            ("encoder_tokens", encoder_tokens, encoder_features)
            if self.encoder_features is None
            else ("encoder_features", encoder_features, encoder_tokens)
        )
        if given is None or other is not None:
            raise ValueError(
                "This Seq2SeqTransformer's encoder takes `"
                f"{expected}` (to `generation.generate`, a prompt dict with "
                f"keys {expected!r} and 'decoder_tokens'). Received: "
                f"encoder_tokens={_described(encoder_tokens)}, "
                f"encoder_features={_described(encoder_features)}"
            )
        return given

    def _source_padding_mask(self, source):
        """The source's padding mask; None for features, which have no
        padding."""
        if self.encoder_features is not None:
            return None
        return ops.not_equal(source, self.padding_id)

    def _embed_target(self, tokens, start_index=0):
        """The decoder's input: embeddings, positions, norm and dropout."""
        x = self.decoder_embedding(tokens, start_index=start_index)
        if self.decoder_positions is not None:
            x = self.decoder_positions(x, start_index=start_index)
        if self.decoder_embedding_norm is not None:
            x = self.decoder_embedding_norm(x)
        return self.decoder_dropout(x)

    @staticmethod
    def _position_bias(layer, x, key_length=None, start_index=0):
        if layer is None:
            return None
        return layer(x, key_length=key_length, start_index=start_index)

    def _logits(self, x):
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        if self.output_projection is not None:
            logits = self.output_projection(x)
        else:
            if self.scale_tied_logits:
                x = x * ops.cast(
                    self.decoder_embedding.embed_dim**-0.5, x.dtype
                )
            logits = self.decoder_embedding(x, reverse=True)
        if self.logits_bias_layer is not None:
            logits = self.logits_bias_layer(logits)
        return logits

    def initial_cache(
        self, batch_size, max_length, encoder_tokens=None, encoder_features=None
    ):
        """Encodes the source and returns an empty decoder cache.

        Args:
            batch_size: Number of sequences decoded together.
            max_length: Longest target sequence the cache holds.
            encoder_tokens: Int source ids `(batch_size, src_len)`,
                `padding_id` for padding.
            encoder_features: Float features `(batch_size, frames,
                channels)`, in place of `encoder_tokens` for a model with
                `encoder_features`.

        Returns:
            A dict: `"self_attention"`, one empty `(batch, 2, num_heads,
            max_length, head_dim)` key/value cache per decoder block;
            `"cross_attention"`, each block's keys and values of the
            encoder output; `"context_padding_mask"`, `(batch, src_len)`
            (all true for features).
        """
        source = self._source(encoder_tokens, encoder_features)
        context = self.encode(**{self._source_name(): source})
        padding_mask = self._source_padding_mask(source)
        if padding_mask is None:
            padding_mask = ops.ones(ops.shape(context)[:2], "bool")
        return {
            "self_attention": tuple(
                block.initial_cache(batch_size, max_length)
                for block in self.decoder_blocks
            ),
            "cross_attention": tuple(
                block.compute_cross_attention_cache(context)
                for block in self.decoder_blocks
            ),
            "context_padding_mask": padding_mask,
        }

    def _source_name(self):
        if self.encoder_features is None:
            return "encoder_tokens"
        return "encoder_features"

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
        x = self._embed_target(tokens, start_index=cache_index)
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
            "stack_positions": self.stack_positions,
            "stack_norms": self.stack_norms,
            "embedding_norm": self.embedding_norm,
            "relative_position_buckets": self.relative_position_buckets,
            "relative_position_max_distance": (
                self.relative_position_max_distance
            ),
            "scale_embeddings": self.scale_embeddings,
            "scale_tied_logits": self.scale_tied_logits,
            "logits_bias": self.logits_bias,
            "decoder_mask_zero": self.decoder_mask_zero,
            "padding_id": self.padding_id,
            "encoder_features": self.encoder_features,
            "decoder_start_token_id": self.decoder_start_token_id,
            "forced_bos_token_id": self.forced_bos_token_id,
            "forced_eos_token_id": self.forced_eos_token_id,
        }


def _described(value):
    return None if value is None else f"<{type(value).__name__}>"


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

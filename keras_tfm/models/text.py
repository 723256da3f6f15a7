"""Text encoders: the encoder itself, a classifier and a masked LM on it."""

import keras

from keras_tfm.layers import (
    DecoderBlock,
    EncoderBlock,
    FirstTokenPooling,
    PositionalEmbedding,
)
from keras_tfm.layers.disentangled_attention import (
    RelativePositionEmbedding,
    table_length,
)
from keras_tfm.layers.normalization import norm_options, normalization
from keras_tfm.layers.options import attention_type, block_options
from keras_tfm.layers.validation import check_choice, check_positive_int
from keras_tfm.models.base import (
    FunctionalModel,
    make_blocks,
    run_stack,
    stack_norm,
)

_ENCODER_DEFAULTS = {
    "attention": {"num_heads": 4},
    "feed_forward": {"hidden_dim": 256},
}


@keras.saving.register_keras_serializable(package="keras_tfm")
class TextEncoder(FunctionalModel):
    """Token embedding and a stack of encoder blocks (BERT-style encoder).

    Token id `padding_id` (0 by default) is padding: the embedding masks it
    and the mask reaches every block and the output, so pooling downstream
    skips it too. The encoder is the part that `TextClassifier` and
    `MaskedLM` share: pretrain it in a `MaskedLM`, then fine-tune the same
    layers in a `TextClassifier`.

    Args:
        vocab_size: Vocabulary size.
        sequence_length: Longest input sequence.
        num_layers: Number of encoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block (default 4); shorthand for
            `attention["num_heads"]`.
        ff_dim: Feed-forward hidden width (default 256); shorthand for
            `feed_forward["hidden_dim"]`.
        dropout: Dropout rate on the embeddings and in the blocks.
        attention: Dict of `MultiHeadSelfAttention` options for every block;
            with `"type": "disentangled"` (DeBERTa), of
            `DisentangledSelfAttention`, and the encoder then holds the
            relative-position table its blocks share
            (`relative_embeddings`).
        feed_forward: Dict of `FeedForward` options (`activation`, default
            `"relu"`).
        norm: Norm options (`"type"`, `"epsilon"`, `"placement"`: `"post"`
            by default; any other placement adds a final norm,
            `encoder_norm`).
        position: `"learned"`, `"sinusoidal"`, or None (with rotary
            attention).
        num_segments: Number of segment (token type) ids, as in BERT; the
            model then takes `segment_ids` too.
        embedding_norm: Whether a normalization follows the embedding
            (BERT has one).
        padding_id: The padding token id.
        position_offset: Rows of the learned position table before the
            first position's (RoBERTa's is `padding_id + 1`); see
            `PositionalEmbedding`.
        embedding_dim: Width of the token embedding, if not `embed_dim`:
            a Dense layer (`embedding_projection`) then projects the
            (normalised) embedding to `embed_dim`, as in ELECTRA.
        causal: Whether each token attends to itself and earlier tokens
            only (CLIP's text encoder): the blocks are then
            `DecoderBlock`s without cross-attention.
        layer_overrides: None, or a list with one entry per block: None, or
            a dict of `attention`, `feed_forward` and `norm` options merged
            over the model's for that block (as `CausalLM`'s).
        relative_embedding_norm: Whether the relative-position table of a
            disentangled attention is normalised (with the model's norm
            options) before the blocks read it, as in DeBERTa-v3.
        name: Model name.
        **kwargs: Standard model arguments (`trainable`, ...). The flat
            arguments of keras_tfm 0.1 (`norm_first=`, `activation=`,
            `layer_norm_epsilon=`) are still taken.

    Call arguments:
        tokens: Int token ids `(batch, seq)` (input name `tokens`). With
            `num_segments`, a dict of `tokens` and `segment_ids`, both
            `(batch, seq)`.

    Returns:
        `(batch, seq, embed_dim)`, with the padding mask of token id 0.

    Attributes:
        embedding: The `PositionalEmbedding` (`embedding`).
        embedding_norm: The LayerNormalization after it (`embedding_norm`),
            or None.
        embedding_dropout: Dropout after the embedding.
        embedding_projection: The Dense layer from `embedding_dim` to
            `embed_dim` (`embedding_projection`), or None.
        blocks: The `EncoderBlock`s (`encoder_block_0`, ...).
        final_norm: The LayerNormalization after the last block, or None.
        relative_embeddings: The `RelativePositionEmbedding` every
            disentangled attention reads, or None.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    encoder = models.TextEncoder(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64,
    )
    outputs = encoder(np.array([[5, 6, 7, 0]]))  # (1, 4, 32)
    ```
    """

    def __init__(
        self,
        vocab_size,
        sequence_length,
        num_layers=2,
        embed_dim=128,
        num_heads=None,
        ff_dim=None,
        dropout=0.1,
        *,
        attention=None,
        feed_forward=None,
        norm=None,
        position="learned",
        num_segments=None,
        embedding_norm=False,
        padding_id=0,
        position_offset=0,
        embedding_dim=None,
        causal=False,
        layer_overrides=None,
        relative_embedding_norm=False,
        name="encoder",
        **kwargs,
    ):
        check_positive_int("num_layers", num_layers)
        options = block_options(
            kwargs,
            num_heads,
            ff_dim,
            attention,
            feed_forward,
            norm,
            _ENCODER_DEFAULTS,
        )
        if embedding_dim is not None:
            check_positive_int("embedding_dim", embedding_dim)
        self.embedding = PositionalEmbedding(
            vocab_size,
            sequence_length,
            embedding_dim or embed_dim,
            position=position,
            mask_zero=True,
            padding_id=padding_id,
            num_segments=num_segments,
            position_offset=position_offset,
            name="embedding",
        )
        self.embedding_norm = (
            normalization(options["norm"], "embedding_norm")
            if embedding_norm
            else None
        )
        self.embedding_dropout = keras.layers.Dropout(
            dropout, name="embedding_dropout"
        )
        self.embedding_projection = (
            keras.layers.Dense(embed_dim, name="embedding_projection")
            if embedding_dim is not None
            else None
        )
        self.blocks = make_blocks(
            DecoderBlock if causal else EncoderBlock,
            num_layers,
            "encoder",
            options,
            layer_overrides,
            dropout=dropout,
            **({"cross_attention": False} if causal else {}),
        )
        self.final_norm = stack_norm(
            "encoder", options["norm"]["placement"] != "post", options["norm"]
        )
        self.relative_embeddings = _relative_embeddings(
            options, causal, relative_embedding_norm
        )

        tokens = keras.Input((None,), dtype="int32", name="tokens")
        if num_segments is None:
            inputs, x = tokens, self.embedding(tokens)
        else:
            segment_ids = keras.Input(
                (None,), dtype="int32", name="segment_ids"
            )
            inputs = {"tokens": tokens, "segment_ids": segment_ids}
            x = self.embedding(tokens, segment_ids=segment_ids)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        x = self.embedding_dropout(x)
        if self.embedding_projection is not None:
            x = self.embedding_projection(x)
        tables = {}
        if self.relative_embeddings is not None:
            tables = {"relative_embeddings": self.relative_embeddings(x)}
        x = run_stack(x, self.blocks, self.final_norm, **tables)
        super().__init__(inputs, x, name=name, **kwargs)

        self.vocab_size = vocab_size
        self.sequence_length = sequence_length
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.attention_options = options["attention"]
        self.feed_forward_options = options["feed_forward"]
        self.norm_options = options["norm"]
        self.position = position
        self.num_segments = num_segments
        self.padding_id = padding_id
        self.position_offset = position_offset
        self.embedding_dim = embedding_dim
        self.causal = causal
        self.layer_overrides = layer_overrides
        self.relative_embedding_norm = relative_embedding_norm

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
            "position": self.position,
            "num_segments": self.num_segments,
            "embedding_norm": self.embedding_norm is not None,
            "padding_id": self.padding_id,
            "position_offset": self.position_offset,
            "embedding_dim": self.embedding_dim,
            "causal": self.causal,
            "layer_overrides": self.layer_overrides,
            "relative_embedding_norm": self.relative_embedding_norm,
        }


def _relative_embeddings(options, causal, norm):
    """The relative-position table of a disentangled attention, or None
    (and then no `relative_embedding_norm`)."""
    if attention_type(options["attention"]) != "disentangled":
        if norm:
            raise ValueError(
                "`relative_embedding_norm=True` needs the disentangled "
                "attention's table: attention={'type': 'disentangled'}. "
                "Received: attention['type']="
                f"{attention_type(options['attention'])!r}"
            )
        return None
    if causal:
        raise ValueError(
            "A disentangled attention (DeBERTa's) is an encoder's: it takes "
            "causal=False. Received: causal=True"
        )
    return RelativePositionEmbedding(
        table_length(options["attention"]),
        norm=options["norm"] if norm else None,
        name="relative_embeddings",
    )


def _check_encoder(encoder):
    if not isinstance(encoder, TextEncoder):
        raise ValueError(
            "`encoder` must be a `models.TextEncoder`, such as "
            "`masked_lm_encoder(model)`. Received: "
            f"encoder={encoder!r}"
        )


class _ModelOnEncoder(FunctionalModel):
    """A model built on a `TextEncoder` it holds as `self.encoder`; its
    config holds the encoder's, as keras-hub's tasks hold their backbone."""

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
        }

    @classmethod
    def from_config(cls, config):
        encoder = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**{**config, "encoder": encoder})


DENSE_TRANSFORM = {"activation": "tanh", "use_bias": True, "norm": None}


def dense_transform(options, width, name):
    """The `(dense, norm)` layers of a head's dense transform, from
    `options`: False (neither), True (BERT's tanh pooler) or a dict of
    `DENSE_TRANSFORM`'s keys; `norm` is None without one."""
    if options is False:
        return None, None
    if options is True:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(
            f"`{name}` must be a bool or a dict with keys among "
            f"{list(DENSE_TRANSFORM)}. Received: {name}={options!r}"
        )
    for key in options:
        check_choice(f"{name} key", key, tuple(DENSE_TRANSFORM))
    options = {**DENSE_TRANSFORM, **options}
    dense = keras.layers.Dense(
        width,
        activation=options["activation"],
        use_bias=options["use_bias"],
        name=name,
    )
    norm = None
    if options["norm"] is not None:
        norm = normalization(norm_options(options["norm"]), f"{name}_norm")
    return dense, norm


@keras.saving.register_keras_serializable(package="keras_tfm")
class TextClassifier(_ModelOnEncoder):
    """A `TextEncoder` with a pooling and a dense classification head.

    The classifier calls `encoder` as a layer: it shares the encoder's
    weights (a pretrained `MaskedLM`'s, say) rather than copying them, and
    fine-tuning changes both. Padding (token id 0) is masked in attention and
    in mean pooling.

    Args:
        encoder: A `TextEncoder`.
        num_classes: Number of classes (the head returns logits).
        pooling: `"mean"` (over real tokens) or `"cls"` (the first token's
            output; put a classification token there).
        dropout: Dropout rate before the head.
        pooler: Whether a dense layer (`pooler`) follows the pooling:
            False, True for BERT's (tanh, with a bias), or a dict of
            `"activation"` (default `"tanh"`), `"use_bias"` (default True)
            and `"norm"` (None, or norm options of a normalization after
            the activation, `pooler_norm`: ModernBERT's head).
        name: Model name.
        **kwargs: Standard model arguments (`trainable`, ...).

    Call arguments:
        tokens: The encoder's inputs: int token ids `(batch, seq)` (input
            name `tokens`), or the dict of `tokens` and `segment_ids`.

    Returns:
        Logits `(batch, num_classes)`.

    Attributes:
        encoder: The `TextEncoder`.
        pooling_layer: The pooling (`pooling`).
        pooler_dense: The dense layer (`pooler`), or None.
        pooler_norm: The normalization after it (`pooler_norm`), or None.
        head_dropout: Dropout before the head.
        head: The Dense layer to logits (`logits`).

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    encoder = models.TextEncoder(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64,
    )
    classifier = models.TextClassifier(encoder, num_classes=3)
    logits = classifier(np.array([[5, 6, 7, 0, 0]]))  # (1, 3)
    ```
    """

    def __init__(
        self,
        encoder,
        num_classes,
        pooling="mean",
        dropout=0.1,
        pooler=False,
        name="text_classifier",
        **kwargs,
    ):
        _check_encoder(encoder)
        check_positive_int("num_classes", num_classes)
        check_choice("pooling", pooling, ("mean", "cls"))
        self.encoder = encoder
        self.pooling_layer = (
            keras.layers.GlobalAveragePooling1D(name="pooling")
            if pooling == "mean"
            else FirstTokenPooling(name="pooling")
        )
        self.pooler_dense, self.pooler_norm = dense_transform(
            pooler, encoder.embed_dim, "pooler"
        )
        self.head_dropout = keras.layers.Dropout(dropout, name="head_dropout")
        self.head = keras.layers.Dense(num_classes, name="logits")

        # The encoder's own inputs, as keras-hub's tasks share their
        # backbone's: a classifier takes what its encoder takes.
        inputs = encoder.input
        x = self.pooling_layer(encoder(inputs))
        for layer in (self.pooler_dense, self.pooler_norm):
            if layer is not None:
                x = layer(x)
        logits = self.head(self.head_dropout(x))
        super().__init__(inputs, logits, name=name, **kwargs)

        self.num_classes = num_classes
        self.pooling = pooling
        self.dropout = dropout
        self.pooler = pooler

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "dropout": self.dropout,
            "pooler": self.pooler,
        }


def text_classifier(
    vocab_size,
    sequence_length,
    num_classes,
    num_layers=2,
    embed_dim=128,
    num_heads=4,
    ff_dim=256,
    pooling="mean",
    dropout=0.1,
    position="learned",
    norm_first=False,
    encoder=None,
    name="text_classifier",
):
    """Builds a `TextClassifier` on a new or a given `TextEncoder`.

    To fine-tune a pretrained encoder, pass it as `encoder`: the classifier
    then calls that model (sharing its layers and weights, not copying them)
    instead of building its own, and `num_layers`, `embed_dim`,
    `num_heads`, `ff_dim`, `position` and `norm_first` are not used.

    Args:
        vocab_size: Vocabulary size.
        sequence_length: Longest input sequence.
        num_classes: Number of classes (the head returns logits).
        num_layers: Number of encoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block.
        ff_dim: Feed-forward hidden width.
        pooling: `"mean"` (over real tokens) or `"cls"` (the first token's
            output; put a classification token there).
        dropout: Dropout rate in the blocks and before the head.
        position: `"learned"` or `"sinusoidal"`.
        norm_first: Pre-norm blocks (adds a final norm).
        encoder: Optional `TextEncoder`, such as
            `masked_lm_encoder(pretrained)`; its `embedding` must have this
            `vocab_size` and `sequence_length`.
        name: Model name.

    Returns:
        A `TextClassifier` from int tokens `(batch, seq)` (input name
        `tokens`) to logits `(batch, num_classes)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.text_classifier(
        vocab_size=100, sequence_length=16, num_classes=3, num_layers=1,
        embed_dim=32, num_heads=2, ff_dim=64,
    )
    logits = model(np.array([[5, 6, 7, 0, 0]]))  # (1, 3)
    ```
    """
    if encoder is None:
        encoder = TextEncoder(
            vocab_size,
            sequence_length,
            num_layers=num_layers,
            embed_dim=embed_dim,
            num_heads=num_heads,
            ff_dim=ff_dim,
            dropout=dropout,
            position=position,
            norm_first=norm_first,
        )
    else:
        _check_encoder(encoder)
        for argument, value in (
            ("vocab_size", vocab_size),
            ("sequence_length", sequence_length),
        ):
            expected = getattr(encoder, argument)
            if expected != value:
                raise ValueError(
                    f"`{argument}` must match the encoder's embedding: "
                    f"expected {expected}. Received: {argument}={value}"
                )
    return TextClassifier(
        encoder, num_classes, pooling=pooling, dropout=dropout, name=name
    )

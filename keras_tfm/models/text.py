"""Text encoders: the encoder itself, a classifier and a masked LM on it."""

import keras

from keras_tfm.layers import FirstTokenPooling, PositionalEmbedding
from keras_tfm.layers.feed_forward import PLAIN_ACTIVATIONS, activate
from keras_tfm.layers.validation import check_choice, check_positive_int
from keras_tfm.models.base import (
    FunctionalModel,
    encoder_blocks,
    run_stack,
    stack_norm,
)


@keras.saving.register_keras_serializable(package="keras_tfm")
class TextEncoder(FunctionalModel):
    """Token embedding and a stack of encoder blocks (BERT-style encoder).

    Token id 0 is padding: the embedding masks it and the mask reaches every
    block and the output, so pooling downstream skips it too. The encoder is
    the part that `TextClassifier` and `MaskedLM` share: pretrain it in a
    `MaskedLM`, then fine-tune the same layers in a `TextClassifier`.

    Args:
        vocab_size: Vocabulary size.
        sequence_length: Longest input sequence.
        num_layers: Number of encoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block.
        ff_dim: Feed-forward hidden width.
        dropout: Dropout rate on the embeddings and in the blocks.
        position: `"learned"` or `"sinusoidal"`.
        norm_first: Pre-norm blocks (adds a final norm, `encoder_norm`).
        activation: Feed-forward activation (`"relu"`, `"gelu"`,
            `"gelu_tanh"`, `"swiglu"`).
        layer_norm_epsilon: Epsilon of every LayerNormalization.
        num_segments: Number of segment (token type) ids, as in BERT; the
            model then takes `segment_ids` too.
        embedding_norm: Whether a LayerNormalization follows the embedding
            (BERT has one).
        name: Model name.
        **kwargs: Standard model arguments (`trainable`, ...).

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
        blocks: The `EncoderBlock`s (`encoder_block_0`, ...).
        final_norm: The LayerNormalization after the last block, or None.

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
        num_heads=4,
        ff_dim=256,
        dropout=0.1,
        position="learned",
        norm_first=False,
        activation="relu",
        layer_norm_epsilon=1e-5,
        num_segments=None,
        embedding_norm=False,
        name="encoder",
        **kwargs,
    ):
        check_positive_int("num_layers", num_layers)
        self.embedding = PositionalEmbedding(
            vocab_size,
            sequence_length,
            embed_dim,
            position=position,
            mask_zero=True,
            num_segments=num_segments,
            name="embedding",
        )
        self.embedding_norm = (
            keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, name="embedding_norm"
            )
            if embedding_norm
            else None
        )
        self.embedding_dropout = keras.layers.Dropout(
            dropout, name="embedding_dropout"
        )
        self.blocks = encoder_blocks(
            num_layers,
            num_heads=num_heads,
            ff_dim=ff_dim,
            dropout=dropout,
            norm_first=norm_first,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
        )
        self.final_norm = stack_norm(
            "encoder", enabled=norm_first, epsilon=layer_norm_epsilon
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
        x = run_stack(x, self.blocks, self.final_norm)
        super().__init__(inputs, x, name=name, **kwargs)

        self.vocab_size = vocab_size
        self.sequence_length = sequence_length
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.position = position
        self.norm_first = norm_first
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.num_segments = num_segments

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "sequence_length": self.sequence_length,
            "num_layers": self.num_layers,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
            "position": self.position,
            "norm_first": self.norm_first,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "num_segments": self.num_segments,
            "embedding_norm": self.embedding_norm is not None,
        }


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
        pooler: Whether a dense tanh layer (`pooler`, BERT's) follows the
            pooling.
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
        pooler_dense: The dense tanh layer (`pooler`), or None.
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
        self.pooler_dense = (
            keras.layers.Dense(
                encoder.embed_dim, activation="tanh", name="pooler"
            )
            if pooler
            else None
        )
        self.head_dropout = keras.layers.Dropout(dropout, name="head_dropout")
        self.head = keras.layers.Dense(num_classes, name="logits")

        # The encoder's own inputs, as keras-hub's tasks share their
        # backbone's: a classifier takes what its encoder takes.
        inputs = encoder.input
        x = self.pooling_layer(encoder(inputs))
        if self.pooler_dense is not None:
            x = self.pooler_dense(x)
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


@keras.saving.register_keras_serializable(package="keras_tfm")
class MaskedLM(_ModelOnEncoder):
    """A `TextEncoder` pretrained by predicting masked tokens (BERT).

    The head follows BERT: a dense GELU layer and a layer norm at each masked
    position, then the output projection, which by default is the token
    embedding transposed. Inputs and targets are what keras-hub's
    `MaskedLMMaskGenerator` returns: train with `mask_ids` as targets and
    `mask_weights` as sample weights, so that the loss counts only the real
    masked positions (`reduction="mean_with_sample_weight"` averages over
    them), and report masked-token accuracy as a weighted metric. After
    pretraining, `model.encoder` is the encoder to fine-tune in a
    `TextClassifier`.

    Args:
        encoder: A `TextEncoder`.
        tie_embeddings: Whether the output projection reuses the encoder's
            token embedding. Untied, it is a Dense layer with a bias (how
            BERT's masked-LM head loads: its tied projection has a bias).
        activation: The head's activation: `"gelu"`, `"gelu_tanh"` or
            `"relu"`.
        layer_norm_epsilon: Epsilon of the head's LayerNormalization.
        name: Model name.
        **kwargs: Standard model arguments (`trainable`, ...).

    Call arguments:
        inputs: `{"tokens": (batch, seq), "mask_positions": (batch,
            num_masked)}` int tensors (token id 0 is padding).

    Returns:
        Logits `(batch, num_masked, vocab_size)` for the tokens at
        `mask_positions`.

    Attributes:
        encoder: The `TextEncoder`.
        head_dense: The dense GELU layer of the head (`mlm_dense`).
        head_norm: The layer norm of the head (`mlm_norm`).
        output_projection: The Dense layer to logits (`logits`), or None
            when tied to `encoder.embedding`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    encoder = models.TextEncoder(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64,
    )
    model = models.MaskedLM(encoder)
    logits = model({
        "tokens": np.array([[5, 1, 7, 8, 1, 0]]),  # 1 is the mask token
        "mask_positions": np.array([[1, 4]]),
    })  # (1, 2, 100)
    ```
    """

    def __init__(
        self,
        encoder,
        tie_embeddings=True,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        name="masked_lm",
        **kwargs,
    ):
        _check_encoder(encoder)
        check_choice("activation", activation, PLAIN_ACTIVATIONS)
        # Set before the graph is built, which `token_logits` reads it for.
        self.activation = activation
        self.encoder = encoder
        self.head_dense = keras.layers.Dense(
            encoder.embed_dim, name="mlm_dense"
        )
        self.head_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="mlm_norm"
        )
        self.output_projection = (
            None
            if tie_embeddings
            else keras.layers.Dense(encoder.vocab_size, name="logits")
        )

        encoder_inputs = encoder.input
        mask_positions = keras.Input(
            (None,), dtype="int32", name="mask_positions"
        )
        x = keras.ops.take_along_axis(
            encoder(encoder_inputs),
            keras.ops.expand_dims(mask_positions, -1),
            axis=1,
        )
        if not isinstance(encoder_inputs, dict):
            encoder_inputs = {"tokens": encoder_inputs}
        super().__init__(
            {**encoder_inputs, "mask_positions": mask_positions},
            self.token_logits(x),
            name=name,
            **kwargs,
        )
        self.tie_embeddings = tie_embeddings
        self.layer_norm_epsilon = layer_norm_epsilon

    def token_logits(self, x):
        """Vocabulary logits `(batch, n, vocab_size)` for encoder outputs
        `(batch, n, embed_dim)`."""
        x = activate(self.head_dense(x), self.activation)
        x = self.head_norm(x)
        if self.output_projection is None:
            return self.encoder.embedding(x, reverse=True)
        return self.output_projection(x)

    def get_config(self):
        return {
            **super().get_config(),
            "tie_embeddings": self.tie_embeddings,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


def masked_lm(
    vocab_size,
    sequence_length,
    num_layers=2,
    embed_dim=128,
    num_heads=4,
    ff_dim=256,
    dropout=0.1,
    position="learned",
    norm_first=False,
    tie_embeddings=True,
    name="masked_lm",
):
    """Builds a `MaskedLM` on a new `TextEncoder`.

    Args:
        vocab_size: Vocabulary size (including the mask token).
        sequence_length: Longest input sequence.
        num_layers: Number of encoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block.
        ff_dim: Feed-forward hidden width.
        dropout: Dropout rate in the encoder.
        position: `"learned"` or `"sinusoidal"`.
        norm_first: Pre-norm blocks (adds a final norm).
        tie_embeddings: Whether the output projection reuses the token
            embedding.
        name: Model name.

    Returns:
        A `MaskedLM` taking `{"tokens": (batch, seq), "mask_positions":
        (batch, num_masked)}` int tensors (token id 0 is padding) and
        returning logits `(batch, num_masked, vocab_size)` for the tokens
        at those positions.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_tfm import models

    model = models.masked_lm(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64,
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=["sparse_categorical_accuracy"],
    )
    inputs = {
        "tokens": np.array([[5, 1, 7, 8, 1, 0]]),  # 1 is the mask token
        "mask_positions": np.array([[1, 4, 0]]),  # the last one is padding
    }
    mask_ids = np.array([[6, 9, 0]])  # the tokens that were masked
    mask_weights = np.array([[1.0, 1.0, 0.0]])
    model.fit(inputs, mask_ids, sample_weight=mask_weights, verbose=0)
    ```
    """
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
    return MaskedLM(encoder, tie_embeddings=tie_embeddings, name=name)


def masked_lm_encoder(model):
    """The `TextEncoder` inside a `MaskedLM`: `model.encoder`.

    It shares its layers, and so its weights, with `model`: train one and
    the other changes. Pass it to `text_classifier(..., encoder=...)` to
    fine-tune the pretrained encoder.

    Args:
        model: A `MaskedLM` (built by `masked_lm` or reloaded from its file).

    Returns:
        The `TextEncoder` named `encoder` from tokens `(batch, seq)` (input
        name `tokens`) to the encoder's outputs `(batch, seq, embed_dim)`,
        with the padding mask of token id 0.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    pretrained = models.masked_lm(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64,
    )
    classifier = models.text_classifier(
        vocab_size=100, sequence_length=16, num_classes=3,
        encoder=models.masked_lm_encoder(pretrained),
    )
    logits = classifier(np.array([[5, 6, 7, 0]]))  # (1, 3)
    ```
    """
    if not isinstance(model, MaskedLM):
        raise ValueError(
            "`model` must be a `models.MaskedLM` (from `models.masked_lm`). "
            f"Received: model={model.name!r} of type {type(model).__name__}"
        )
    return model.encoder

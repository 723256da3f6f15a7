"""Functional-model builders.

Each function returns a plain `keras.Model` built with the functional API
from keras_tfm's public blocks, so it trains with `model.fit`, prints with
`model.summary()`, and saves and reloads with `model.save()` /
`keras.models.load_model()` (after `import keras_tfm`). Layers have stable
names (`encoder_block_0`, `decoder_block_1`, ...), so weights can be looked up
with `model.get_layer(...)`.
"""

import keras

from keras_tfm.layers import (
    DecoderBlock,
    EncoderBlock,
    FirstTokenPooling,
    PatchEmbedding,
    PositionalEmbedding,
    SinusoidalEncoding,
)
from keras_tfm.layers.validation import check_choice, check_positive_int

__all__ = [
    "causal_lm",
    "forecaster",
    "masked_lm",
    "masked_lm_encoder",
    "seq2seq_transformer",
    "text_classifier",
    "vit_classifier",
]


def _encoder_stack(
    x, num_layers, prefix="encoder", final_norm=None, **block_options
):
    """`num_layers` EncoderBlocks, then a final norm (see `_final_norm`)."""
    for index in range(num_layers):
        x = EncoderBlock(name=f"{prefix}_block_{index}", **block_options)(x)
    return _final_norm(x, prefix, block_options, final_norm)


def _final_norm(x, prefix, block_options, enabled=None):
    # A pre-norm stack leaves its residual stream unnormalised, so by default
    # it gets a final norm and a post-norm stack, already ending in one, does
    # not. `torch.nn.Transformer` has one after post-norm stacks too.
    if enabled is None:
        enabled = block_options.get("norm_first", False)
    if not enabled:
        return x
    return keras.layers.LayerNormalization(
        epsilon=block_options.get("layer_norm_epsilon", 1e-5),
        name=f"{prefix}_norm",
    )(x)


def _text_encoder(
    tokens,
    vocab_size,
    sequence_length,
    num_layers,
    embed_dim,
    num_heads,
    ff_dim,
    dropout,
    position,
    norm_first,
):
    """Embedding, dropout and encoder stack over `tokens` (0 is padding).

    Returns the embedding layer and the encoder's output.
    """
    embedding = PositionalEmbedding(
        vocab_size,
        sequence_length,
        embed_dim,
        position=position,
        mask_zero=True,
        name="embedding",
    )
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(
        embedding(tokens)
    )
    x = _encoder_stack(
        x,
        num_layers,
        num_heads=num_heads,
        ff_dim=ff_dim,
        dropout=dropout,
        norm_first=norm_first,
    )
    return embedding, x


def _check_encoder(encoder, vocab_size, sequence_length):
    if not isinstance(encoder, keras.Model):
        raise ValueError(
            "`encoder` must be a keras.Model from tokens to sequence outputs, "
            f"such as `masked_lm_encoder(model)`. Received: encoder={encoder!r}"
        )
    embedding = encoder.get_layer("embedding")
    for argument, value in (
        ("vocab_size", vocab_size),
        ("sequence_length", sequence_length),
    ):
        if getattr(embedding, argument) != value:
            raise ValueError(
                f"`{argument}` must match the encoder's embedding: expected "
                f"{getattr(embedding, argument)}. Received: "
                f"{argument}={value}"
            )


def seq2seq_transformer(
    vocab_size,
    sequence_length,
    num_layers=6,
    embed_dim=512,
    num_heads=8,
    ff_dim=2048,
    dropout=0.1,
    target_vocab_size=None,
    tie_embeddings=True,
    position="sinusoidal",
    norm_first=False,
    final_norm=None,
    name="seq2seq_transformer",
):
    """The encoder-decoder Transformer of "Attention Is All You Need".

    The defaults are the paper's base model. Token ids 0 are padding in both
    inputs and are masked throughout (and, through the Keras mask on the
    logits, left out of the loss). Embeddings are scaled by `sqrt(embed_dim)`
    and followed by dropout, as in the paper.

    With `tie_embeddings=True` and one vocabulary (`target_vocab_size` unset
    or equal to `vocab_size`), the encoder embedding, the decoder embedding
    and the output projection share one matrix and the projection has no
    bias; with a 37,000-token vocabulary the base model then has 63,082,496
    weights. With two vocabularies, tying shares the decoder embedding with
    the output projection only.

    Args:
        vocab_size: Source vocabulary size (and target, unless
            `target_vocab_size` is given).
        sequence_length: Longest source or target sequence.
        num_layers: Number of encoder blocks and of decoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block.
        ff_dim: Feed-forward hidden width.
        dropout: Dropout rate on embeddings and on each sublayer's output.
        target_vocab_size: Target vocabulary size, if different.
        tie_embeddings: Whether to share embedding and output matrices.
        position: `"sinusoidal"` (the paper) or `"learned"`.
        norm_first: Pre-norm blocks (adds a final norm to each stack).
        final_norm: Whether each stack ends with a LayerNormalization
            (`encoder_norm`, `decoder_norm`). Defaults to `norm_first`;
            `True` with post-norm blocks matches `torch.nn.Transformer`.
        name: Model name.

    Returns:
        A `keras.Model` taking `{"encoder_tokens": (batch, src_len),
        "decoder_tokens": (batch, tgt_len)}` int tensors and returning logits
        `(batch, tgt_len, target_vocab_size)`.

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
    check_positive_int("num_layers", num_layers)
    target_vocab_size = target_vocab_size or vocab_size
    shared = tie_embeddings and target_vocab_size == vocab_size

    def embedding(vocab, layer_name):
        return PositionalEmbedding(
            vocab,
            sequence_length,
            embed_dim,
            position=position,
            mask_zero=True,
            scale_embeddings=True,
            name=layer_name,
        )

    source_embedding = embedding(
        vocab_size, "embedding" if shared else "encoder_embedding"
    )
    target_embedding = (
        source_embedding
        if shared
        else embedding(target_vocab_size, "decoder_embedding")
    )
    block_options = {
        "num_heads": num_heads,
        "ff_dim": ff_dim,
        "dropout": dropout,
        "norm_first": norm_first,
    }

    encoder_tokens = keras.Input((None,), dtype="int32", name="encoder_tokens")
    decoder_tokens = keras.Input((None,), dtype="int32", name="decoder_tokens")
    encoded = source_embedding(encoder_tokens)
    encoded = keras.layers.Dropout(dropout, name="encoder_dropout")(encoded)
    encoded = _encoder_stack(
        encoded, num_layers, final_norm=final_norm, **block_options
    )

    decoded = target_embedding(decoder_tokens)
    decoded = keras.layers.Dropout(dropout, name="decoder_dropout")(decoded)
    for index in range(num_layers):
        decoded = DecoderBlock(name=f"decoder_block_{index}", **block_options)(
            decoded, encoded
        )
    decoded = _final_norm(decoded, "decoder", block_options, final_norm)
    if tie_embeddings:
        logits = target_embedding(decoded, reverse=True)
    else:
        logits = keras.layers.Dense(target_vocab_size, name="logits")(decoded)
    return keras.Model(
        {"encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens},
        logits,
        name=name,
    )


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
    """A Transformer encoder with a pooling and a dense classification head.

    Token id 0 is padding and is masked in attention and in mean pooling.
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
        encoder: Optional `keras.Model` from tokens `(batch, seq)` to
            `(batch, seq, width)`, such as `masked_lm_encoder(pretrained)`;
            its `embedding` must have this `vocab_size` and
            `sequence_length`.
        name: Model name.

    Returns:
        A `keras.Model` from int tokens `(batch, seq)` (input name `tokens`)
        to logits `(batch, num_classes)`.

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
    check_positive_int("num_layers", num_layers)
    check_positive_int("num_classes", num_classes)
    check_choice("pooling", pooling, ("mean", "cls"))
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    if encoder is None:
        _, x = _text_encoder(
            tokens,
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
        _check_encoder(encoder, vocab_size, sequence_length)
        x = encoder(tokens)
    if pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="pooling")(x)
    else:
        x = FirstTokenPooling(name="pooling")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(tokens, logits, name=name)


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
    """A Transformer encoder pretrained by predicting masked tokens (BERT).

    The encoder is `text_classifier`'s (same layer names), so after
    pretraining `masked_lm_encoder(model)` hands it to
    `text_classifier(..., encoder=...)` for fine-tuning. The head follows
    BERT: a dense GELU layer and a layer norm at each masked position, then
    the output projection, which by default is the token embedding
    transposed. Inputs and targets are what keras-hub's
    `MaskedLMMaskGenerator` returns: train with `mask_ids` as targets and
    `mask_weights` as sample weights, so that the loss counts only the real
    masked positions (`reduction="mean_with_sample_weight"` averages over
    them), and report masked-token accuracy as a weighted metric.

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
        A `keras.Model` taking `{"tokens": (batch, seq), "mask_positions":
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
    check_positive_int("num_layers", num_layers)
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    mask_positions = keras.Input((None,), dtype="int32", name="mask_positions")
    embedding, x = _text_encoder(
        tokens,
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
    x = keras.ops.take_along_axis(
        x, keras.ops.expand_dims(mask_positions, -1), axis=1
    )
    x = keras.layers.Dense(embed_dim, activation="gelu", name="mlm_dense")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="mlm_norm")(x)
    if tie_embeddings:
        logits = embedding(x, reverse=True)
    else:
        logits = keras.layers.Dense(vocab_size, name="logits")(x)
    return keras.Model(
        {"tokens": tokens, "mask_positions": mask_positions},
        logits,
        name=name,
    )


def masked_lm_encoder(model):
    """The encoder inside a `masked_lm` model, as a model of its own.

    It shares its layers, and so its weights, with `model`: train one and
    the other changes. Pass it to `text_classifier(..., encoder=...)` to
    fine-tune the pretrained encoder.

    Args:
        model: A model built by `masked_lm` (or reloaded from its file).

    Returns:
        A `keras.Model` named `encoder` from tokens `(batch, seq)` (input
        name `tokens`) to the last encoder layer's outputs
        `(batch, seq, embed_dim)`, with the padding mask of token id 0.

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
    layer_names = [layer.name for layer in model.layers]
    if "mlm_dense" not in layer_names:
        raise ValueError(
            "`model` must be built by `models.masked_lm`. Received: "
            f"model={model.name!r} with layers {layer_names}"
        )
    # The encoder ends with its last block, or with the norm after it.
    last = [name for name in layer_names if name.startswith("encoder_")][-1]
    return keras.Model(
        model.get_layer("tokens").output,
        model.get_layer(last).output,
        name="encoder",
    )


def causal_lm(
    vocab_size,
    sequence_length,
    num_layers=4,
    embed_dim=256,
    num_heads=4,
    ff_dim=1024,
    rotary=False,
    num_kv_heads=None,
    dropout=0.1,
    activation="gelu",
    tie_embeddings=True,
    mask_zero=False,
    name="causal_lm",
):
    """A decoder-only (GPT-style) language model.

    Pre-norm causal `DecoderBlock`s with a final norm. Positions are learned,
    or, with `rotary=True`, applied inside attention as rotary embeddings
    (then the embedding adds none). With `mask_zero=False` (the default, for
    packed training text) causal attention takes the fused kernel's
    `is_causal` path with no mask tensor; set `mask_zero=True` to treat token
    id 0 as padding.

    Args:
        vocab_size: Vocabulary size.
        sequence_length: Longest sequence (context window).
        num_layers: Number of decoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block.
        ff_dim: Feed-forward hidden width.
        rotary: Rotary position embeddings instead of learned positions.
        num_kv_heads: Key/value heads (grouped-query attention).
        dropout: Dropout rate on embeddings and sublayer outputs.
        activation: Feed-forward activation (`"relu"`, `"gelu"`, `"swiglu"`).
        tie_embeddings: Whether the output projection reuses the embedding.
        mask_zero: Whether token id 0 is padding.
        name: Model name.

    Returns:
        A `keras.Model` from int tokens `(batch, seq)` (input name `tokens`)
        to next-token logits `(batch, seq, vocab_size)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.causal_lm(
        vocab_size=100, sequence_length=32, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64, rotary=True,
    )
    logits = model(np.array([[5, 6, 7]]))  # (1, 3, 100)
    ```
    """
    check_positive_int("num_layers", num_layers)
    embedding = PositionalEmbedding(
        vocab_size,
        sequence_length,
        embed_dim,
        position=None if rotary else "learned",
        mask_zero=mask_zero,
        name="embedding",
    )
    block_options = {
        "num_heads": num_heads,
        "ff_dim": ff_dim,
        "dropout": dropout,
        "activation": activation,
        "norm_first": True,
        "rotary": rotary,
        "num_kv_heads": num_kv_heads,
    }
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = embedding(tokens)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for index in range(num_layers):
        x = DecoderBlock(
            cross_attention=False,
            name=f"decoder_block_{index}",
            **block_options,
        )(x)
    x = _final_norm(x, "decoder", block_options)
    if tie_embeddings:
        logits = embedding(x, reverse=True)
    else:
        logits = keras.layers.Dense(vocab_size, name="logits")(x)
    return keras.Model(tokens, logits, name=name)


def vit_classifier(
    image_size,
    patch_size,
    num_classes,
    num_layers=4,
    embed_dim=64,
    num_heads=4,
    ff_dim=128,
    channels=3,
    dropout=0.1,
    name="vit_classifier",
):
    """A Vision Transformer classifier (Dosovitskiy et al., 2020).

    Images are cut into patches, embedded with a class token and learned
    positions (`PatchEmbedding`), passed through pre-norm GELU encoder
    blocks, and classified from the class token's output.

    Args:
        image_size: Side of the square input images.
        patch_size: Side of the square patches; must divide `image_size`.
        num_classes: Number of classes (the head returns logits).
        num_layers: Number of encoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block.
        ff_dim: Feed-forward hidden width.
        channels: Image channels.
        dropout: Dropout rate.
        name: Model name.

    Returns:
        A `keras.Model` from images `(batch, image_size, image_size,
        channels)` (input name `images`) to logits `(batch, num_classes)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.vit_classifier(
        image_size=8, patch_size=2, num_classes=10, num_layers=1,
        embed_dim=32, num_heads=2, ff_dim=64, channels=1,
    )
    logits = model(np.random.rand(2, 8, 8, 1))  # (2, 10)
    ```
    """
    check_positive_int("num_layers", num_layers)
    check_positive_int("image_size", image_size)
    images = keras.Input((image_size, image_size, channels), name="images")
    x = PatchEmbedding(patch_size, embed_dim, name="patch_embedding")(images)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    x = _encoder_stack(
        x,
        num_layers,
        num_heads=num_heads,
        ff_dim=ff_dim,
        dropout=dropout,
        activation="gelu",
        norm_first=True,
    )
    x = FirstTokenPooling(name="pooling")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(images, logits, name=name)


def forecaster(
    input_length,
    horizon,
    num_features=1,
    num_layers=2,
    embed_dim=64,
    num_heads=4,
    ff_dim=128,
    dropout=0.1,
    name="forecaster",
):
    """A Transformer encoder that forecasts the next `horizon` steps.

    Each time step's features are projected to `embed_dim`, the sinusoidal
    position signal is added, pre-norm encoder blocks mix the steps, and a
    dense head maps the flattened sequence to the forecast. Scale the series
    (for example to zero mean and unit variance) before training.

    Args:
        input_length: Number of past steps the model reads.
        horizon: Number of future steps it predicts.
        num_features: Number of variables per step.
        num_layers: Number of encoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block.
        ff_dim: Feed-forward hidden width.
        dropout: Dropout rate.
        name: Model name.

    Returns:
        A `keras.Model` from `(batch, input_length, num_features)` floats
        (input name `series`) to `(batch, horizon, num_features)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.forecaster(
        input_length=24, horizon=6, num_layers=1, embed_dim=16, num_heads=2,
        ff_dim=32,
    )
    forecast = model(np.random.rand(4, 24, 1))  # (4, 6, 1)
    ```
    """
    for argument, value in (
        ("input_length", input_length),
        ("horizon", horizon),
        ("num_features", num_features),
        ("num_layers", num_layers),
    ):
        check_positive_int(argument, value)
    series = keras.Input((input_length, num_features), name="series")
    x = keras.layers.Dense(embed_dim, name="input_projection")(series)
    x = keras.layers.Add(name="add_positions")(
        [x, SinusoidalEncoding(name="positions")(x)]
    )
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    x = _encoder_stack(
        x,
        num_layers,
        num_heads=num_heads,
        ff_dim=ff_dim,
        dropout=dropout,
        activation="gelu",
        norm_first=True,
    )
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(horizon * num_features, name="head")(x)
    forecast = keras.layers.Reshape((horizon, num_features), name="forecast")(x)
    return keras.Model(series, forecast, name=name)

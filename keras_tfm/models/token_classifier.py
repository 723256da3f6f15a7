"""A token classifier on a `TextEncoder`: one prediction per token (named
entities, parts of speech)."""

import keras

from keras_tfm.layers.validation import check_positive_int
from keras_tfm.models.text import (
    _check_encoder,
    _ModelOnEncoder,
    dense_transform,
)


@keras.saving.register_keras_serializable(package="keras_tfm")
class TokenClassifier(_ModelOnEncoder):
    """A `TextEncoder` with a dense classification head at every token.

    The classifier calls `encoder` as a layer, sharing its weights (a
    pretrained `MaskedLM`'s, say). The logits keep the encoder's padding
    mask (token id `padding_id`), so Keras's losses and metrics in `fit`
    and `evaluate` skip the padded positions: give padded positions any
    label.

    Args:
        encoder: A `TextEncoder`.
        num_classes: Number of classes (the head returns logits).
        dropout: Dropout rate before the head.
        transform: None, or a dense transform before the dropout and the
            head, as `TextClassifier`'s `pooler`: True for a dense tanh
            layer with a bias, or a dict of `"activation"` (default
            `"tanh"`), `"use_bias"` (default True) and `"norm"` (None, or
            norm options of a normalization after the activation:
            ModernBERT's head).
        name: Model name.
        **kwargs: Standard model arguments (`trainable`, ...).

    Call arguments:
        tokens: The encoder's inputs: int token ids `(batch, seq)` (input
            name `tokens`), or the dict of `tokens` and `segment_ids`.

    Returns:
        Logits `(batch, seq, num_classes)`, with the encoder's padding
        mask.

    Attributes:
        encoder: The `TextEncoder`.
        transform_dense: The transform's dense layer (`transform`), or
            None.
        transform_norm: The normalization after it (`transform_norm`), or
            None.
        head_dropout: Dropout before the head.
        head: The Dense layer to logits (`logits`).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_tfm import models
    from keras_tfm.models.token_classifier import TokenClassifier

    encoder = models.TextEncoder(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64,
    )
    tagger = TokenClassifier(encoder, num_classes=5)
    tokens = np.array([[5, 6, 7, 0, 0]])  # 0 is padding
    logits = tagger(tokens)  # (1, 5, 5)
    tagger.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    tagger.fit(tokens, np.array([[1, 2, 3, 0, 0]]), verbose=0)
    ```
    """

    def __init__(
        self,
        encoder,
        num_classes,
        dropout=0.1,
        transform=None,
        name="token_classifier",
        **kwargs,
    ):
        _check_encoder(encoder)
        check_positive_int("num_classes", num_classes)
        self.encoder = encoder
        self.transform_dense, self.transform_norm = dense_transform(
            False if transform is None else transform,
            encoder.embed_dim,
            "transform",
        )
        self.head_dropout = keras.layers.Dropout(dropout, name="head_dropout")
        self.head = keras.layers.Dense(num_classes, name="logits")

        inputs = encoder.input
        x = encoder(inputs)  # (batch, seq, embed_dim)
        for layer in (self.transform_dense, self.transform_norm):
            if layer is not None:
                x = layer(x)
        logits = self.head(self.head_dropout(x))  # (batch, seq, classes)
        super().__init__(inputs, logits, name=name, **kwargs)

        self.num_classes = num_classes
        self.dropout = dropout
        self.transform = transform

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "dropout": self.dropout,
            "transform": self.transform,
        }

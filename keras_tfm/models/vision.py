"""A Vision Transformer classifier."""

import keras

from keras_tfm.layers import (
    EncoderBlock,
    FirstTokenPooling,
    PatchEmbedding,
)
from keras_tfm.layers.options import block_options
from keras_tfm.layers.validation import check_positive_int
from keras_tfm.models.base import (
    FunctionalModel,
    make_blocks,
    run_stack,
    stack_norm,
)


@keras.saving.register_keras_serializable(package="keras_tfm")
class ViTClassifier(FunctionalModel):
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
        layer_norm_epsilon: Epsilon of every LayerNormalization.
        name: Model name.
        **kwargs: Standard model arguments (`trainable`, ...).

    Call arguments:
        images: `(batch, image_size, image_size, channels)` (input name
            `images`).

    Returns:
        Logits `(batch, num_classes)`.

    Attributes:
        patch_embedding: The `PatchEmbedding` (`patch_embedding`).
        embedding_dropout: Dropout after it.
        blocks: The `EncoderBlock`s (`encoder_block_0`, ...).
        final_norm: The LayerNormalization after the last block
            (`encoder_norm`).
        pooling: The `FirstTokenPooling` of the class token (`pooling`).
        head: The Dense layer to logits (`logits`).

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.ViTClassifier(
        image_size=8, patch_size=2, num_classes=10, num_layers=1,
        embed_dim=32, num_heads=2, ff_dim=64, channels=1,
    )
    logits = model(np.random.rand(2, 8, 8, 1))  # (2, 10)
    ```
    """

    def __init__(
        self,
        image_size,
        patch_size,
        num_classes,
        num_layers=4,
        embed_dim=64,
        num_heads=4,
        ff_dim=128,
        channels=3,
        dropout=0.1,
        layer_norm_epsilon=1e-5,
        name="vit_classifier",
        **kwargs,
    ):
        check_positive_int("num_layers", num_layers)
        check_positive_int("image_size", image_size)
        self.patch_embedding = PatchEmbedding(
            patch_size, embed_dim, name="patch_embedding"
        )
        self.embedding_dropout = keras.layers.Dropout(
            dropout, name="embedding_dropout"
        )
        options = block_options(
            {},
            num_heads=num_heads,
            ff_dim=ff_dim,
            feed_forward={"activation": "gelu"},
            norm={"epsilon": layer_norm_epsilon, "placement": "pre"},
        )
        self.blocks = make_blocks(
            EncoderBlock, num_layers, "encoder", options, dropout=dropout
        )
        self.final_norm = stack_norm("encoder", True, options["norm"])
        self.pooling = FirstTokenPooling(name="pooling")
        self.head = keras.layers.Dense(num_classes, name="logits")

        images = keras.Input((image_size, image_size, channels), name="images")
        x = self.embedding_dropout(self.patch_embedding(images))
        x = run_stack(x, self.blocks, self.final_norm)
        logits = self.head(self.pooling(x))
        super().__init__(images, logits, name=name, **kwargs)

        self.image_size = image_size
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.channels = channels
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_classes": self.num_classes,
            "num_layers": self.num_layers,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "channels": self.channels,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


def vit_classifier(*args, **kwargs):
    """Builds a `ViTClassifier`; takes the same arguments.

    Args:
        *args: Positional arguments of `ViTClassifier`.
        **kwargs: Keyword arguments of `ViTClassifier`.

    Returns:
        A `ViTClassifier` from images `(batch, image_size, image_size,
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
    return ViTClassifier(*args, **kwargs)

"""Vision Transformers: the encoder, and a classifier with the same parts."""

import keras
from keras import ops

from keras_tfm.layers import (
    EncoderBlock,
    FirstTokenPooling,
    PatchEmbedding,
)
from keras_tfm.layers.normalization import normalization
from keras_tfm.layers.options import block_options
from keras_tfm.layers.validation import check_choice, check_positive_int
from keras_tfm.models.base import (
    FunctionalModel,
    make_blocks,
    run_stack,
    stack_norm,
)

# ViT's blocks: pre-norm, GELU.
_VIT_DEFAULTS = {
    "feed_forward": {"activation": "gelu"},
    "norm": {"placement": "pre"},
}
# The features a `ViTClassifier` classifies: the class token's state, or
# that and the mean of the patches' (DINOv2).
POOLINGS = ("cls", "cls_and_mean")


def _encode(
    model,
    image_size,
    channels,
    num_layers,
    options,
    dropout,
    patch_embedding,
    embedding_norm=False,
    final_norm=True,
):
    """Gives `model` the encoder's parts as attributes and returns its
    images input and token states: `ViTEncoder` and `ViTClassifier` share
    the graph, and their weights the same paths."""
    check_positive_int("image_size", image_size)
    check_positive_int("num_layers", num_layers)
    model.patch_embedding = PatchEmbedding(
        name="patch_embedding", **patch_embedding
    )
    model.embedding_norm = (
        normalization(options["norm"], "embedding_norm")
        if embedding_norm
        else None
    )
    model.embedding_dropout = keras.layers.Dropout(
        dropout, name="embedding_dropout"
    )
    model.blocks = make_blocks(
        EncoderBlock, num_layers, "encoder", options, dropout=dropout
    )
    model.final_norm = stack_norm("encoder", final_norm, options["norm"])
    images = keras.Input((image_size, image_size, channels), name="images")
    x = model.patch_embedding(images)
    if model.embedding_norm is not None:
        x = model.embedding_norm(x)
    x = model.embedding_dropout(x)
    return images, run_stack(x, model.blocks, model.final_norm)


def _patch_embedding_config(layer):
    """The `PatchEmbedding` options a model's config lists."""
    config = layer.get_config()
    return {
        key: config[key]
        for key in (
            "distillation_token",
            "num_registers",
            "position_grid",
            "position_antialias",
        )
    }


@keras.saving.register_keras_serializable(package="keras_tfm")
class ViTEncoder(FunctionalModel):
    """A Vision Transformer encoder: images to token states.

    Images are cut into patches and embedded with learned positions
    (`PatchEmbedding`), optionally normalised (CLIP), then passed through
    encoder blocks (pre-norm GELU by default) and a final norm. It is the
    image tower of ViT, DeiT, DINOv2, CLIP and SigLIP, whose differences
    are its options.

    Args:
        image_size: Side of the square input images.
        patch_size: Side of the square patches; must divide `image_size`.
        num_layers: Number of encoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block; shorthand for
            `attention["num_heads"]`.
        ff_dim: Feed-forward hidden width; shorthand for
            `feed_forward["hidden_dim"]`.
        dropout: Dropout rate on the embeddings and in the blocks.
        channels: Image channels.
        attention: Dict of `MultiHeadSelfAttention` options for every block.
        feed_forward: Dict of `FeedForward` options (`activation`, default
            `"gelu"`).
        norm: Norm options (`"type"`, `"epsilon"`, `"placement"`: `"pre"`
            by default).
        class_token: Whether a learned class token comes first.
        patch_bias: Whether the patch projection has a bias.
        embedding_norm: Whether a normalization follows the embeddings
            (`embedding_norm`, CLIP's `pre_layrnorm`).
        final_norm: Whether a normalization follows the last block
            (`encoder_norm`).
        num_registers: Number of register tokens after the class token
            (DINOv2 with registers).
        distillation_token: Whether a distillation token follows the class
            token (DeiT).
        position_grid: Side of the square grid of patches the position
            table covers, if not the image's: the table is then resized
            bicubically to the image's grid (DINOv2), so that one set of
            weights serves any `image_size`.
        position_antialias: Whether that resizing antialiases, as
            PyTorch's `antialias=True` (DINOv2 with registers).
        name: Model name.
        **kwargs: Standard model arguments (`trainable`, ...).

    Call arguments:
        images: `(batch, image_size, image_size, channels)` (input name
            `images`).

    Returns:
        Token states `(batch, tokens, embed_dim)`: the class token first
        (if any), then the distillation token, the registers and the
        patches, row by row.

    Attributes:
        patch_embedding: The `PatchEmbedding` (`patch_embedding`).
        embedding_norm: The normalization after it (`embedding_norm`), or
            None.
        embedding_dropout: Dropout after the embeddings.
        blocks: The `EncoderBlock`s (`encoder_block_0`, ...).
        final_norm: The normalization after the last block
            (`encoder_norm`), or None.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    encoder = models.ViTEncoder(
        image_size=8, patch_size=2, num_layers=1, embed_dim=32, num_heads=2,
        ff_dim=64, channels=1,
    )
    states = encoder(np.random.rand(2, 8, 8, 1))  # (2, 17, 32)
    ```
    """

    def __init__(
        self,
        image_size,
        patch_size,
        num_layers,
        embed_dim,
        num_heads,
        ff_dim,
        dropout=0.0,
        *,
        channels=3,
        attention=None,
        feed_forward=None,
        norm=None,
        class_token=True,
        patch_bias=True,
        embedding_norm=False,
        final_norm=True,
        num_registers=0,
        distillation_token=False,
        position_grid=None,
        position_antialias=False,
        name="vit_encoder",
        **kwargs,
    ):
        options = block_options(
            kwargs,
            num_heads,
            ff_dim,
            attention,
            feed_forward,
            norm,
            _VIT_DEFAULTS,
        )
        patch_embedding = {
            "patch_size": patch_size,
            "embed_dim": embed_dim,
            "use_bias": patch_bias,
            "class_token": class_token,
            "distillation_token": distillation_token,
            "num_registers": num_registers,
            "position_grid": position_grid,
            "position_antialias": position_antialias,
        }
        images, states = _encode(
            self, image_size, channels, num_layers, options, dropout,
            patch_embedding, embedding_norm, final_norm,
        )  # fmt: skip
        super().__init__(images, states, name=name, **kwargs)

        self.image_size = image_size
        self.patch_size = patch_size
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.channels = channels
        self.attention_options = options["attention"]
        self.feed_forward_options = options["feed_forward"]
        self.norm_options = options["norm"]

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_layers": self.num_layers,
            "embed_dim": self.embed_dim,
            "num_heads": self.attention_options["num_heads"],
            "ff_dim": self.feed_forward_options["hidden_dim"],
            "dropout": self.dropout,
            "channels": self.channels,
            "attention": self.attention_options,
            "feed_forward": self.feed_forward_options,
            "norm": self.norm_options,
            "class_token": self.patch_embedding.class_token_enabled,
            "patch_bias": self.patch_embedding.use_bias,
            "embedding_norm": self.embedding_norm is not None,
            "final_norm": self.final_norm is not None,
            **_patch_embedding_config(self.patch_embedding),
        }


@keras.saving.register_keras_serializable(package="keras_tfm")
class ViTClassifier(FunctionalModel):
    """A Vision Transformer classifier (Dosovitskiy et al., 2020).

    Images are cut into patches, embedded with a class token and learned
    positions (`PatchEmbedding`), passed through pre-norm GELU encoder
    blocks, and classified from the class token's output: the parts of a
    `ViTEncoder`, with a head.

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
        feed_forward: Dict of `FeedForward` options (`activation`, default
            `"gelu"`).
        distillation_token: Whether a distillation token follows the class
            token (DeiT).
        num_registers: Number of register tokens after the class token
            (DINOv2 with registers).
        position_grid: Side of the square grid of patches the position
            table covers, if not the image's (see `ViTEncoder`).
        position_antialias: Whether resizing it antialiases (see
            `ViTEncoder`).
        pooling: What the head classifies: `"cls"`, the class token's
            state, or `"cls_and_mean"`, that state concatenated with the
            mean of the patches' states (DINOv2).
        distillation_head: Whether a second head (`distillation_logits`)
            classifies the distillation token's state and the logits are
            the mean of both heads' (DeiT's classifier with teacher).
        **kwargs: Standard model arguments (`trainable`, ...).

    Call arguments:
        images: `(batch, image_size, image_size, channels)` (input name
            `images`).

    Returns:
        Logits `(batch, num_classes)`.

    Attributes:
        patch_embedding: The `PatchEmbedding` (`patch_embedding`).
        embedding_norm: None (a classifier has no embedding norm).
        embedding_dropout: Dropout after it.
        blocks: The `EncoderBlock`s (`encoder_block_0`, ...).
        final_norm: The LayerNormalization after the last block
            (`encoder_norm`).
        pooling: The `FirstTokenPooling` of the class token (`pooling`).
        head: The Dense layer to logits (`logits`).
        distillation_head: The Dense layer from the distillation token to
            logits (`distillation_logits`), or None.

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
        *,
        feed_forward=None,
        distillation_token=False,
        num_registers=0,
        position_grid=None,
        position_antialias=False,
        pooling="cls",
        distillation_head=False,
        **kwargs,
    ):
        check_choice("pooling", pooling, POOLINGS)
        if distillation_head and not distillation_token:
            raise ValueError(
                "`distillation_head=True` classifies the distillation "
                "token: it needs `distillation_token=True`."
            )
        options = block_options(
            {},
            num_heads=num_heads,
            ff_dim=ff_dim,
            feed_forward=feed_forward,
            norm={"epsilon": layer_norm_epsilon},
            defaults=_VIT_DEFAULTS,
        )
        patch_embedding = {
            "patch_size": patch_size,
            "embed_dim": embed_dim,
            "distillation_token": distillation_token,
            "num_registers": num_registers,
            "position_grid": position_grid,
            "position_antialias": position_antialias,
        }
        images, x = _encode(
            self, image_size, channels, num_layers, options, dropout,
            patch_embedding,
        )  # fmt: skip
        self.pooling = FirstTokenPooling(name="pooling")
        self.head = keras.layers.Dense(num_classes, name="logits")
        self.distillation_head = (
            keras.layers.Dense(num_classes, name="distillation_logits")
            if distillation_head
            else None
        )
        features = self.pooling(x)
        if pooling == "cls_and_mean":
            first_patch = self.patch_embedding.num_leading + num_registers
            patches = ops.mean(x[:, first_patch:], axis=1)
            features = ops.concatenate([features, patches], axis=-1)
        logits = self.head(features)
        if self.distillation_head is not None:
            logits = (logits + self.distillation_head(x[:, 1])) / 2
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
        self.feed_forward_options = options["feed_forward"]
        self.pooling_mode = pooling

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
            "feed_forward": self.feed_forward_options,
            **_patch_embedding_config(self.patch_embedding),
            "pooling": self.pooling_mode,
            "distillation_head": self.distillation_head is not None,
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

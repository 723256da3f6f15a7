"""The building blocks, one concept per module."""

from keras_tfm.layers.attention import (
    MultiHeadCrossAttention,
    MultiHeadSelfAttention,
)
from keras_tfm.layers.blocks import DecoderBlock, EncoderBlock
from keras_tfm.layers.feed_forward import FeedForward
from keras_tfm.layers.pooling import FirstTokenPooling
from keras_tfm.layers.positional import (
    PositionalEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalEncoding,
)
from keras_tfm.layers.vision import PatchEmbedding

__all__ = [
    "DecoderBlock",
    "EncoderBlock",
    "FeedForward",
    "FirstTokenPooling",
    "MultiHeadCrossAttention",
    "MultiHeadSelfAttention",
    "PatchEmbedding",
    "PositionalEmbedding",
    "RelativePositionBias",
    "RotaryEmbedding",
    "SinusoidalEncoding",
]

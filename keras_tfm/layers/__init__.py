"""The building blocks, one concept per module."""

from keras_tfm.layers.attention import MultiHeadSelfAttention
from keras_tfm.layers.audio import AudioEmbedding
from keras_tfm.layers.blocks import DecoderBlock, DecoderResult, EncoderBlock
from keras_tfm.layers.cross_attention import MultiHeadCrossAttention
from keras_tfm.layers.disentangled_attention import (
    DisentangledSelfAttention,
    RelativePositionEmbedding,
)
from keras_tfm.layers.feed_forward import FeedForward
from keras_tfm.layers.mixture_of_experts import MixtureOfExperts
from keras_tfm.layers.multi_head import AttentionResult, CachedResult
from keras_tfm.layers.pooling import (
    AttentionPooling,
    FirstTokenPooling,
    TokenPooling,
)
from keras_tfm.layers.positional import (
    PositionalEmbedding,
    RelativePositionBias,
    SinusoidalEncoding,
)
from keras_tfm.layers.rotary import RotaryEmbedding
from keras_tfm.layers.vision import PatchEmbedding

__all__ = [
    "AttentionPooling",
    "AttentionResult",
    "AudioEmbedding",
    "CachedResult",
    "DecoderBlock",
    "DecoderResult",
    "DisentangledSelfAttention",
    "EncoderBlock",
    "FeedForward",
    "FirstTokenPooling",
    "MixtureOfExperts",
    "MultiHeadCrossAttention",
    "MultiHeadSelfAttention",
    "PatchEmbedding",
    "PositionalEmbedding",
    "RelativePositionBias",
    "RelativePositionEmbedding",
    "RotaryEmbedding",
    "SinusoidalEncoding",
    "TokenPooling",
]

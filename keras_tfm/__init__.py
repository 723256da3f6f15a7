"""keras_tfm: Transformer building blocks for Keras 3.

The same code runs on TensorFlow, JAX and PyTorch; the backend is chosen by
`KERAS_BACKEND`, never by this library.
"""

from keras_tfm import generation, models
from keras_tfm.layers import (
    AttentionPooling,
    AudioEmbedding,
    DecoderBlock,
    DisentangledSelfAttention,
    EncoderBlock,
    FeedForward,
    FirstTokenPooling,
    MixtureOfExperts,
    MultiHeadCrossAttention,
    MultiHeadSelfAttention,
    PatchEmbedding,
    PositionalEmbedding,
    RelativePositionBias,
    RelativePositionEmbedding,
    RotaryEmbedding,
    SinusoidalEncoding,
    TokenPooling,
)

__version__ = "0.1.0"

__all__ = [
    "generation",
    "models",
    "AttentionPooling",
    "AudioEmbedding",
    "DecoderBlock",
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

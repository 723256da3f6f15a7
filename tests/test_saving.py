"""Models save to .keras and reload (safe_mode=True) to the same outputs."""

import keras
import numpy as np

from keras_tfm import (
    DecoderBlock,
    EncoderBlock,
    FeedForward,
    MultiHeadCrossAttention,
    MultiHeadSelfAttention,
    PositionalEmbedding,
    SinusoidalEncoding,
)
from tests.conftest import to_numpy


def every_layer_model():
    source = keras.Input((6,), dtype="int32", name="encoder_tokens")
    target = keras.Input((5,), dtype="int32", name="decoder_tokens")
    encoded = PositionalEmbedding(20, 8, 16, mask_zero=True)(source)
    encoded = encoded + SinusoidalEncoding()(encoded)
    encoded = EncoderBlock(4, 32, norm="rms", rotary=True)(encoded)
    encoded = MultiHeadSelfAttention(4, num_kv_heads=2)(encoded)
    decoded = PositionalEmbedding(20, 8, 16, position="sinusoidal")(target)
    decoded = DecoderBlock(2, 32, norm_first=True)(decoded, encoded)
    decoded = DecoderBlock(2, 32, cross_attention=False)(decoded)
    decoded = MultiHeadCrossAttention(2)(decoded, encoded)
    decoded = FeedForward(24, activation="swiglu")(decoded)
    return keras.Model([source, target], keras.layers.Dense(20)(decoded))


def test_save_and_load_round_trip(tmp_path):
    model = every_layer_model()
    rng = np.random.default_rng(0)
    inputs = [
        np.concatenate([rng.integers(1, 20, (2, 4)), np.zeros((2, 2), int)], 1),
        rng.integers(1, 20, (2, 5)),
    ]
    expected = to_numpy(model(inputs))
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)  # safe_mode=True by default
    np.testing.assert_allclose(to_numpy(reloaded(inputs)), expected, atol=1e-6)
    assert [w.path for w in reloaded.weights] == [w.path for w in model.weights]


def test_weights_round_trip(tmp_path):
    model = every_layer_model()
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    other = every_layer_model()
    other.load_weights(path)
    for saved, loaded in zip(model.weights, other.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(saved), to_numpy(loaded))

"""Models save to .keras and reload (safe_mode=True) to the same outputs,
on the same backend and on the other two: a functional model of every layer,
and every model class of `keras_tfm.models`."""

import importlib.util
import os
import sys

import keras
import numpy as np
import pytest

from keras_tfm import (
    DecoderBlock,
    EncoderBlock,
    FeedForward,
    MultiHeadCrossAttention,
    MultiHeadSelfAttention,
    PositionalEmbedding,
    SinusoidalEncoding,
)
from tests.conftest import run_module, to_numpy
from tests.test_models import CASES as MODEL_CASES


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


def example_inputs():
    rng = np.random.default_rng(0)
    return [
        np.concatenate([rng.integers(1, 20, (2, 4)), np.zeros((2, 2), int)], 1),
        rng.integers(1, 20, (2, 5)),
    ]


def test_save_and_load_round_trip(tmp_path):
    model = every_layer_model()
    inputs = example_inputs()
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


# Each suite loads its files on the next backend of this cycle, so every
# backend saves once and loads once (a process per pair cost CI a minute).
NEXT_BACKEND = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}


@pytest.mark.skipif(
    importlib.util.find_spec(NEXT_BACKEND[keras.backend.backend()]) is None,
    reason="the next backend is not installed (the floors' check)",
)
def test_a_saved_model_loads_identically_on_another_backend(tmp_path):
    backend = NEXT_BACKEND[keras.backend.backend()]
    model = every_layer_model()
    model.save(str(tmp_path / "model.keras"))
    model.save_weights(str(tmp_path / "model.weights.h5"))
    np.save(tmp_path / "outputs.npy", to_numpy(model(example_inputs())))
    for name, case in MODEL_CASES.items():
        model, inputs, _, _ = case()
        model.save(str(tmp_path / f"{name}.keras"))
        np.save(tmp_path / f"{name}.npy", to_numpy(model(inputs)))
    result = run_module(
        "tests.test_saving",
        tmp_path,
        env={"KERAS_BACKEND": backend},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"{backend}: model and weights load identically" in result.stdout


def load_elsewhere(directory):
    """Loads, on this process's backend, what another backend saved."""
    expected = np.load(os.path.join(directory, "outputs.npy"))
    model = keras.models.load_model(os.path.join(directory, "model.keras"))
    fresh = every_layer_model()
    fresh.load_weights(os.path.join(directory, "model.weights.h5"))
    for loaded in (model, fresh):
        outputs = to_numpy(loaded(example_inputs()))
        np.testing.assert_allclose(outputs, expected, atol=1e-5, rtol=1e-5)
    for name, case in MODEL_CASES.items():
        built, inputs, _, _ = case()
        loaded = keras.models.load_model(
            os.path.join(directory, f"{name}.keras")
        )
        assert type(loaded) is type(built), (name, type(loaded))
        expected = np.load(os.path.join(directory, f"{name}.npy"))
        np.testing.assert_allclose(
            to_numpy(loaded(inputs)), expected, atol=1e-5, rtol=1e-5
        )
    print(f"{keras.backend.backend()}: model and weights load identically")


def test_a_hugging_face_checkpoint_round_trips(tmp_path):
    """Written and read back with safetensors alone (no torch or transformers),
    so the floors' check covers the `huggingface` extra too."""
    pytest.importorskip("safetensors")
    from keras_tfm import interop, models

    model = models.causal_lm(
        vocab_size=40, sequence_length=8, num_layers=1, embed_dim=16,
        num_heads=2, ff_dim=32, attention={"rotary": True, "use_bias": False},
        feed_forward={"activation": "swiglu", "use_bias": False}, norm="rms",
        tie_embeddings=False, output_bias=False,
    )  # fmt: skip
    interop.to_huggingface(model, tmp_path)
    loaded = interop.from_huggingface(tmp_path)
    tokens = np.arange(1, 17).reshape(2, 8)
    np.testing.assert_allclose(
        to_numpy(loaded(tokens)), to_numpy(model(tokens)), atol=1e-5
    )


if __name__ == "__main__":
    load_elsewhere(sys.argv[1])

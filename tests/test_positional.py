"""Position layers against their formulas, masks and length limits."""

import keras
import numpy as np
import pytest

from keras_tfm import PositionalEmbedding, SinusoidalEncoding
from tests import reference
from tests.conftest import to_numpy


@pytest.mark.parametrize("dim", [8, 7])
def test_sinusoidal_encoding_matches_paper(dim):
    signal = to_numpy(SinusoidalEncoding()(np.zeros((2, 20, dim), "float32")))
    expected = reference.sinusoidal(20, dim)
    np.testing.assert_allclose(signal[0], expected, atol=1e-5)
    np.testing.assert_allclose(signal[1], expected, atol=1e-5)


def test_sinusoidal_encoding_start_index_continues_the_signal():
    layer = SinusoidalEncoding()
    full = to_numpy(layer(np.zeros((1, 10, 8), "float32")))
    tail = to_numpy(layer(np.zeros((1, 3, 8), "float32"), start_index=7))
    np.testing.assert_allclose(tail, full[:, 7:], atol=1e-5)


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_positional_embedding_adds_positions(position):
    layer = PositionalEmbedding(
        20, 10, 8, position=position, scale_embeddings=True
    )
    tokens = np.array([[3, 3, 3, 7]])
    outputs = to_numpy(layer(tokens))
    table = to_numpy(layer.token_embedding.embeddings)
    if position == "learned":
        positions = to_numpy(layer.position_embeddings)[:4]
    else:
        positions = reference.sinusoidal(4, 8)
    expected = table[tokens[0]] * np.sqrt(8) + positions
    np.testing.assert_allclose(outputs[0], expected, atol=1e-5)
    shifted = to_numpy(layer(tokens[:, 1:], start_index=1))
    np.testing.assert_allclose(shifted, outputs[:, 1:], atol=1e-5)


def test_positional_embedding_mask_and_padding_invariance():
    layer = PositionalEmbedding(20, 10, 8, mask_zero=True)
    tokens = np.array([[5, 6, 7]])
    padded = np.array([[5, 6, 7, 0, 0]])
    np.testing.assert_array_equal(
        to_numpy(layer.compute_mask(padded)), [[True, True, True, False, False]]
    )
    np.testing.assert_allclose(
        to_numpy(layer(padded))[:, :3], to_numpy(layer(tokens)), atol=1e-6
    )


def test_positional_embedding_in_functional_model_propagates_mask():
    tokens = keras.Input((None,), dtype="int32")
    embedded = PositionalEmbedding(20, 10, 8, mask_zero=True)(tokens)
    assert embedded._keras_mask is not None

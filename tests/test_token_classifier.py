"""`TokenClassifier`: one prediction per token, padding skipped."""

import keras
import numpy as np
import pytest

from keras_tfm import models
from keras_tfm.models.token_classifier import TokenClassifier
from tests.conftest import to_numpy
from tests.reference import softmax

TOKENS = np.array([[2, 5, 7, 9, 0, 0], [3, 4, 0, 0, 0, 0]])
LABELS = np.array([[1, 2, 0, 1, 0, 0], [2, 2, 0, 0, 0, 0]])
# ModernBERT's head: a dense GELU layer without bias, then a layer norm.
TRANSFORM = {
    "activation": "gelu",
    "use_bias": False,
    "norm": {"type": "layer", "epsilon": 1e-5},
}


def tagger(transform=None):
    encoder = models.TextEncoder(
        vocab_size=20, sequence_length=8, num_layers=1, embed_dim=16,
        num_heads=2, ff_dim=32, dropout=0.0,
    )  # fmt: skip
    return TokenClassifier(encoder, 3, dropout=0.0, transform=transform)


def test_logits_per_token_with_the_padding_mask():
    model = tagger()
    logits = model(TOKENS)
    assert tuple(logits.shape) == (2, 6, 3)
    np.testing.assert_array_equal(to_numpy(logits._keras_mask), TOKENS != 0)
    # The head is one Dense layer on the encoder's outputs.
    hidden = to_numpy(model.encoder(TOKENS))
    kernel, bias = (to_numpy(w) for w in model.head.weights)
    np.testing.assert_allclose(
        to_numpy(logits), hidden @ kernel + bias, atol=1e-5
    )


def test_transform_is_dense_activation_then_norm():
    model = tagger(TRANSFORM)
    assert model.transform_dense.bias is None
    assert model.transform_norm.epsilon == 1e-5
    hidden = to_numpy(model.encoder(TOKENS))
    kernel = to_numpy(model.transform_dense.kernel)
    x = keras.activations.gelu(hidden @ kernel, approximate=False)
    expected = model.head(model.transform_norm(x))
    np.testing.assert_allclose(
        to_numpy(model(TOKENS)), to_numpy(expected), atol=1e-5
    )


def test_fit_skips_padded_positions_and_reloads(tmp_path):
    model = tagger(TRANSFORM)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    logits = to_numpy(model(TOKENS))
    real = TOKENS != 0
    log_probabilities = np.log(softmax(logits))
    picked = np.take_along_axis(log_probabilities, LABELS[..., None], -1)
    # The labels of padded positions do not count: the first epoch's loss
    # (one batch, before the update) is the mean over real tokens.
    labels = np.where(real, LABELS, 2)
    history = model.fit(TOKENS, labels, epochs=3, verbose=0).history
    np.testing.assert_allclose(
        history["loss"][0], -picked[..., 0][real].mean(), rtol=1e-5
    )
    assert history["loss"][-1] < history["loss"][0]

    model.save(tmp_path / "tagger.keras")
    reloaded = keras.models.load_model(tmp_path / "tagger.keras")
    assert isinstance(reloaded, TokenClassifier)
    assert reloaded.get_config()["transform"] == TRANSFORM
    np.testing.assert_allclose(
        to_numpy(reloaded(TOKENS)), to_numpy(model(TOKENS)), atol=1e-5
    )


def test_argument_errors():
    encoder = tagger().encoder
    with pytest.raises(ValueError, match="`encoder` must be a `models.Te"):
        TokenClassifier("bert", 3)
    with pytest.raises(ValueError, match="num_classes.*Received: num_c.*0"):
        TokenClassifier(encoder, 0)
    with pytest.raises(ValueError, match="transform key.*'bias'"):
        TokenClassifier(encoder, 3, transform={"bias": False})
    with pytest.raises(ValueError, match="`transform` must be a bool"):
        TokenClassifier(encoder, 3, transform="gelu")

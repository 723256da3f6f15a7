"""Options of the encoders of ModernBERT's kind against NumPy formulas: a
bidirectional sliding window, layer norms without a bias, a block without
its attention's norm, and the masked-LM head's biases; each through its
config and a saved model."""

import keras
import numpy as np
import pytest
from keras.src.testing import TestCase

from keras_tfm import EncoderBlock, MultiHeadSelfAttention, models
from keras_tfm.layers.normalization import norm_options
from keras_tfm.models.masked_lm import BiasAdd
from tests import reference
from tests.conftest import random_inputs, to_numpy

BATCH, LENGTH, WIDTH = 2, 7, 16


def bidirectional_window(length, window):
    """Query i sees keys j with |i - j| < window."""
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    return np.abs(i - j) < window


def test_bidirectional_sliding_window_matches_numpy(attention_path):
    layer = MultiHeadSelfAttention(4, num_kv_heads=2, sliding_window=3)
    x = random_inputs(BATCH, LENGTH, WIDTH)
    padding = np.array([[1] * LENGTH, [1] * 5 + [0] * 2], bool)
    outputs, scores = layer(
        x, padding_mask=padding, return_attention_scores=True
    )
    mask = bidirectional_window(LENGTH, 3)[None] & padding[:, None, :]
    scores = to_numpy(scores)
    hidden = ~np.broadcast_to(mask[:, None], scores.shape)
    np.testing.assert_array_equal(scores[hidden], 0.0)
    expected, _ = reference.multi_head_attention(layer, x, mask=mask)
    np.testing.assert_allclose(to_numpy(outputs), expected, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(layer(x, padding_mask=padding)), expected, atol=1e-5
    )
    # Without a rolling buffer: a prefill of the whole cache is the call.
    cache = layer.initial_cache(BATCH, LENGTH)
    assert cache.shape[3] == LENGTH
    cached, _ = layer.call_with_cache(x, cache, 0, padding_mask=padding)
    np.testing.assert_allclose(to_numpy(cached), expected, atol=1e-5)


def test_a_causal_window_still_sees_the_keys_before_only():
    layer = MultiHeadSelfAttention(2, causal=True, sliding_window=3)
    _, scores = layer(random_inputs(1, LENGTH, 8), return_attention_scores=True)
    i, j = np.arange(LENGTH)[:, None], np.arange(LENGTH)[None, :]
    seen = to_numpy(scores)[0, 0] > 0
    np.testing.assert_array_equal(seen, (j <= i) & (j > i - 3))


def layer_norm(x, gamma, beta=0.0, epsilon=1e-5):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def test_bias_less_norm_and_skipped_norm_match_numpy():
    """A pre-norm block without its attention's norm:
    `h = x + attn(x)`, `h + ff(norm(h))`, the norm without a bias."""
    block = EncoderBlock(
        num_heads=2, ff_dim=32, dropout=0.0,
        norm={"placement": "pre", "use_bias": False,
              "skip": ["self_attention"]},
    )  # fmt: skip
    x = random_inputs(BATCH, LENGTH, WIDTH)
    outputs = to_numpy(block(x))
    assert block.self_attention_norm is None
    norm = block.feed_forward_norm
    assert norm.beta is None and len(norm.weights) == 1
    norm.gamma.assign(random_inputs(WIDTH, seed=3))
    attention, _ = reference.multi_head_attention(block.self_attention, x)
    h = x + attention
    normed = layer_norm(h, to_numpy(norm.gamma))
    feed_forward = to_numpy(block.feed_forward(normed))
    np.testing.assert_allclose(to_numpy(block(x)), h + feed_forward, atol=1e-5)
    assert not np.allclose(outputs, h + feed_forward, atol=1e-3)  # gamma


def test_norm_options_leave_the_defaults_out():
    assert norm_options({"use_bias": True, "skip": []}) == norm_options(None)
    options = norm_options({"use_bias": False, "skip": ("feed_forward",)})
    assert options["use_bias"] is False
    assert options["skip"] == ["feed_forward"]


@pytest.mark.parametrize(
    "norm, names",
    [
        ({"type": "rms", "use_bias": False}, ["norm['use_bias']", "'rms'"]),
        ({"use_bias": "no"}, ["norm['use_bias']", "'no'"]),
        ({"skip": "self_attention"}, ["norm['skip']", "list"]),
        ({"skip": ["attention"]}, ["norm['skip']", "'attention'"]),
    ],
)
def test_bad_norm_options_name_the_option(norm, names):
    with pytest.raises(ValueError) as error:
        norm_options(norm)
    for name in names:
        assert name in str(error.value)


def encoder():
    """ModernBERT's encoder: rotary positions, bias-less pre-norms, the
    first block without its attention's norm, the second local."""
    return models.TextEncoder(
        vocab_size=30, sequence_length=16, num_layers=2, embed_dim=WIDTH,
        num_heads=2, ff_dim=24, dropout=0.0, position=None,
        embedding_norm=True,
        attention={"rotary": True, "use_bias": False},
        feed_forward={"activation": "geglu_tanh", "use_bias": False},
        norm={"placement": "pre", "use_bias": False},
        layer_overrides=[
            {"norm": {"skip": ["self_attention"]}},
            {"attention": {"sliding_window": 2}},
        ],
    )  # fmt: skip


TOKENS = np.array([[3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 0, 0]])


def test_encoder_options_round_trip_through_a_saved_model(tmp_path):
    model = encoder()
    first, second = model.blocks
    assert first.self_attention_norm is None
    assert second.self_attention_norm.beta is None
    assert second.self_attention.sliding_window == 2
    assert not first.self_attention.sliding_window
    config = model.get_config()
    assert config["norm"]["use_bias"] is False
    expected = to_numpy(model(TOKENS))
    path = tmp_path / "encoder.keras"
    model.save(path)
    np.testing.assert_allclose(
        to_numpy(keras.models.load_model(path)(TOKENS)), expected, atol=1e-6
    )


def test_masked_lm_head_options_and_their_saved_model(tmp_path):
    model = models.MaskedLM(
        encoder(), head_bias=False, head_norm_bias=False, output_bias=True
    )
    assert model.head_dense.bias is None
    assert model.head_norm.beta is None
    assert model.output_projection is None
    bias = model.output_bias_layer.bias
    assert tuple(bias.shape) == (30,)
    inputs = {"tokens": TOKENS, "mask_positions": np.array([[1, 2], [0, 3]])}
    before = to_numpy(model(inputs))
    bias.assign(np.arange(30, dtype="float32"))
    after = to_numpy(model(inputs))
    np.testing.assert_allclose(
        after - before, np.broadcast_to(np.arange(30), after.shape), atol=1e-5
    )
    config = model.get_config()
    assert (config["head_bias"], config["head_norm_bias"]) == (False, False)
    assert config["output_bias"] is True
    path = tmp_path / "masked_lm.keras"
    model.save(path)
    np.testing.assert_allclose(
        to_numpy(keras.models.load_model(path)(inputs)), after, atol=1e-5
    )


def test_masked_lm_defaults_are_unchanged():
    shared = encoder()
    tied = models.MaskedLM(shared)
    assert tied.output_bias_layer is None
    assert tied.head_dense.bias is not None
    assert tied.head_norm.beta is not None
    untied = models.MaskedLM(shared, tie_embeddings=False)
    assert untied.output_projection.bias is not None
    bias_less = models.MaskedLM(shared, tie_embeddings=False, output_bias=False)
    assert bias_less.output_projection.bias is None
    assert bias_less.output_bias_layer is None
    with pytest.raises(ValueError, match="output_bias.*'yes'"):
        models.MaskedLM(shared, output_bias="yes")


class BiasAddHarnessTest(TestCase):
    def test_bias_add(self):
        self.run_layer_test(
            BiasAdd,
            init_kwargs={},
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=1,
            supports_masking=True,
        )

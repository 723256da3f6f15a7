"""Encoder and decoder blocks: causality, padding invariance, norms."""

import keras
import numpy as np
import pytest

from keras_tfm import DecoderBlock, EncoderBlock, PositionalEmbedding
from tests.conftest import random_inputs, to_numpy

WIDTH = 8


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"norm_first": True, "rotary": True, "activation": "swiglu"},
        {"num_kv_heads": 1, "norm": "rms"},
    ],
)
def test_decoder_ignores_the_future(options, attention_path):
    block = DecoderBlock(2, 16, cross_attention=False, dropout=0, **options)
    x = random_inputs(2, 7, WIDTH)
    changed = x.copy()
    changed[:, 4:] = random_inputs(2, 3, WIDTH, seed=1)
    before, after = to_numpy(block(x)), to_numpy(block(changed))
    np.testing.assert_allclose(before[:, :4], after[:, :4], atol=1e-5)
    assert not np.allclose(before[:, 4:], after[:, 4:])


def test_encoder_decoder_block_ignores_the_future_but_sees_all_context():
    block = DecoderBlock(2, 16, dropout=0)
    x = random_inputs(2, 5, WIDTH)
    context = random_inputs(2, 6, WIDTH, seed=2)
    changed = x.copy()
    changed[:, 3:] += 1.0
    np.testing.assert_allclose(
        to_numpy(block(x, context))[:, :3],
        to_numpy(block(changed, context))[:, :3],
        atol=1e-5,
    )
    changed_context = context.copy()
    changed_context[:, -1] += 1.0
    assert not np.allclose(
        to_numpy(block(x, context))[:, 0],
        to_numpy(block(x, changed_context))[:, 0],
    )


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_padding_does_not_change_real_tokens(
    norm_first, attention_path
):
    block = EncoderBlock(2, 16, dropout=0, norm_first=norm_first)
    x = random_inputs(2, 5, WIDTH)
    padded = np.concatenate([x, random_inputs(2, 3, WIDTH, seed=3)], axis=1)
    padding_mask = np.array([[1] * 5 + [0] * 3] * 2)
    np.testing.assert_allclose(
        to_numpy(block(padded, padding_mask=padding_mask))[:, :5],
        to_numpy(block(x)),
        atol=1e-5,
    )


def test_decoder_padding_of_target_and_context_does_not_change_outputs():
    block = DecoderBlock(2, 16, dropout=0)
    x = random_inputs(1, 4, WIDTH)
    context = random_inputs(1, 5, WIDTH, seed=4)
    padded_x = np.concatenate([x, np.ones((1, 2, WIDTH), "float32")], 1)
    padded_context = np.concatenate(
        [context, np.ones((1, 3, WIDTH), "float32")], 1
    )
    outputs = block(
        padded_x,
        padded_context,
        padding_mask=np.array([[1, 1, 1, 1, 0, 0]]),
        context_padding_mask=np.array([[1] * 5 + [0] * 3]),
    )
    np.testing.assert_allclose(
        to_numpy(outputs)[:, :4], to_numpy(block(x, context)), atol=1e-5
    )


def test_stacked_encoder_uses_keras_mask_from_embedding():
    tokens = keras.Input((None,), dtype="int32")
    x = PositionalEmbedding(30, 12, WIDTH, mask_zero=True)(tokens)
    for _ in range(2):
        x = EncoderBlock(2, 16, dropout=0)(x)
    model = keras.Model(tokens, x)
    short = np.array([[4, 5, 6]])
    padded = np.array([[4, 5, 6, 0, 0, 0]])
    np.testing.assert_allclose(
        to_numpy(model(padded))[:, :3], to_numpy(model(short)), atol=1e-5
    )


def test_post_norm_and_pre_norm_residuals():
    x = random_inputs(2, 4, WIDTH)
    post = EncoderBlock(2, 16, dropout=0)
    outputs = to_numpy(post(x))
    # Post-norm ends in a LayerNormalization with unit scale: each position
    # has mean 0 and variance 1.
    np.testing.assert_allclose(outputs.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(outputs.var(-1), 1, atol=1e-3)
    pre = EncoderBlock(2, 16, dropout=0, norm_first=True)
    outputs = to_numpy(pre(x))
    hidden = x + to_numpy(pre.self_attention(pre.self_attention_norm(x)))
    expected = hidden + to_numpy(
        pre.feed_forward(pre.feed_forward_norm(hidden))
    )
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


def test_weight_paths_are_stable():
    block = DecoderBlock(2, 16, name="decoder")
    block(random_inputs(1, 3, WIDTH), random_inputs(1, 4, WIDTH))
    paths = sorted(weight.path for weight in block.weights)
    assert "decoder/self_attention/query/kernel" in paths
    assert "decoder/cross_attention/key/kernel" in paths
    assert "decoder/feed_forward/hidden/kernel" in paths
    assert "decoder/cross_attention_norm/gamma" in paths


def test_blocks_return_attention_scores():
    # keras-hub #1644: users could not get attention weights from decoders.
    x = random_inputs(2, 5, WIDTH)
    context = random_inputs(2, 6, WIDTH, seed=5)
    context_padding = np.array([[1, 1, 1, 1, 0, 0], [1] * 6])
    decoder = DecoderBlock(2, 16, dropout=0)
    plain = to_numpy(decoder(x, context, context_padding_mask=context_padding))
    outputs, self_scores, cross_scores = decoder(
        x,
        context,
        context_padding_mask=context_padding,
        return_attention_scores=True,
    )
    np.testing.assert_allclose(to_numpy(outputs), plain, atol=1e-5)
    self_scores, cross_scores = to_numpy(self_scores), to_numpy(cross_scores)
    assert self_scores.shape == (2, 2, 5, 5)
    assert cross_scores.shape == (2, 2, 5, 6)
    # Causal: no weight on later positions. Padding: none on padded context.
    assert np.all(self_scores[..., np.triu_indices(5, k=1)[0],
                              np.triu_indices(5, k=1)[1]] == 0)  # fmt: skip
    assert np.all(cross_scores[0, :, :, 4:] == 0)
    np.testing.assert_allclose(cross_scores.sum(-1), 1.0, atol=1e-5)

    encoder = EncoderBlock(2, 16, dropout=0)
    outputs, scores = encoder(x, return_attention_scores=True)
    _, direct = encoder.self_attention(x, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(scores), to_numpy(direct), atol=1e-6)
    np.testing.assert_allclose(
        to_numpy(outputs), to_numpy(encoder(x)), atol=1e-5
    )


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_block_matches_keras_hub_transformer_encoder(norm_first):
    keras_hub = pytest.importorskip("keras_hub")
    theirs = keras_hub.layers.TransformerEncoder(
        intermediate_dim=32,
        num_heads=2,
        dropout=0.0,
        normalize_first=norm_first,
    )
    ours = EncoderBlock(2, 32, dropout=0.0, norm_first=norm_first)
    x = random_inputs(2, 6, WIDTH)
    padding = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    expected = to_numpy(theirs(x, padding_mask=padding))
    ours.build(x.shape)
    hub_attention = theirs._self_attention_layer
    pairs = [
        (ours.self_attention.query_dense, hub_attention._query_dense),
        (ours.self_attention.key_dense, hub_attention._key_dense),
        (ours.self_attention.value_dense, hub_attention._value_dense),
        (ours.self_attention.output_dense, hub_attention._output_dense),
        (ours.self_attention_norm, theirs._self_attention_layer_norm),
        (
            ours.feed_forward.hidden_dense,
            theirs._feedforward_intermediate_dense,
        ),
        (ours.feed_forward.output_dense, theirs._feedforward_output_dense),
        (ours.feed_forward_norm, theirs._feedforward_layer_norm),
    ]
    for mine, hub in pairs:
        assert len(mine.weights) == len(hub.weights)
        for weight, value in zip(mine.weights, hub.get_weights(), strict=True):
            weight.assign(value)
    outputs = to_numpy(ours(x, padding_mask=padding))
    np.testing.assert_allclose(outputs[padding], expected[padding], atol=1e-5)

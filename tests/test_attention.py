"""Attention layers against the paper's formula, masks and scores."""

import keras
import numpy as np
import pytest

from keras_tfm import MultiHeadCrossAttention, MultiHeadSelfAttention
from tests import reference
from tests.conftest import random_inputs, to_numpy

BATCH, LENGTH, WIDTH = 2, 6, 12
PADDING = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)


def padding_as_pairs(padding_mask, query_length):
    return np.repeat(padding_mask[:, None, :], query_length, axis=1)


@pytest.mark.parametrize(
    "num_heads,num_kv_heads,causal,use_padding",
    [
        (3, None, False, False),
        (3, None, False, True),
        (3, None, True, False),
        (4, 2, True, True),
        (4, 1, False, True),
    ],
)
def test_self_attention_matches_formula(
    num_heads, num_kv_heads, causal, use_padding, attention_path
):
    x = random_inputs(BATCH, LENGTH, WIDTH)
    layer = MultiHeadSelfAttention(
        num_heads, num_kv_heads=num_kv_heads, causal=causal
    )
    padding_mask = PADDING if use_padding else None
    outputs = to_numpy(layer(x, padding_mask=padding_mask))

    mask = np.ones((BATCH, LENGTH, LENGTH), bool)
    if use_padding:
        mask &= padding_as_pairs(PADDING, LENGTH)
    if causal:
        mask &= reference.causal(LENGTH)
    expected, _ = reference.multi_head_attention(layer, x, mask=mask)
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


def test_attention_mask_combines_with_padding(attention_path):
    x = random_inputs(BATCH, LENGTH, WIDTH)
    rng = np.random.default_rng(1)
    attention_mask = rng.random((BATCH, LENGTH, LENGTH)) < 0.7
    attention_mask[:, :, 0] = True  # every query sees at least one key
    layer = MultiHeadSelfAttention(2)
    outputs = to_numpy(
        layer(x, padding_mask=PADDING, attention_mask=attention_mask)
    )
    mask = attention_mask & padding_as_pairs(PADDING, LENGTH)
    expected, _ = reference.multi_head_attention(layer, x, mask=mask)
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


def test_scores_path_equals_fused_path_and_formula(monkeypatch):
    from keras_tfm.layers import kernels

    monkeypatch.setattr(
        kernels, "explicit_attention_is_faster", lambda query, key: False
    )
    x = random_inputs(BATCH, LENGTH, WIDTH)
    layer = MultiHeadSelfAttention(3, causal=True)
    fused = to_numpy(layer(x, padding_mask=PADDING))
    outputs, scores = layer(
        x, padding_mask=PADDING, return_attention_scores=True
    )
    mask = padding_as_pairs(PADDING, LENGTH) & reference.causal(LENGTH)
    expected, weights = reference.multi_head_attention(layer, x, mask=mask)
    assert tuple(scores.shape) == (BATCH, 3, LENGTH, LENGTH)
    np.testing.assert_allclose(to_numpy(outputs), fused, atol=1e-5)
    np.testing.assert_allclose(to_numpy(scores), weights, atol=1e-5)
    # Rows sum to one over visible keys; future and padding keys get zero.
    np.testing.assert_allclose(to_numpy(scores).sum(-1), 1.0, atol=1e-5)
    assert np.all(
        to_numpy(scores)[~np.broadcast_to(mask[:, None], weights.shape)] == 0
    )


def test_keras_mask_is_a_padding_mask(attention_path):
    tokens = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    embedding = keras.layers.Embedding(10, WIDTH, mask_zero=True)
    layer = MultiHeadSelfAttention(2)
    from_keras_mask = to_numpy(layer(embedding(tokens)))
    explicit = to_numpy(
        layer(to_numpy(embedding(tokens)), padding_mask=tokens != 0)
    )
    np.testing.assert_allclose(from_keras_mask, explicit, atol=1e-6)


def test_cross_attention_matches_formula(attention_path):
    x = random_inputs(BATCH, 4, WIDTH)
    context = random_inputs(BATCH, LENGTH, 8, seed=1)
    layer = MultiHeadCrossAttention(3)
    outputs, scores = layer(
        x, context, context_padding_mask=PADDING, return_attention_scores=True
    )
    mask = padding_as_pairs(PADDING, 4)
    expected, weights = reference.multi_head_attention(
        layer, x, context, mask=mask
    )
    assert tuple(outputs.shape) == (BATCH, 4, WIDTH)
    np.testing.assert_allclose(to_numpy(outputs), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(scores), weights, atol=1e-5)
    fused = layer(x, context, context_padding_mask=PADDING)
    np.testing.assert_allclose(to_numpy(fused), expected, atol=1e-5)


@pytest.mark.parametrize("jit_compile", [True, False])
def test_compiled_and_eager_predictions_agree(jit_compile, attention_path):
    inputs = keras.Input((LENGTH, WIDTH))
    padding = keras.Input((LENGTH,), dtype="bool")
    outputs = MultiHeadSelfAttention(3, causal=True)(
        inputs, padding_mask=padding
    )
    model = keras.Model([inputs, padding], outputs)
    model.compile(jit_compile=jit_compile)
    x = random_inputs(BATCH, LENGTH, WIDTH)
    compiled = model.predict([x, PADDING], verbose=0)
    eager = to_numpy(model([x, PADDING]))
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_path_choice_works_when_first_made_inside_a_compiled_step():
    # The choice is cached per process, so only a fresh process shows what
    # happens when it is first made while `fit` traces the model.
    import subprocess
    import sys

    script = (
        "import keras, numpy as np\n"
        "from keras_tfm import models\n"
        "m = models.text_classifier(50, 8, 2, num_layers=1, embed_dim=8,\n"
        "    num_heads=2, ff_dim=8)\n"
        "m.compile(optimizer='sgd', loss='mse')\n"
        "m.fit(np.ones((4, 8), 'int32'), np.zeros((4, 2)), verbose=0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_causal_block_reaches_the_fused_is_causal_path(monkeypatch):
    # keras #23277, keras-hub #2046: fused kernels bypassed by an explicit
    # causal mask or by attention dropout.
    from keras_tfm import DecoderBlock
    from keras_tfm.layers import kernels

    monkeypatch.setattr(
        kernels, "explicit_attention_is_faster", lambda query, key: False
    )
    # PyTorch's kernel is called directly (`kernels.fused_attention`).
    module, name, mask = keras.ops, "dot_product_attention", "mask"
    if keras.backend.backend() == "torch":
        import torch

        module, name = torch.nn.functional, "scaled_dot_product_attention"
        mask = "attn_mask"
    calls = []
    original = getattr(module, name)

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    x = random_inputs(BATCH, LENGTH, WIDTH)
    block = DecoderBlock(3, 16, dropout=0.5, cross_attention=False)
    block(x, training=True)
    assert calls[-1][mask] is None and calls[-1]["is_causal"] is True
    block(x, padding_mask=PADDING, training=True)
    assert calls[-1][mask] is not None and calls[-1]["is_causal"] is False

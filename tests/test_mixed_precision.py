"""Mixed precision policies, and rows where every key is masked."""

import keras
import numpy as np
import pytest

from keras_tfm import (
    DecoderBlock,
    EncoderBlock,
    MultiHeadCrossAttention,
    MultiHeadSelfAttention,
    PositionalEmbedding,
)
from tests.conftest import to_numpy

POLICIES = ["float32", "mixed_float16", "mixed_bfloat16"]


def tokens():
    # The second sequence is all padding: every key of it is masked.
    return np.array([[5, 6, 7, 0, 0], [0, 0, 0, 0, 0]])


@pytest.mark.parametrize("policy", POLICIES)
def test_blocks_are_finite_with_fully_masked_rows(policy, attention_path):
    keras.config.set_dtype_policy(policy)
    embed = PositionalEmbedding(10, 8, 16, mask_zero=True)
    x = embed(tokens())
    encoded = EncoderBlock(2, 32, dropout=0)(x)
    decoded = DecoderBlock(2, 32, dropout=0)(x, encoded)
    for outputs in (encoded, decoded):
        assert keras.backend.standardize_dtype(outputs.dtype) == (
            keras.config.dtype_policy().compute_dtype
        )
        assert np.isfinite(to_numpy(outputs).astype("float32")).all()


@pytest.mark.parametrize("policy", POLICIES)
def test_attention_scores_are_finite_with_fully_masked_rows(policy):
    keras.config.set_dtype_policy(policy)
    x = np.random.default_rng(0).normal(size=(2, 4, 8)).astype("float32")
    padding_mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool)
    layer = MultiHeadSelfAttention(2, causal=True)
    outputs, scores = layer(
        x, padding_mask=padding_mask, return_attention_scores=True
    )
    fused = layer(x, padding_mask=padding_mask)
    for tensor in (outputs, scores, fused):
        assert np.isfinite(to_numpy(tensor).astype("float32")).all()
    cross = MultiHeadCrossAttention(2)(x, x, context_padding_mask=padding_mask)
    assert np.isfinite(to_numpy(cross).astype("float32")).all()


def test_mixed_precision_keeps_float32_weights():
    keras.config.set_dtype_policy("mixed_bfloat16")
    block = EncoderBlock(2, 16)
    block(np.ones((1, 3, 8), "float32"))
    assert {w.dtype for w in block.weights} == {"float32"}

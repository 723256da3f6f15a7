"""Attention variants of today's decoders against NumPy formulas: query/key
norm, logit soft-capping, sliding window (mask and rolling cache)."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from keras_tfm import DecoderBlock, MultiHeadSelfAttention, generation, models
from tests import reference
from tests.conftest import random_inputs, to_numpy

BATCH, LENGTH, WIDTH = 2, 7, 16


def attention_reference(layer, x, mask, norm=None, soft_cap=None):
    """softmax(cap(Q K^T / sqrt(d)) + mask) V with NumPy, the queries and
    keys passed through `norm(name, tensor)` after their projection."""
    query = reference.projection(layer.query_dense, x)
    key = reference.projection(layer.key_dense, x)
    value = reference.projection(layer.value_dense, x)
    if norm is not None:
        query, key = norm("query_norm", query), norm("key_norm", key)
    groups = query.shape[2] // key.shape[2]
    key, value = np.repeat(key, groups, 2), np.repeat(value, groups, 2)
    logits = np.einsum("btnh,bsnh->bnts", query, key) / np.sqrt(key.shape[-1])
    if soft_cap is not None:
        logits = soft_cap * np.tanh(logits / soft_cap)
    logits = np.where(mask, logits, -np.inf)
    heads = np.einsum("bnts,bsnh->btnh", reference.softmax(logits), value)
    return reference.projection(layer.output_dense, heads)


def window_mask(length, window):
    """Query i sees keys j with i - window < j <= i."""
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    return (j <= i) & (j > i - window)


@pytest.mark.parametrize("scope", ["head", "projection"])
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_query_key_norm_matches_numpy(scope, offset):
    layer = MultiHeadSelfAttention(
        4, key_dim=6, num_kv_heads=2, causal=True,
        query_key_norm={"scope": scope, "offset": offset, "epsilon": 1e-5},
    )  # fmt: skip
    x = random_inputs(BATCH, LENGTH, WIDTH)
    layer(x)
    rng = np.random.default_rng(1)
    sizes = {"head": (6, 6), "projection": (24, 12)}[scope]
    for norm, size in zip(
        (layer.query_norm, layer.key_norm), sizes, strict=True
    ):
        assert tuple(norm.scale.shape) == (size,)
        norm.scale.assign(rng.normal(size=size).astype("float32"))

    def norm(name, tensor):
        axes = -1 if scope == "head" else (-2, -1)
        rms = np.sqrt(np.mean(tensor**2, axis=axes, keepdims=True) + 1e-5)
        scale = offset + to_numpy(getattr(layer, name).scale)
        return (
            tensor
            / rms
            * scale.reshape(
                tensor.shape[-1:] if scope == "head" else tensor.shape[-2:]
            )
        )

    expected = attention_reference(layer, x, window_mask(LENGTH, LENGTH), norm)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5)


def test_gemma_style_offset_starts_as_an_identity_scale():
    layer = MultiHeadSelfAttention(2, query_key_norm={"offset": 1.0})
    layer(random_inputs(1, 3, 8))
    np.testing.assert_array_equal(to_numpy(layer.query_norm.scale), 0.0)


def test_logit_soft_cap_matches_numpy(attention_path):
    layer = MultiHeadSelfAttention(2, causal=True, logit_soft_cap=0.5)
    x = 4 * random_inputs(BATCH, LENGTH, WIDTH)  # logits well past the cap
    outputs, scores = layer(x, return_attention_scores=True)
    mask = window_mask(LENGTH, LENGTH)
    expected = attention_reference(layer, x, mask, soft_cap=0.5)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(outputs), expected, atol=1e-5)
    uncapped = attention_reference(layer, x, mask)
    assert not np.allclose(expected, uncapped, atol=1e-3)


def test_sliding_window_matches_numpy(attention_path):
    layer = MultiHeadSelfAttention(
        4, num_kv_heads=2, causal=True, sliding_window=3
    )
    x = random_inputs(BATCH, LENGTH, WIDTH)
    outputs, scores = layer(x, return_attention_scores=True)
    mask = window_mask(LENGTH, 3)
    np.testing.assert_array_equal(to_numpy(scores)[..., ~mask], 0.0)
    expected = attention_reference(layer, x, mask)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5)
    # A position ignores the keys beyond its window.
    changed = x.copy()
    changed[:, :2] = random_inputs(BATCH, 2, WIDTH, seed=5)
    np.testing.assert_allclose(
        to_numpy(layer(changed))[:, 4:], to_numpy(layer(x))[:, 4:], atol=1e-6
    )


def compiled(function):
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(function, jit_compile=True)
    return function


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(
    "chunks", [[1, 2, 3, 4, 5, 6, 7, 8, 9], [5, 7, 9], [2, 9]]
)
def test_a_window_sized_cache_equals_the_full_call(chunks, jit):
    # Window 3, 9 positions: prefills shorter and longer than the window,
    # and decoding far past it.
    layer = MultiHeadSelfAttention(
        4, num_kv_heads=2, causal=True, sliding_window=3,
        rotary=True, query_key_norm={},
    )  # fmt: skip
    x = random_inputs(BATCH, 9, WIDTH)
    full = to_numpy(layer(x))
    cache = layer.initial_cache(BATCH, 9)
    assert tuple(cache.shape) == (BATCH, 2, 2, 3, 4)
    step = layer.call_with_cache
    if jit:
        step = compiled(
            lambda x, cache, index: tuple(
                layer.call_with_cache(x, cache, index)
            )
        )
    outputs, start = [], 0
    for end in chunks:
        index = ops.convert_to_tensor(start, "int32") if jit else start
        output, cache = step(x[:, start:end], cache, index)
        outputs.append(to_numpy(output))
        start = end
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), full, atol=1e-5)


def test_a_cache_shorter_than_the_window_holds_every_position():
    layer = MultiHeadSelfAttention(2, causal=True, sliding_window=8)
    x = random_inputs(1, 5, 8)
    full = to_numpy(layer(x))
    cache = layer.initial_cache(1, 5)
    assert cache.shape[3] == 5
    first, cache = layer.call_with_cache(x[:, :3], cache, 0)
    rest, _ = layer.call_with_cache(x[:, 3:], cache, 3)
    np.testing.assert_allclose(
        np.concatenate([to_numpy(first), to_numpy(rest)], 1), full, atol=1e-5
    )


@pytest.fixture(scope="module")
def sliding_model():
    keras.utils.set_random_seed(0)
    return models.causal_lm(
        vocab_size=40, sequence_length=32, num_layers=2, embed_dim=16,
        num_heads=2, ff_dim=32,
        attention={
            "rotary": True, "num_kv_heads": 1, "sliding_window": 3,
        },
    )  # fmt: skip


PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13]]


def test_generation_past_the_window_equals_the_uncached_model(sliding_model):
    # Prompts longer and shorter than the window, 8 new tokens past it.
    uncached = generation.generate(sliding_model, PROMPTS, 8, use_cache=False)
    cached = generation.generate(sliding_model, PROMPTS, 8)
    np.testing.assert_array_equal(cached, uncached)
    alone = generation.generate(sliding_model, [PROMPTS[0]], 8)
    np.testing.assert_array_equal(alone[0], uncached[0])
    streamed = list(generation.stream(sliding_model, PROMPTS, 8))
    np.testing.assert_array_equal(np.stack(streamed, axis=1), cached)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's")
def test_traced_sliding_steps_equal_the_eager_ones(sliding_model):
    eager = generation.generate(sliding_model, PROMPTS, 8, torch_step="eager")
    traced = generation.generate(sliding_model, PROMPTS, 8, torch_step="export")
    np.testing.assert_array_equal(traced, eager)


OPTIONS = {
    "num_heads": 2, "sliding_window": 4,
    "logit_soft_cap": 30.0,
    "query_key_norm": {"scope": "projection", "epsilon": 1e-5},
    "rotary": {
        "fraction": 0.5,
        "scaling": {
            "type": "yarn", "factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    },
}  # fmt: skip


def test_get_config_round_trip_through_a_block():
    block = DecoderBlock(
        attention=OPTIONS, ff_dim=32, norm_first=True, cross_attention=False
    )
    x = random_inputs(1, 6, 16)
    expected = to_numpy(block(x))
    config = block.get_config()
    attention = config["attention"]
    assert attention["query_key_norm"] == {
        "type": "rms", "epsilon": 1e-5, "scope": "projection", "offset": 0.0,
    }  # fmt: skip
    assert attention["sliding_window"] == 4
    assert attention["logit_soft_cap"] == 30.0
    assert attention["rotary"]["fraction"] == 0.5
    json.dumps(config)
    restored = DecoderBlock.from_config(config)
    restored(x)
    restored.set_weights(block.get_weights())
    np.testing.assert_allclose(to_numpy(restored(x)), expected, atol=1e-6)


@pytest.mark.parametrize(
    "options, names",
    [
        ({"query_key_norm": "rms"}, ["query_key_norm", "'rms'"]),
        ({"query_key_norm": {"eps": 1e-6}}, ["query_key_norm key", "'eps'"]),
        ({"query_key_norm": {"scope": "layer"}}, ["query_key_norm['scope']"]),
        ({"query_key_norm": {"type": "layer"}}, ["query_key_norm['type']"]),
        ({"query_key_norm": {"epsilon": 0}}, ["query_key_norm['epsilon']"]),
        ({"query_key_norm": {"offset": "1"}}, ["query_key_norm['offset']"]),
        ({"logit_soft_cap": 0}, ["logit_soft_cap", "positive"]),
        ({"logit_soft_cap": "50"}, ["logit_soft_cap"]),
        ({"sliding_window": 0}, ["sliding_window", "positive integer"]),
        ({"sliding_window": 2.5}, ["sliding_window"]),
        ({"rotary": {"fraction": 0}}, ["fraction", "(0, 1]"]),
    ],
)
def test_bad_values_name_the_option(options, names):
    with pytest.raises(ValueError) as error:
        MultiHeadSelfAttention(2, **{"causal": True, **options})
    for name in names:
        assert name in str(error.value)


def test_a_sliding_cache_takes_no_masks():
    layer = MultiHeadSelfAttention(2, causal=True, sliding_window=2)
    x = random_inputs(1, 3, 8)
    layer(x)
    cache = layer.initial_cache(1, 3)
    with pytest.raises(ValueError, match="rolling buffer"):
        layer.call_with_cache(x, cache, 0, padding_mask=np.ones((1, 3), bool))

"""Norm placements, the RMS offset, parallel residuals, per-layer overrides,
embedding scale and logit soft-capping, each against its formula."""

import math

import keras
import numpy as np
import pytest

from keras_tfm import (
    DecoderBlock,
    EncoderBlock,
    FeedForward,
    generation,
    models,
)
from keras_tfm.layers import options as options_module
from keras_tfm.layers.normalization import OffsetRMSNormalization
from tests.conftest import random_inputs, to_numpy

WIDTH = 16


def rms_norm(x, scale, epsilon):
    return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + epsilon) * scale


def randomize(layer, seed=0):
    """Random values in every weight, so that a norm's scale of 1 (or 0)
    cannot hide a norm applied in the wrong place."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))


def test_offset_rms_norm_scales_by_offset_plus_weight():
    x = random_inputs(2, 3, WIDTH)
    layer = OffsetRMSNormalization(epsilon=1e-6, offset=1.0)
    layer.build(x.shape)
    # Gemma's weights start at 0: a new layer is a plain RMS norm.
    np.testing.assert_array_equal(to_numpy(layer.scale), 0)
    np.testing.assert_allclose(
        to_numpy(layer(x)), rms_norm(x, 1.0, 1e-6), atol=1e-5
    )
    weight = random_inputs(WIDTH, seed=1)
    layer.scale.assign(weight)
    np.testing.assert_allclose(
        to_numpy(layer(x)), rms_norm(x, 1.0 + weight, 1e-6), atol=1e-5
    )


def test_norm_offset_reaches_the_blocks_and_final_norm():
    model = models.CausalLM(
        vocab_size=20, sequence_length=8, num_layers=1, embed_dim=WIDTH,
        num_heads=2, ff_dim=24, attention={"rotary": True},
        norm={"type": "rms", "offset": 1.0, "epsilon": 1e-6},
    )  # fmt: skip
    block = model.blocks[0]
    for norm in (block.self_attention_norm, model.final_norm):
        assert isinstance(norm, OffsetRMSNormalization)
        assert norm.offset == 1.0 and norm.epsilon == 1e-6
    assert model.get_config()["norm"]["offset"] == 1.0
    # At the default offset the key is left out: 0.1's configs unchanged.
    plain = DecoderBlock(2, 24, cross_attention=False, norm="rms")
    assert plain.get_config()["norm"] == {
        "type": "rms", "epsilon": 1e-5, "placement": "post",
    }  # fmt: skip


def sequential_reference(block, x, placement):
    """The block's two sublayers composed by each placement's formula."""
    attention, feed_forward = block.self_attention, block.feed_forward

    def sublayer(x, f, norm, output_norm):
        if placement == "pre":
            return x + to_numpy(f(norm(x)))
        if placement == "post":
            return to_numpy(norm(x + to_numpy(f(x))))
        if placement == "output":
            return x + to_numpy(norm(f(x)))
        return x + to_numpy(output_norm(f(norm(x))))  # sandwich

    x = sublayer(
        x, attention, block.self_attention_norm,
        block.self_attention_output_norm,
    )  # fmt: skip
    return sublayer(
        x, feed_forward, block.feed_forward_norm,
        block.feed_forward_output_norm,
    )  # fmt: skip


@pytest.mark.parametrize("placement", ["pre", "post", "sandwich", "output"])
@pytest.mark.parametrize("norm_type", ["rms", "layer"])
def test_each_placement_follows_its_formula(placement, norm_type):
    x = random_inputs(2, 5, WIDTH)
    block = EncoderBlock(
        2, 24, dropout=0, norm={"type": norm_type, "placement": placement}
    )
    block.build(x.shape)
    randomize(block)
    np.testing.assert_allclose(
        to_numpy(block(x)),
        sequential_reference(block, x, placement),
        atol=1e-4,
        rtol=1e-4,
    )
    norms = sorted(
        weight.path for weight in block.weights if "norm" in weight.path
    )
    count = 4 if placement == "sandwich" else 2
    assert len({path.rsplit("/", 1)[0] for path in norms}) == count
    if placement == "sandwich":
        assert any("self_attention_output_norm" in path for path in norms)
        assert any("feed_forward_output_norm" in path for path in norms)


@pytest.mark.parametrize("residual", ["parallel", "parallel_shared_norm"])
def test_parallel_residuals_follow_their_formula(residual):
    x = random_inputs(2, 5, WIDTH)
    block = DecoderBlock(
        2, 24, dropout=0, cross_attention=False,
        norm={"placement": "pre"}, residual=residual,
    )  # fmt: skip
    block.build(x.shape)
    randomize(block)
    attention_norm = block.self_attention_norm
    feed_forward_norm = block.feed_forward_norm
    if residual == "parallel_shared_norm":
        assert feed_forward_norm is None
        assert not any("feed_forward_norm" in w.path for w in block.weights)
        feed_forward_norm = attention_norm
    expected = (
        x
        + to_numpy(block.self_attention(attention_norm(x)))
        + to_numpy(block.feed_forward(feed_forward_norm(x)))
    )
    np.testing.assert_allclose(to_numpy(block(x)), expected, atol=1e-4)


BLOCK_VARIANTS = [
    {"norm": {"type": "rms", "placement": "sandwich", "offset": 1.0}},
    {"norm": {"type": "rms", "placement": "output"}},
    {"norm": {"placement": "post"}},
    {"norm": {"placement": "pre"}, "residual": "parallel"},
    {"norm": {"placement": "pre"}, "residual": "parallel_shared_norm"},
]


@pytest.mark.parametrize("variant", BLOCK_VARIANTS, ids=str)
def test_cached_decoding_equals_the_full_call(variant):
    x = random_inputs(2, 6, WIDTH)
    block = DecoderBlock(
        2, 24, dropout=0, cross_attention=False,
        attention={"rotary": True}, **variant,
    )  # fmt: skip
    block.build(x.shape)
    randomize(block)
    expected = to_numpy(block(x))
    cache = block.initial_cache(batch_size=2, max_length=6)
    first, cache = block.call_with_cache(x[:, :4], cache, 0)
    last, cache = block.call_with_cache(x[:, 4:], cache, 4)
    np.testing.assert_allclose(
        np.concatenate([to_numpy(first), to_numpy(last)], axis=1),
        expected,
        atol=1e-4,
        rtol=1e-4,
    )


def small_lm(**kwargs):
    arguments = {
        "vocab_size": 23, "sequence_length": 8, "num_layers": 2,
        "embed_dim": WIDTH, "num_heads": 2, "ff_dim": 24, "dropout": 0.0,
        "attention": {"rotary": True}, "norm": "rms",
    }  # fmt: skip
    return models.CausalLM(**{**arguments, **kwargs})


TOKENS = np.array([[3, 7, 1, 9, 4, 2], [5, 5, 8, 2, 1, 6]])


def test_embedding_scale_and_logit_soft_cap_follow_their_formulas():
    scale, cap = math.sqrt(WIDTH), 0.5
    model = small_lm(embedding_scale=scale, logit_soft_cap=cap)
    x = to_numpy(model.embedding(TOKENS)) * scale
    for block in model.blocks:
        x = block(x)
    logits = to_numpy(model.embedding(model.final_norm(x), reverse=True))
    expected = cap * np.tanh(logits / cap)
    outputs = to_numpy(model(TOKENS))
    assert np.abs(outputs).max() < cap
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
    cache = model.initial_cache(batch_size=2, max_length=6)
    first, cache = model.call_with_cache(TOKENS[:, :5], cache, 0)
    last, cache = model.call_with_cache(TOKENS[:, 5:], cache, 5)
    np.testing.assert_allclose(
        np.concatenate([to_numpy(first), to_numpy(last)], axis=1),
        expected,
        atol=1e-5,
    )


def test_the_embedding_scale_is_cast_to_the_compute_dtype():
    # transformers rounds sqrt(width) to the hidden dtype before multiplying.
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = small_lm(embedding_scale=math.sqrt(3.0), num_layers=1)
    embedded = model.embedding(TOKENS)
    scaled = model.embedding_scaling(embedded)
    expected = embedded * keras.ops.cast(math.sqrt(3.0), "bfloat16")
    assert keras.backend.standardize_dtype(scaled.dtype) == "bfloat16"
    np.testing.assert_array_equal(
        to_numpy(keras.ops.cast(scaled, "float32")),
        to_numpy(keras.ops.cast(expected, "float32")),
    )


OVERRIDES = [
    None,
    {
        "attention": {"num_kv_heads": 1, "rotary": {"max_wavelength": 100.0}},
        "norm": {"placement": "sandwich"},
    },
]


def test_layer_overrides_reach_their_block_only(tmp_path):
    rotary = {
        "max_wavelength": 1000.0,
        "scaling": {"type": "linear", "factor": 2.0},
    }
    model = small_lm(
        attention={"rotary": rotary, "num_kv_heads": 2},
        layer_overrides=OVERRIDES,
    )
    first, second = model.blocks
    assert first.attention_options["num_kv_heads"] == 2
    assert first.norm_options["placement"] == "pre"
    assert first.attention_options["rotary"]["max_wavelength"] == 1000.0
    assert second.attention_options["num_kv_heads"] == 1
    assert second.norm_options["placement"] == "sandwich"
    # A nested dict is merged key by key: the scaling stays.
    assert second.attention_options["rotary"]["max_wavelength"] == 100.0
    assert second.attention_options["rotary"]["scaling"]["factor"] == 2.0
    # Rotary positions stay on the model even if a layer drops them.
    assert model.embedding.position is None

    outputs = to_numpy(model(TOKENS))
    path = str(tmp_path / "overrides.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.layer_overrides == model.layer_overrides
    assert reloaded.blocks[1].get_config() == second.get_config()
    np.testing.assert_allclose(to_numpy(reloaded(TOKENS)), outputs, atol=1e-6)
    rebuilt = models.CausalLM.from_config(model.get_config())
    assert rebuilt.blocks[1].get_config() == second.get_config()


def test_a_layer_without_rotary_positions():
    # SmolLM3: some layers attend with no positions at all.
    model = small_lm(layer_overrides=[None, {"attention": {"rotary": None}}])
    assert model.blocks[0].attention_options["rotary"] is not None
    assert model.blocks[1].attention_options["rotary"] is None
    cache = model.initial_cache(batch_size=2, max_length=6)
    first, cache = model.call_with_cache(TOKENS[:, :3], cache, 0)
    last, cache = model.call_with_cache(TOKENS[:, 3:], cache, 3)
    np.testing.assert_allclose(
        np.concatenate([to_numpy(first), to_numpy(last)], axis=1),
        to_numpy(model(TOKENS)),
        atol=1e-5,
    )


@pytest.mark.parametrize("residual", ["parallel", "parallel_shared_norm"])
def test_the_model_passes_its_residual_to_every_block(residual):
    model = small_lm(residual=residual, norm={"placement": "pre"})
    assert {block.residual for block in model.blocks} == {residual}
    assert model.get_config()["residual"] == residual


@pytest.mark.parametrize(
    "variant",
    [
        {  # Gemma 2's options
            "norm": {"type": "rms", "placement": "sandwich", "offset": 1.0},
            "embedding_scale": math.sqrt(WIDTH),
            "logit_soft_cap": 2.0,
            "layer_overrides": [{"attention": {"rotary": None}}, None],
        },
        {"residual": "parallel_shared_norm", "norm": {"placement": "pre"}},
    ],
    ids=["sandwich", "parallel"],
)
def test_compiled_cached_generation_equals_the_uncached_loop(variant):
    # The cached step runs compiled (XLA; torch.export on PyTorch).
    model = small_lm(**variant)
    prompts = [[3, 7, 1], [5, 5]]
    np.testing.assert_array_equal(
        generation.generate(model, prompts, 3),
        generation.generate(model, prompts, 3, use_cache=False),
    )


class _Doubled(FeedForward):
    """A feed-forward layer registered under another type."""

    def call(self, x, training=None):
        return 2 * super().call(x, training=training)


def test_a_registered_feed_forward_type_is_built_by_the_blocks(monkeypatch):
    monkeypatch.setitem(options_module.FEED_FORWARD_LAYERS, "doubled", _Doubled)
    block = EncoderBlock(2, 24, feed_forward={"type": "doubled"})
    block.build((1, 3, WIDTH))
    assert type(block.feed_forward) is _Doubled
    assert block.get_config()["feed_forward"]["type"] == "doubled"
    # The default type stays out of the config, as before the key existed.
    dense = EncoderBlock(2, 24, feed_forward={"type": "dense"})
    assert "type" not in dense.get_config()["feed_forward"]
    # An override of another type replaces the model's feed_forward dict.
    model = small_lm(
        feed_forward={"type": "doubled", "activation": "swiglu"},
        layer_overrides=[{"feed_forward": {"type": "dense", "hidden_dim": 20}},
                         {"feed_forward": {"hidden_dim": 12}}],
    )  # fmt: skip
    first, second = (block.feed_forward_options for block in model.blocks)
    assert "type" not in first and first["activation"] == "relu"
    assert first["hidden_dim"] == 20
    assert second["type"] == "doubled" and second["hidden_dim"] == 12
    assert second["activation"] == "swiglu"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: EncoderBlock(2, 24, norm={"placement": "mid"}), "placement"),
        (lambda: EncoderBlock(2, 24, norm={"offset": 1.0}), "offset"),
        (lambda: EncoderBlock(2, 24, norm={"offset": "1"}), "offset"),
        (lambda: EncoderBlock(2, 24, residual="both"), "residual"),
        (lambda: EncoderBlock(2, 24, residual="parallel"), "residual"),
        (
            lambda: DecoderBlock(
                2, 24, norm={"placement": "pre"}, residual="parallel"
            ),
            "residual",
        ),
        (
            lambda: EncoderBlock(2, 24, feed_forward={"type": "moe"}),
            "feed_forward",
        ),
        (lambda: small_lm(layer_overrides=[None]), "layer_overrides"),
        (lambda: small_lm(layer_overrides=[None, 3]), r"layer_overrides\[1\]"),
        (
            lambda: small_lm(layer_overrides=[{"rotary": None}, None]),
            r"layer_overrides\[0\]",
        ),
        (
            lambda: small_lm(
                layer_overrides=[None, {"attention": {"bogus": 5}}]
            ),
            r"layer_overrides\[1\]",
        ),
        (lambda: small_lm(embedding_scale=-1.0), "embedding_scale"),
        (
            lambda: small_lm(embedding_scale=2.0, attention={}),
            "embedding_scale",
        ),
        (lambda: small_lm(logit_soft_cap=0), "logit_soft_cap"),
        (lambda: small_lm(logit_soft_cap="30"), "logit_soft_cap"),
    ],
)
def test_bad_values_are_refused_by_name(make, match):
    with pytest.raises(ValueError, match=match):
        make()

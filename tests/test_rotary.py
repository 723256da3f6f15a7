"""Rotary embeddings against NumPy and transformers' RoPE scalings."""

import json

import keras
import numpy as np
import pytest

from keras_tfm.layers.rotary import RotaryEmbedding, rotary_options
from tests.conftest import random_inputs, to_numpy

LLAMA3 = {
    "type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # With head_dim 8, wavelengths of 6.3 (kept), 63 (blended) and 628+
    # (divided by 8).
    "original_max_position_embeddings": 64,
}
SCALINGS = {
    "linear": {"type": "linear", "factor": 2.5},
    "dynamic": {
        "type": "dynamic",
        "factor": 2.0,
        "original_max_position_embeddings": 8,
    },
    "llama3": LLAMA3,
    # With head_dim 8 and an original length of 64, pairs 0 and 1 ramp.
    "yarn": {
        "type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    # Positions past 8 take the long factors; `factor` sets the attention
    # factor as transformers' `max_position_embeddings / 8` does.
    "longrope": {
        "type": "longrope",
        "short_factor": [1.0, 1.5, 2.0, 3.0],
        "long_factor": [2.0, 4.0, 8.0, 16.0],
        "original_max_position_embeddings": 8,
        "factor": 16.0,
    },
}


def rotary_reference(x, start_index=0, max_wavelength=10000):
    """Rotates channel pairs (i, i + d/2) by pos / max_wavelength^(2i/d)."""
    half = x.shape[-1] // 2
    positions = np.arange(x.shape[1]) + start_index
    inverse = max_wavelength ** (-np.arange(half) * 2 / x.shape[-1])
    angles = positions[:, None] * inverse[None]  # (seq, half)
    cos, sin = np.cos(angles)[None, :, None], np.sin(angles)[None, :, None]
    first, second = x[..., :half], x[..., half:]
    return np.concatenate(
        [first * cos - second * sin, second * cos + first * sin], axis=-1
    )


def queries(seed=0):
    """One shape for every test, so JAX compiles each op once."""
    return random_inputs(1, 4, 2, 8, seed=seed)


def transformers_reference(x, scaling, start_index, max_wavelength):
    """What Llama's rotary embedding in transformers does to `x`."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    parameters = {
        "rope_type" if key == "type" else key: value
        for key, value in scaling.items()
    }
    max_position_embeddings = 128
    if scaling["type"] == "longrope":  # the ratio gives transformers' factor
        max_position_embeddings = int(
            parameters.pop("factor")
            * parameters["original_max_position_embeddings"]
        )
    if scaling["type"] == "dynamic":  # transformers reads its length here.
        max_position_embeddings = parameters.pop(
            "original_max_position_embeddings"
        )
    config = transformers.LlamaConfig(
        hidden_size=4 * x.shape[-1],
        num_attention_heads=4,
        head_dim=x.shape[-1],
        max_position_embeddings=max_position_embeddings,
        rope_parameters={**parameters, "rope_theta": max_wavelength},
    )
    length = start_index + x.shape[1]
    inverse, attention_factor = ROPE_INIT_FUNCTIONS[scaling["type"]](
        config, None, seq_len=length
    )
    positions = torch.arange(start_index, length, dtype=torch.float32)
    angles = positions[:, None] * inverse[None, :]
    angles = torch.cat([angles, angles], dim=-1)[None]  # (1, seq, head_dim)
    query = torch.from_numpy(x).transpose(1, 2)  # (batch, heads, seq, dim)
    rotated, _ = apply_rotary_pos_emb(
        query,
        query,
        angles.cos() * attention_factor,
        angles.sin() * attention_factor,
        unsqueeze_dim=1,
    )
    return rotated.transpose(1, 2).numpy()


def compiled(function):
    """`function` traced by the backend's compiler, where there is one."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(function)
    return function


def test_rotary_embedding_matches_reference():
    x = queries()
    layer = RotaryEmbedding(max_wavelength=500.0)
    np.testing.assert_allclose(
        to_numpy(layer(x)), rotary_reference(x, max_wavelength=500), atol=1e-5
    )
    np.testing.assert_allclose(
        to_numpy(layer(x, start_index=4)),
        rotary_reference(x, start_index=4, max_wavelength=500),
        atol=1e-5,
    )


@pytest.mark.parametrize("kind", sorted(SCALINGS))
@pytest.mark.parametrize("start_index", [0, 5, 11])
def test_scaling_matches_transformers(kind, start_index):
    # For dynamic scaling, 5 + 4 and 11 + 4 pass the original length of 8.
    x = queries(seed=start_index)
    scaling = SCALINGS[kind]
    expected = transformers_reference(x, scaling, start_index, 10000.0)
    layer = RotaryEmbedding(10000.0, scaling=scaling)
    np.testing.assert_allclose(
        to_numpy(layer(x, start_index=start_index)), expected, atol=1e-5
    )


def test_scalings_change_the_rotation():
    x = queries()  # Positions 10 to 13, past dynamic's original 8.
    plain = to_numpy(RotaryEmbedding()(x, start_index=10))
    for scaling in SCALINGS.values():
        scaled = to_numpy(RotaryEmbedding(scaling=scaling)(x, start_index=10))
        assert not np.allclose(scaled, plain, atol=1e-3), scaling


def test_dynamic_scaling_with_a_traced_start_index():
    x = queries()
    layer = RotaryEmbedding(scaling=SCALINGS["dynamic"])
    step = compiled(lambda x, start: layer(x, start_index=start))
    for start_index in (2, 9):
        start = keras.ops.convert_to_tensor(start_index, "int32")
        np.testing.assert_allclose(
            to_numpy(step(x, start)),
            to_numpy(layer(x, start_index=start_index)),
            atol=1e-6,
        )
    # Within the original length the rotation is the unscaled one.
    np.testing.assert_allclose(
        to_numpy(step(x, keras.ops.convert_to_tensor(2, "int32"))),
        rotary_reference(x, start_index=2),
        atol=1e-5,
    )


@pytest.mark.parametrize("scaling", [None, *SCALINGS.values()])
def test_get_config_round_trip(scaling):
    layer = RotaryEmbedding(max_wavelength=500000.0, scaling=scaling)
    config = layer.get_config()
    assert config["max_wavelength"] == 500000.0
    # Optional keys are filled in with their defaults.
    assert (config["scaling"] or {}).items() >= (scaling or {}).items()
    json.dumps(config)
    restored = RotaryEmbedding.from_config(config)
    x = queries()
    np.testing.assert_allclose(
        to_numpy(restored(x, start_index=3)),
        to_numpy(layer(x, start_index=3)),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "arguments, names",
    [
        ({"max_wavelength": 0}, ["max_wavelength"]),
        ({"max_wavelength": "10000"}, ["max_wavelength"]),
        ({"max_wavelength": True}, ["max_wavelength"]),
        ({"scaling": "linear"}, ["scaling", "linear", "llama3"]),
        ({"scaling": {"type": "ntk", "factor": 2}}, ["scaling", "yarn"]),
        (
            {"scaling": {"type": "yarn", "factor": 2}},
            ["scaling", "'original_max_position_embeddings'"],
        ),
        (
            {"scaling": {**SCALINGS["yarn"], "truncate": "no"}},
            ['scaling["truncate"]', "bool"],
        ),
        (
            {"scaling": {**SCALINGS["longrope"], "long_factor": [1, -2]}},
            ['scaling["long_factor"][1]', "positive"],
        ),
        ({"fraction": 0}, ["fraction", "(0, 1]"]),
        ({"fraction": 1.5}, ["fraction", "(0, 1]"]),
        ({"scaling": {"factor": 2}}, ["scaling", "dynamic"]),
        ({"scaling": {"type": "linear"}}, ["scaling", "'factor'"]),
        (
            {"scaling": {"type": "linear", "factor": 0}},
            ['scaling["factor"]', "positive"],
        ),
        (
            {"scaling": {"type": "linear", "factor": 2, "rope_theta": 1.0}},
            ["scaling", "'rope_theta'"],
        ),
        (
            {"scaling": {"type": "dynamic", "factor": 2}},
            ["scaling", "'original_max_position_embeddings'"],
        ),
        (
            {"scaling": {**LLAMA3, "high_freq_factor": None}},
            ['scaling["high_freq_factor"]'],
        ),
        (
            {"scaling": {**LLAMA3, "high_freq_factor": 0.5}},
            ["high_freq_factor", "low_freq_factor"],
        ),
    ],
)
def test_bad_arguments_name_the_key(arguments, names):
    with pytest.raises(ValueError) as error:
        RotaryEmbedding(**arguments)
    for name in names:
        assert name in str(error.value)


def test_odd_rotated_channels_are_rejected():
    with pytest.raises(ValueError, match="even, nonzero number of channels"):
        RotaryEmbedding()(random_inputs(1, 2, 1, 7))
    with pytest.raises(ValueError, match="head_dim=8 and fraction=0.375"):
        RotaryEmbedding(fraction=0.375)(queries())
    with pytest.raises(ValueError, match="one number per rotated channel"):
        RotaryEmbedding(scaling=SCALINGS["longrope"], fraction=0.5)(queries())


@pytest.mark.parametrize("fraction, channels", [(0.5, 4), (0.8, 6)])
def test_a_fraction_rotates_the_first_channels(fraction, channels):
    # int(8 * 0.8) = 6, as transformers' `partial_rotary_factor` rounds.
    x = queries()
    rotated = to_numpy(RotaryEmbedding(fraction=fraction)(x, start_index=3))
    expected = np.concatenate(
        [rotary_reference(x[..., :channels], 3), x[..., channels:]], axis=-1
    )
    np.testing.assert_allclose(rotated, expected, atol=1e-5)


def test_rotary_options():
    assert rotary_options(None) is None
    assert rotary_options(False) is None
    assert rotary_options(False, max_wavelength=5) is None
    default = {"max_wavelength": 10000, "scaling": None, "fraction": 1.0}
    assert rotary_options(True) == default
    assert rotary_options(True, max_wavelength=500000.0) == {
        **default,
        "max_wavelength": 500000.0,
    }
    assert rotary_options({}) == default
    options = rotary_options(
        {"max_wavelength": np.float32(500000.0), "scaling": LLAMA3}
    )
    assert options == {**default, "max_wavelength": 500000.0, "scaling": LLAMA3}
    assert type(options["max_wavelength"]) is float
    json.dumps(options)
    assert rotary_options({"max_wavelength": 7}, max_wavelength=9) == {
        **default,
        "max_wavelength": 9,
    }
    assert rotary_options({"fraction": 0.25})["fraction"] == 0.25
    layer = RotaryEmbedding(**rotary_options({"scaling": SCALINGS["linear"]}))
    assert layer.scaling == SCALINGS["linear"]


@pytest.mark.parametrize(
    "rotary, name",
    [
        ("yes", "rotary"),
        (1, "rotary"),
        ({"theta": 10000}, "'theta'"),
        ({"max_wavelength": -1}, "max_wavelength"),
        ({"scaling": {"type": "linear"}}, "'factor'"),
    ],
)
def test_rotary_options_errors_name_the_key(rotary, name):
    with pytest.raises(ValueError, match=name):
        rotary_options(rotary)


def test_rotary_dot_products_depend_on_relative_position_only():
    rng = np.random.default_rng(1)
    query = np.broadcast_to(rng.normal(size=(1, 1, 1, 8)), (1, 12, 1, 8))
    key = np.broadcast_to(rng.normal(size=(1, 1, 1, 8)), (1, 12, 1, 8))
    layer = RotaryEmbedding()
    rotated_query = to_numpy(layer(query.astype("float32")))[0, :, 0]
    rotated_key = to_numpy(layer(key.astype("float32")))[0, :, 0]
    products = rotated_query @ rotated_key.T  # (query pos, key pos)
    for offset in range(-3, 4):
        diagonal = np.diagonal(products, offset=offset)
        np.testing.assert_allclose(diagonal, diagonal[0], atol=1e-4)

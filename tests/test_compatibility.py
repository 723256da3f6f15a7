"""Files saved by keras_tfm 0.1 (commit deb7c35) load with the same outputs.

The fixtures were made by `tests/fixtures/make_deb7c35.py` at that commit,
before the options were grouped by concept: their configs hold the flat
arguments (`rotary_max_wavelength=`, `norm_first=`, ...) of that release.
"""

import os

import keras
import numpy as np
import pytest

from keras_tfm import models
from tests.conftest import to_numpy

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.mark.parametrize("name", ["causal_lm", "seq2seq", "blocks"])
def test_a_file_saved_by_the_previous_release_loads_with_its_outputs(name):
    expected = np.load(os.path.join(FIXTURES, "outputs_deb7c35.npz"))
    tokens = expected["tokens"]
    model = keras.models.load_model(
        os.path.join(FIXTURES, f"{name}_deb7c35.keras")
    )
    inputs = tokens
    if name == "seq2seq":
        inputs = {"encoder_tokens": tokens, "decoder_tokens": tokens[:, :4]}
    np.testing.assert_allclose(
        to_numpy(model(inputs)), expected[name], rtol=1e-5, atol=1e-5
    )


def test_the_flat_arguments_of_the_previous_release_become_options():
    model = models.CausalLM(
        vocab_size=31, sequence_length=12, num_layers=1, embed_dim=16,
        num_heads=4, ff_dim=24, rotary=True, num_kv_heads=2,
        activation="swiglu", norm="rms", layer_norm_epsilon=1e-6,
        use_bias=False, rotary_max_wavelength=500, mask_zero=True,
    )  # fmt: skip
    config = model.get_config()
    assert config["attention"]["rotary"] == {
        "max_wavelength": 500,
        "scaling": None,
        "fraction": 1.0,
    }
    assert config["attention"]["num_kv_heads"] == 2
    assert config["attention"]["use_bias"] is False
    assert config["feed_forward"]["activation"] == "swiglu"
    assert config["norm"] == {
        "type": "rms",
        "epsilon": 1e-6,
        "placement": "pre",
    }
    assert config["padding_id"] == 0
    assert not config["output_bias"]
    assert "rotary_max_wavelength" not in str(config)


def test_an_option_given_twice_with_two_values_is_refused():
    with pytest.raises(ValueError, match="num_kv_heads"):
        models.CausalLM(
            vocab_size=31, sequence_length=12, num_layers=1, embed_dim=16,
            num_heads=4, ff_dim=24, num_kv_heads=2,
            attention={"num_kv_heads": 1},
        )  # fmt: skip

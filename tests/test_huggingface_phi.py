"""Phi-2 (`phi`) and Phi-3 (`phi3`) checkpoints against `transformers`
itself: random checkpoints made offline from small configs with odd sizes."""

import numpy as np
import pytest

from keras_tfm import interop
from tests.huggingface_checks import (
    TOKENS,
    Checkpoints,
    assert_changed_weights_write_back,
    assert_close,
    assert_generates_as_transformers,
    assert_loads_as_transformers,
    causal,
    copied,
    torch_outputs,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def phi():
    """Phi-2's block on heads of 10, 0.4 of which rotate (4 channels)."""
    config = transformers.PhiConfig(
        vocab_size=101, max_position_embeddings=40, hidden_size=40,
        intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
        partial_rotary_factor=0.4, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.PhiForCausalLM(config)


def phi3(**overrides):
    """Phi-3-mini's block: grouped-query heads of 8 and a sliding window
    shorter than the inputs and the generations."""
    config = transformers.Phi3Config(**{
        "vocab_size": 101, "max_position_embeddings": 40, "hidden_size": 48,
        "intermediate_size": 72, "num_hidden_layers": 2,
        "num_attention_heads": 6, "num_key_value_heads": 2,
        "sliding_window": 4, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": None, **overrides,
    })  # fmt: skip
    return transformers.Phi3ForCausalLM(config)


# Phi-4-mini's rotary: three quarters of each head, longrope factors for
# its 3 channel pairs, and a tied head.
LONGROPE = {
    "rope_type": "longrope", "rope_theta": 10000.0,
    "partial_rotary_factor": 0.75, "short_factor": [1.0, 1.3, 2.1],
    "long_factor": [2.0, 3.5, 7.0],
}  # fmt: skip
# Longer than `original_max_position_embeddings` (8): the long factors act.
LONG_TOKENS = np.arange(5, 29).reshape(2, 12)


def phi3_longrope():
    return phi3(
        max_position_embeddings=32, original_max_position_embeddings=8,
        rope_parameters=LONGROPE, tie_word_embeddings=True,
        sliding_window=None,
    )  # fmt: skip


CASES = {
    "phi": lambda: causal(phi()),
    "phi3": lambda: causal(phi3()),
    "phi3_longrope": lambda: causal(phi3_longrope(), LONG_TOKENS),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_equals_transformers(case, checkpoints):
    assert_loads_as_transformers(checkpoints[case])


@pytest.mark.parametrize("case", CASES)
def test_changed_weights_write_back_for_transformers(
    case, checkpoints, tmp_path
):
    assert_changed_weights_write_back(case, checkpoints[case], tmp_path)


@pytest.mark.parametrize("case", CASES)
def test_greedy_generation_equals_transformers(case, checkpoints):
    """Phi-3 generates past its window of 4; the longrope model past its
    original length of 8 (transformers then switches to the long
    factors)."""
    directory, reference, _, _ = checkpoints[case]
    model = interop.from_huggingface(directory)
    assert_generates_as_transformers(model, reference)


@pytest.mark.xfail(
    strict=True,
    reason="cached decoding keeps the keys it rotated with the short "
    "factors; transformers' Phi-3 generate recomputes them with the long "
    "factors once the sequence passes the original length",
)
def test_longrope_decoding_past_the_original_length(checkpoints):
    """transformers' next-token logits while generating from 5 tokens to
    11, past the original length of 8, equal cached decoding's."""
    directory, reference, _, _ = checkpoints["phi3_longrope"]
    model = interop.from_huggingface(directory)
    prompt = torch.tensor(TOKENS[:1, :5])
    with torch.no_grad():
        theirs = reference.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
            do_sample=False, output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
    tokens = theirs.sequences.numpy()
    cache = model.initial_cache(1, tokens.shape[1])
    logits, cache = model.call_with_cache(tokens[:, :5], cache, 0)
    ours = [logits[:, -1]]
    for index in range(5, tokens.shape[1] - 1):
        step = tokens[:, index : index + 1]
        logits, cache = model.call_with_cache(step, cache, index)
        ours.append(logits[:, -1])
    for mine, expected in zip(ours, theirs.logits, strict=True):
        assert_close(mine, expected.numpy())


def test_phi2_config_fields_load_the_same(checkpoints, tmp_path):
    """Phi-2's own config.json: `partial_rotary_factor` and `rope_theta`
    at the top level, no rope parameters."""
    _, reference, inputs, torch_inputs = checkpoints["phi"]
    older = copied(
        checkpoints, "phi", tmp_path, rope_parameters=None,
        partial_rotary_factor=0.4, rope_theta=10000.0,
    )  # fmt: skip
    model = interop.from_huggingface(older)
    assert model.attention_options["rotary"]["fraction"] == 0.4
    assert_close(model(inputs), torch_outputs(reference, torch_inputs).numpy())


def test_phi3_rope_scaling_loads_the_same(checkpoints, tmp_path):
    """Phi-3-128k's config.json: `rope_scaling` of type `longrope` with
    no attention factor (computed from the two lengths); on 5 positions,
    within the original 8, the short factors act."""
    _, reference, _, _ = checkpoints["phi3_longrope"]
    scaling = {"type": "longrope", "short_factor": LONGROPE["short_factor"],
               "long_factor": LONGROPE["long_factor"]}  # fmt: skip
    older = copied(
        checkpoints, "phi3_longrope", tmp_path, rope_parameters=None,
        rope_scaling=scaling, partial_rotary_factor=0.75, rope_theta=10000.0,
    )  # fmt: skip
    model = interop.from_huggingface(older)
    tokens = TOKENS[:, :5]
    expected = torch_outputs(reference, {"input_ids": torch.tensor(tokens)})
    assert_close(model(tokens), expected.numpy())


UNSUPPORTED = [
    ("phi", {"qk_layernorm": True}, "qk_layernorm=True"),
    ("phi", {"tie_word_embeddings": True}, "tie_word_embeddings=True"),
    ("phi", {"hidden_act": "gelu_fast"}, "hidden_act='gelu_fast'"),
    ("phi3", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ("phi3", {"rope_parameters": {"rope_type": "longrope", "mscale": 1.0,
                                  "short_factor": [1.0] * 4,
                                  "long_factor": [1.0] * 4}},
     r"rope_parameters\['mscale'\]"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    case, changes, message, checkpoints, tmp_path
):
    directory = copied(checkpoints, case, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)

"""Qwen3, SmolLM3, OLMo 2, Qwen2 with sliding layers and `yarn` rope
scaling: keras_tfm against `transformers` itself (Llama, Mistral and Qwen2
are in test_huggingface.py).

Each checkpoint is a small random model made by `transformers` from a
config (offline), with odd sizes and widened weights (`saved`).
"""

import pytest

from keras_tfm import interop
from tests.huggingface_checks import (
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

SIZES = {
    "vocab_size": 101, "max_position_embeddings": 64, "hidden_size": 40,
    "intermediate_size": 56, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2,
}  # fmt: skip


def qwen3():
    """Heads of 12 on a width of 40 / 4, with query and key norms."""
    config = transformers.Qwen3Config(
        **SIZES, head_dim=12, rope_theta=5000.0, eos_token_id=2
    )
    return transformers.Qwen3ForCausalLM(config)


def smollm3():
    """The middle layer without rotary positions."""
    config = transformers.SmolLM3Config(
        **SIZES, no_rope_layers=[1, 0, 1], pad_token_id=None,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.SmolLM3ForCausalLM(config)


def olmo2():
    config = transformers.Olmo2Config(
        **SIZES, attention_bias=True, pad_token_id=None, eos_token_id=2
    )
    return transformers.Olmo2ForCausalLM(config)


def qwen2_sliding():
    """Layers from the second on within a window of 4: generation (prompts
    of up to 5 tokens and 6 new ones) runs past it."""
    config = transformers.Qwen2Config(
        **SIZES, use_sliding_window=True, sliding_window=4,
        max_window_layers=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.Qwen2ForCausalLM(config)


CASES = {
    "qwen3": lambda: causal(qwen3()),
    "smollm3": lambda: causal(smollm3()),
    "olmo2": lambda: causal(olmo2()),
    "qwen2_sliding": lambda: causal(qwen2_sliding()),
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


# Mistral (test_huggingface.py) and Gemma 2 and 3 generate past a window.
@pytest.mark.parametrize("case", ["qwen3", "smollm3", "olmo2"])
def test_greedy_generation_equals_transformers(case, checkpoints):
    directory, reference, _, _ = checkpoints[case]
    assert_generates_as_transformers(
        interop.from_huggingface(directory), reference
    )


def test_yarn_rope_scaling_equals_transformers(checkpoints, tmp_path):
    """Qwen3 with a long-context `yarn` scaling (transformers' defaults for
    the keys left out)."""
    _, _, inputs, torch_inputs = checkpoints["qwen3"]
    yarn = {"rope_type": "yarn", "rope_theta": 5000.0, "factor": 4.0,
            "original_max_position_embeddings": 16}  # fmt: skip
    directory = copied(checkpoints, "qwen3", tmp_path, rope_parameters=yarn)
    reference = transformers.Qwen3ForCausalLM.from_pretrained(directory)
    model = interop.from_huggingface(directory)
    assert_close(model(inputs), torch_outputs(reference.eval(), torch_inputs))
    interop.to_huggingface(model, tmp_path / "written")
    written = transformers.Qwen3ForCausalLM.from_pretrained(
        tmp_path / "written"
    )
    assert written.config.rope_parameters["rope_type"] == "yarn"


UNSUPPORTED = [
    ("qwen3", {"rope_parameters": {"rope_type": "longrope", "factor": 4.0}},
     r"rope_parameters\['rope_type'\]='longrope'"),
    ("qwen3", {"layer_types": ["full_attention", "chunked_attention",
                               "full_attention"]}, "layer_types="),
    ("smollm3", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ("olmo2", {"rope_parameters": {"rope_type": "default",
                                   "partial_rotary_factor": 0.5}},
     "partial_rotary_factor"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    case, changes, message, checkpoints, tmp_path
):
    directory = copied(checkpoints, case, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)


def written_config(model, model_type, **changes):
    """config.json for `model`'s options with `changes`, as
    `to_huggingface` writes it (without building the changed model)."""
    from keras_tfm.interop import huggingface
    from keras_tfm.interop.huggingface.fields import checkpoint_config

    family = huggingface._family_of_model(model, model_type)
    options = {**family.model_options(model), **changes}
    return checkpoint_config(family.fields, options, model_type)


def test_per_layer_options_a_family_lacks_are_refused(checkpoints):
    """Qwen2 varies only the window per layer, and has one window."""
    model = interop.from_huggingface(checkpoints["qwen2_sliding"][0])
    windows = [None, {"attention": {"sliding_window": 3}},
               {"attention": {"sliding_window": 5}}]  # fmt: skip
    with pytest.raises(ValueError, match="different attention.sliding_window"):
        written_config(model, "qwen2", layer_overrides=windows)
    no_rope = [None, {"attention": {"rotary": None}}, None]
    with pytest.raises(ValueError, match=r"layer_overrides\[1\], with atte"):
        written_config(model, "qwen2", layer_overrides=no_rope)

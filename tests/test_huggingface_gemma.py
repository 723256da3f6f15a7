"""Gemma, Gemma 2 and Gemma 3 (text): keras_tfm against `transformers`.

Each checkpoint is a small random model made by `transformers` from a
config (offline), with odd sizes and widened weights (`saved`). Gemma 2
and 3 slide within a window of 4 in their local layers, so generation
(prompts of up to 5 tokens and 6 new ones) runs past it.
"""

import keras
import numpy as np
import pytest

from keras_tfm import interop
from tests.huggingface_checks import (
    Checkpoints,
    assert_changed_weights_write_back,
    assert_close,
    assert_generates_as_transformers,
    assert_loads_as_transformers,
    assert_transformers_reloads,
    causal,
    copied,
    torch_outputs,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = {
    "vocab_size": 101, "max_position_embeddings": 64, "hidden_size": 40,
    "intermediate_size": 56, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12,
}  # fmt: skip


def gemma():
    config = transformers.GemmaConfig(**SIZES, rope_theta=5000.0)
    return transformers.GemmaForCausalLM(config)


def gemma2():
    """Sliding, global, sliding (the default pattern); soft caps low enough
    to act on these logits."""
    config = transformers.Gemma2Config(
        **SIZES, sliding_window=4, query_pre_attn_scalar=10,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
    )  # fmt: skip
    return transformers.Gemma2ForCausalLM(config)


def gemma3():
    """Two local layers (base 500) then a global one (linear scaling)."""
    config = transformers.Gemma3TextConfig(
        **SIZES, sliding_window=4, query_pre_attn_scalar=10,
        layer_types=["sliding_attention", "sliding_attention",
                     "full_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 2.0,
                               "rope_theta": 20000.0},
            "sliding_attention": {"rope_type": "default",
                                  "rope_theta": 500.0},
        },
    )  # fmt: skip
    return transformers.Gemma3ForCausalLM(config)


# Twelve positions: the window of 4 masks most keys.
LONG_TOKENS = np.arange(5, 29).reshape(2, 12)
CASES = {
    "gemma": lambda: causal(gemma()),
    "gemma2": lambda: causal(gemma2(), LONG_TOKENS),
    "gemma3": lambda: causal(gemma3(), LONG_TOKENS),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_equals_transformers(case, checkpoints):
    assert_loads_as_transformers(checkpoints[case])


@pytest.mark.parametrize("case", ["gemma", "gemma3"])
def test_changed_weights_write_back_for_transformers(
    case, checkpoints, tmp_path
):
    assert_changed_weights_write_back(case, checkpoints[case], tmp_path)


def test_trained_gemma2_writes_back_for_transformers(checkpoints, tmp_path):
    """Trained with `fit` (through both soft caps), written, reloaded."""
    directory, _, inputs, _ = checkpoints["gemma2"]
    model = interop.from_huggingface(directory)
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(inputs, np.roll(inputs, -1, axis=1), epochs=1, verbose=0)
    interop.to_huggingface(model, tmp_path)
    assert_transformers_reloads(
        "gemma2", model, checkpoints["gemma2"], tmp_path
    )


@pytest.mark.parametrize("case", CASES)
def test_greedy_generation_equals_transformers(case, checkpoints):
    directory, reference, _, _ = checkpoints[case]
    assert_generates_as_transformers(
        interop.from_huggingface(directory), reference
    )


def test_transformers_4_gemma3_rope_fields_load_the_same(checkpoints, tmp_path):
    """`rope_theta`, `rope_local_base_freq`, `rope_scaling` and
    `sliding_window_pattern`, as transformers 4 wrote Gemma 3's config."""
    _, reference, inputs, torch_inputs = checkpoints["gemma3"]
    older = copied(
        checkpoints, "gemma3", tmp_path, rope_parameters=None,
        layer_types=None, sliding_window_pattern=3, rope_theta=20000.0,
        rope_local_base_freq=500.0,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
    )  # fmt: skip
    model = interop.from_huggingface(older)
    assert_close(model(inputs), torch_outputs(reference, torch_inputs))


UNSUPPORTED = [
    ("gemma", {"hidden_act": "relu"}, "hidden_act='relu'"),
    ("gemma2", {"hidden_activation": "gelu"}, "hidden_activation='gelu'"),
    ("gemma3", {"use_bidirectional_attention": True},
     "use_bidirectional_attention=True"),
    ("gemma3", {"rope_parameters": {
        "full_attention": {"rope_type": "longrope", "factor": 2.0},
        "sliding_attention": {"rope_type": "default"}}},
     r"rope_parameters\['full_attention'\]\['rope_type'\]='longrope'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    case, changes, message, checkpoints, tmp_path
):
    directory = copied(checkpoints, case, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)


def test_a_model_without_gemmas_embedding_scale_is_refused(checkpoints):
    from keras_tfm.interop import huggingface
    from keras_tfm.interop.huggingface.fields import checkpoint_config

    model = interop.from_huggingface(checkpoints["gemma"][0])
    family = huggingface._family_of_model(model, "gemma")
    options = {**family.model_options(model), "embedding_scale": None}
    with pytest.raises(ValueError, match="embedding_scale=None"):
        checkpoint_config(family.fields, options, "gemma")

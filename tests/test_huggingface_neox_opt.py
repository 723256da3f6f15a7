"""GPT-NeoX (Pythia) and OPT checkpoints against `transformers` itself:
random checkpoints made offline from small configs with odd sizes."""

import keras
import numpy as np
import pytest

from keras_tfm import interop
from tests.conftest import to_numpy
from tests.huggingface_checks import (
    TOKENS,
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


def gpt_neox(**overrides):
    """Heads of 16, a quarter of which rotates (Pythia's `rotary_pct`)."""
    config = transformers.GPTNeoXConfig(
        vocab_size=101, max_position_embeddings=40, hidden_size=48,
        num_hidden_layers=2, num_attention_heads=3, intermediate_size=72,
        bos_token_id=1, eos_token_id=2, **overrides,
    )  # fmt: skip
    return transformers.GPTNeoXForCausalLM(config)


def opt(**overrides):
    config = transformers.OPTConfig(
        vocab_size=101, max_position_embeddings=40, hidden_size=48,
        num_hidden_layers=2, num_attention_heads=3, ffn_dim=72,
        **overrides,
    )  # fmt: skip
    return transformers.OPTForCausalLM(config)


CASES = {
    "gpt_neox": lambda: causal(gpt_neox()),
    "gpt_neox_sequential": lambda: causal(
        gpt_neox(use_parallel_residual=False, attention_bias=False)
    ),
    "opt": lambda: causal(opt()),
    "opt_untied": lambda: causal(opt(tie_word_embeddings=False)),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_equals_transformers(case, checkpoints):
    assert_loads_as_transformers(checkpoints[case])


@pytest.mark.parametrize("case", ["gpt_neox_sequential", "opt", "opt_untied"])
def test_changed_weights_write_back_for_transformers(
    case, checkpoints, tmp_path
):
    assert_changed_weights_write_back(case, checkpoints[case], tmp_path)


def test_trained_model_writes_back_for_transformers(checkpoints, tmp_path):
    """GPT-NeoX's parallel residual, partial rotary and per-head fused
    tensor, trained with `fit`."""
    model = interop.from_huggingface(checkpoints["gpt_neox"][0])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(TOKENS, np.roll(TOKENS, -1, axis=1), epochs=1, verbose=0)
    interop.to_huggingface(model, tmp_path)
    assert_transformers_reloads(
        "gpt_neox", model, checkpoints["gpt_neox"], tmp_path
    )


def test_opt_positions_are_written_with_their_offset(checkpoints, tmp_path):
    """The two rows before OPT's positions come back (as zeros), so the
    table has the shape transformers expects."""
    from safetensors.numpy import load_file

    model = interop.from_huggingface(checkpoints["opt"][0])
    interop.to_huggingface(model, tmp_path)
    table = load_file(tmp_path / "model.safetensors")[
        "model.decoder.embed_positions.weight"
    ]
    assert table.shape == (42, 48)
    np.testing.assert_array_equal(table[:2], 0.0)
    np.testing.assert_array_equal(
        table[2:], to_numpy(model.embedding.position_embeddings)
    )


@pytest.mark.parametrize("case", ["gpt_neox", "opt"])
def test_greedy_generation_equals_transformers(case, checkpoints):
    """OPT's positions count the attention mask's ones: prompts of
    different lengths batched still start each at position 0."""
    directory, reference, _, _ = checkpoints[case]
    model = interop.from_huggingface(directory)
    assert_generates_as_transformers(model, reference)


def test_pythia_config_fields_load_the_same(checkpoints, tmp_path):
    """`rotary_pct` and `rotary_emb_base`, as Pythia's config.json has
    them, are the rope parameters transformers 5 writes."""
    _, reference, inputs, torch_inputs = checkpoints["gpt_neox"]
    older = copied(
        checkpoints, "gpt_neox", tmp_path, rope_parameters=None,
        rotary_pct=0.25, rotary_emb_base=10000,
    )  # fmt: skip
    model = interop.from_huggingface(older)
    assert model.attention_options["rotary"]["fraction"] == 0.25
    assert_close(model(inputs), torch_outputs(reference, torch_inputs).numpy())


UNSUPPORTED = [
    ("gpt_neox", {"hidden_act": "gelu_fast"}, "hidden_act='gelu_fast'"),
    ("gpt_neox", {"rope_parameters": {"rope_type": "longrope"}},
     r"rope_parameters\['rope_type'\]='longrope'"),
    ("opt", {"word_embed_proj_dim": 24}, "word_embed_proj_dim=24"),
    ("opt", {"do_layer_norm_before": False}, "do_layer_norm_before=False"),
    ("opt", {"_remove_final_layer_norm": True},
     "_remove_final_layer_norm=True"),
    ("opt", {"layer_norm_elementwise_affine": False},
     "layer_norm_elementwise_affine=False"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    case, changes, message, checkpoints, tmp_path
):
    directory = copied(checkpoints, case, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)

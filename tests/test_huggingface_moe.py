"""Mixtral, Qwen2-MoE (with its shared expert) and Qwen3-MoE: keras_tfm
against `transformers` itself.

Each checkpoint is a small random model made by `transformers` from a
config (offline), with widened weights (`saved`): 2 layers, 4 to 6
experts, top-2.
"""

import pytest

from keras_tfm import interop
from tests.huggingface_checks import (
    Checkpoints,
    assert_changed_weights_write_back,
    assert_generates_as_transformers,
    assert_loads_as_transformers,
    causal,
    copied,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = {
    "vocab_size": 101, "max_position_embeddings": 64, "hidden_size": 40,
    "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "num_experts_per_tok": 2, "eos_token_id": 2,
}  # fmt: skip


def mixtral():
    config = transformers.MixtralConfig(
        **SIZES, intermediate_size=24, num_local_experts=6
    )
    return transformers.MixtralForCausalLM(config)


def qwen2_moe():
    """A shared expert, renormalised top-k weights."""
    config = transformers.Qwen2MoeConfig(
        **SIZES, intermediate_size=48, moe_intermediate_size=16,
        shared_expert_intermediate_size=28, num_experts=4,
        norm_topk_prob=True,
    )  # fmt: skip
    return transformers.Qwen2MoeForCausalLM(config)


def qwen3_moe():
    """Heads of 12 on a width of 40 / 4, with query and key norms."""
    config = transformers.Qwen3MoeConfig(
        **SIZES, head_dim=12, intermediate_size=48, moe_intermediate_size=20,
        num_experts=5,
    )  # fmt: skip
    return transformers.Qwen3MoeForCausalLM(config)


CASES = {
    "mixtral": lambda: causal(mixtral()),
    "qwen2_moe": lambda: causal(qwen2_moe()),
    "qwen3_moe": lambda: causal(qwen3_moe()),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_equals_transformers(case, checkpoints):
    model = assert_loads_as_transformers(checkpoints[case])
    assert model.get_config()["feed_forward"]["type"] == "mixture_of_experts"


@pytest.mark.parametrize("case", CASES)
def test_changed_weights_write_back_for_transformers(
    case, checkpoints, tmp_path
):
    assert_changed_weights_write_back(case, checkpoints[case], tmp_path)


@pytest.mark.parametrize("case", CASES)
def test_greedy_generation_equals_transformers(case, checkpoints):
    directory, reference, _, _ = checkpoints[case]
    assert_generates_as_transformers(
        interop.from_huggingface(directory), reference
    )


def test_router_loss_coefficient_only_with_router_logits(checkpoints, tmp_path):
    """transformers adds the load-balancing loss only with
    `output_router_logits`; so does the loaded model."""
    model = interop.from_huggingface(checkpoints["mixtral"][0])
    assert model.get_config()["feed_forward"]["aux_loss_coefficient"] == 0
    directory = copied(
        checkpoints, "mixtral", tmp_path, output_router_logits=True,
        router_aux_loss_coef=0.02,
    )  # fmt: skip
    model = interop.from_huggingface(directory)
    assert model.get_config()["feed_forward"]["aux_loss_coefficient"] == 0.02
    interop.to_huggingface(model, tmp_path / "written")
    written = transformers.AutoConfig.from_pretrained(tmp_path / "written")
    assert written.output_router_logits and written.router_aux_loss_coef == 0.02


UNSUPPORTED = [
    ("mixtral", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ("qwen2_moe", {"decoder_sparse_step": 2}, "decoder_sparse_step=2"),
    ("qwen2_moe", {"mlp_only_layers": [1]}, r"mlp_only_layers=\[1\]"),
    ("qwen2_moe", {"use_sliding_window": True}, "use_sliding_window=True"),
    ("qwen3_moe", {"mlp_only_layers": [0]}, r"mlp_only_layers=\[0\]"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    case, changes, message, checkpoints, tmp_path
):
    directory = copied(checkpoints, case, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)


@pytest.mark.parametrize(
    ("case", "feed_forward", "message"),
    [
        ("mixtral", {"router_softmax": "after_top_k"}, "router_softmax"),
        ("mixtral", {"shared_expert_dim": 8}, "shared_expert_dim"),
        ("qwen3_moe", {"router_jitter": 0.1}, "router_jitter"),
    ],
)
def test_options_a_family_lacks_are_refused_when_writing(
    case, feed_forward, message, checkpoints
):
    from keras_tfm.interop import huggingface
    from keras_tfm.interop.huggingface.fields import checkpoint_config

    model = interop.from_huggingface(checkpoints[case][0])
    family = huggingface._family_of_model(model, case)
    options = family.model_options(model)
    options["feed_forward"] = {**options["feed_forward"], **feed_forward}
    with pytest.raises(ValueError, match=message):
        checkpoint_config(family.fields, options, case)

"""Mixtral (`mixtral`), Qwen2-MoE (`qwen2_moe`, Qwen1.5-MoE and Qwen2-MoE)
and Qwen3-MoE (`qwen3_moe`): Llama's blocks with a mixture of experts
(`feed_forward={"type": "mixture_of_experts", ...}`) for the feed-forward.

Each router takes a softmax over all experts before its top-k; Mixtral
always renormalises the top-k weights, Qwen as `norm_topk_prob` says.
Qwen2-MoE adds a shared expert behind a sigmoid gate and biases on the
query, key and value projections; Qwen3-MoE norms each head's queries and
keys. Checkpoints hold each expert's projections as separate tensors
(`experts.{i}.w1`, or `experts.{i}.gate_proj`), which is also what
`transformers` 5 writes from its fused expert weights; each fills one
expert's slice of the layer's stacked kernels. The load-balancing loss is
on (`router_aux_loss_coef`) only where `output_router_logits` asks, as in
`transformers`' training.
"""

import dataclasses

import numpy as np

from keras_tfm.interop.huggingface import core, fields, llama
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed

MOE = "mixture_of_experts"


# --- Expert tensors: one checkpoint tensor per expert slice --------------


class _Filling:
    """One stacked expert kernel, filled slice by slice and assigned once
    every expert's slice is in (one copy of the kernel, not one per
    expert)."""

    def __init__(self, variable, count):
        self.variable, self.remaining, self.buffer = variable, count, None

    def fill(self, expert, value):
        if self.buffer is None:
            dtype = core.numpy_dtype(self.variable.dtype)
            self.buffer = np.empty(tuple(self.variable.shape), dtype)
        self.buffer[expert] = value
        self.remaining -= 1
        if self.remaining == 0:
            core.assign(self.variable, self.buffer)
            self.buffer = None


@dataclasses.dataclass
class ExpertTensor(core.Tensor):
    """One expert's `(out, in)` projection: slice `expert` of a stacked
    `(experts, in, out)` kernel, transposed."""

    expert: int = 0
    filling: _Filling | None = None

    def load(self, checkpoint):
        key = self.check(checkpoint)
        self.filling.fill(self.expert, checkpoint.get(key).T)


def experts(gate, up, down):
    """The kind of a `MixtureOfExperts`' expert kernels, each expert's
    projections named `{name}.{i}.{gate|up|down}.weight`."""

    def tensors(name, layer):
        found = []
        for part, attribute in ((gate, "gate_kernel"), (up, "up_kernel"),
                                (down, "down_kernel")):  # fmt: skip
            variable = core.variable_of(layer, attribute)
            filling = _Filling(variable, layer.num_experts)
            for expert in range(layer.num_experts):
                found.append(ExpertTensor(
                    f"{name}.{expert}.{part}.weight", [(layer, attribute)],
                    to_checkpoint=lambda arrays, i=expert: arrays[0][i].T,
                    expert=expert, filling=filling,
                ))  # fmt: skip
        return found

    return tensors


def moe_block(template, gate_names, shared=True):
    """Llama's block rows with a mixture of experts under `template`
    (`"mlp.{}"`): its router `gate`, its experts, and Qwen2-MoE's shared
    expert and its gate (no rows where the layer has none)."""
    rows = [row for row in llama.BLOCK if row not in llama.FEED_FORWARD]
    rows += [
        (template.format("gate"), "feed_forward.router", core.LINEAR),
        (template.format("experts"), "feed_forward", experts(*gate_names)),
    ]
    if shared:
        shared_rows = core.feed_forward_rows(
            template.format("shared_expert.{}"), "up_proj down_proj gate_proj"
        )
        rows += [
            (name, path.replace("feed_forward.", "feed_forward.shared_expert."),
             kind)
            for name, path, kind in shared_rows
        ]  # fmt: skip
        gate = "feed_forward.shared_expert_gate"
        rows.append((template.format("shared_expert_gate"), gate, core.LINEAR))
    return tuple(rows)


# --- Fields ------------------------------------------------------------


def _aux_loss(config):
    """transformers adds the router's loss only with
    `output_router_logits`."""
    if not config.get("output_router_logits", False):
        return 0.0
    return config.get("router_aux_loss_coef", 0.001)


def _coefficient(options):
    return options["feed_forward"]["aux_loss_coefficient"]


def experts_field(name, default, alias=None):
    """The number of experts: config.json's `name` (or `alias`)."""

    def load(config):
        return config.get(name, config.get(alias, default))

    def save(options):
        return options["feed_forward"]["num_experts"]

    return Field(name, "feed_forward.num_experts", load=load, save=save)


# Llama's fields but the feed-forward width, which each family names.
SHAPES = tuple(
    field for field in llama.COMMON
    if getattr(field, "name", None) != "intermediate_size"
)  # fmt: skip
MOE_COMMON = (
    *SHAPES, llama.ROPE, llama.tied(False), *llama.PRE_NORM,
    Fixed("feed_forward.type", MOE),
    Field("num_experts_per_tok", "feed_forward.experts_per_token", 2),
    Fixed("feed_forward.router_softmax", "before_top_k"),
    Field("router_aux_loss_coef", "feed_forward.aux_loss_coefficient",
          load=_aux_loss,
          save=lambda options: _coefficient(options) or 0.001),
    Field("output_router_logits", None,
          save=lambda options: _coefficient(options) > 0),
    *fields.off("layer_overrides"),
)  # fmt: skip
# Qwen's sparse layers: all of them, which is what keras_tfm holds.
QWEN_MOE = (
    Field("moe_intermediate_size", "feed_forward.hidden_dim"),
    Field("intermediate_size", None,
          save=lambda options: options["feed_forward"]["hidden_dim"]),
    Field("norm_topk_prob", "feed_forward.normalize_top_k", False),
    Fixed("feed_forward.router_jitter", 0.0),
    Constant("decoder_sparse_step", 1),
    Constant("mlp_only_layers", []),
)  # fmt: skip
MIXTRAL_FIELDS = (
    *MOE_COMMON, *llama.NO_QUERY_KEY_NORM,
    Field("intermediate_size", "feed_forward.hidden_dim"),
    experts_field("num_local_experts", 8),
    Fixed("feed_forward.normalize_top_k", True),
    Fixed("feed_forward.shared_expert_dim", None),
    Field("router_jitter_noise", "feed_forward.router_jitter", 0.0),
    Field("sliding_window", "attention.sliding_window", None),
    Fixed("attention.use_bias", False),
)  # fmt: skip
QWEN2_MOE_FIELDS = (
    *MOE_COMMON, *QWEN_MOE, *llama.NO_QUERY_KEY_NORM, *llama.NO_WINDOW,
    experts_field("num_experts", 60),
    Field("shared_expert_intermediate_size",
          "feed_forward.shared_expert_dim"),
    Field("qkv_bias", "attention.use_bias", True,
          {True: ["query", "key", "value"], False: False}),
    # Its sliding layers follow a rule of their own; none in released
    # checkpoints.
    Constant("use_sliding_window", False),
)  # fmt: skip
QWEN3_MOE_FIELDS = (
    *MOE_COMMON, *QWEN_MOE, llama.ALL_BIASES, llama.query_key_norm("head"),
    experts_field("num_experts", 128, alias="num_local_experts"),
    Fixed("feed_forward.shared_expert_dim", None),
    # Every layer slides, by `sliding_window`, if `use_sliding_window`.
    Field("sliding_window", "attention.sliding_window", load=llama._window,
          save=lambda options: options["attention"]["sliding_window"]),
    Field("use_sliding_window", None,
          save=lambda options: bool(options["attention"]["sliding_window"])),
)  # fmt: skip

MIXTRAL_BLOCK = moe_block("block_sparse_moe.{}", ("w1", "w3", "w2"), False)
QWEN_BLOCK = moe_block("mlp.{}", ("gate_proj", "up_proj", "down_proj"))

FAMILIES = (
    llama.family("mixtral", "MixtralForCausalLM", MIXTRAL_FIELDS,
                 MIXTRAL_BLOCK),
    llama.family("qwen2_moe", "Qwen2MoeForCausalLM", QWEN2_MOE_FIELDS,
                 QWEN_BLOCK),
    llama.family("qwen3_moe", "Qwen3MoeForCausalLM", QWEN3_MOE_FIELDS,
                 QWEN_BLOCK),
)  # fmt: skip

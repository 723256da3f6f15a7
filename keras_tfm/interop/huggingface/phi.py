"""Phi-2 (`phi`) and Phi-3 / Phi-4-mini (`phi3`): `CausalLM`s with partial
rotary positions.

Phi-2 runs attention and the feed-forward in parallel from one layer norm
(`residual="parallel_shared_norm"`), with biases everywhere, a `gelu_new`
feed-forward and a biased head; it rotates `partial_rotary_factor` of each
head (`attention.rotary["fraction"]`). Phi-3 is Llama's block with fused
tensors (`qkv_proj`, `gate_up_proj`: `fused.fused`), a sliding window
(`attention.sliding_window`, as transformers' Phi3 applies it) and the
`longrope` scaling (short factors up to `original_max_position_embeddings`,
long factors past it); Phi-4-mini adds a partial rotary factor and a tied
head. `partial_rotary` is the rotary option of both, and of GPT-NeoX.
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields, fused, llama
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed

PARTIAL = "partial_rotary_factor"
ORIGINAL = llama.ORIGINAL
# Phi3Config reads each of these rope types as `longrope`.
LONGROPE_TYPES = ("longrope", "su", "yarn")
LONGROPE_KEYS = (
    "rope_type", "type", "rope_theta", PARTIAL, ORIGINAL, "short_factor",
    "long_factor", "factor", "attention_factor",
)  # fmt: skip


def partial_rotary(
    config, fraction_field=PARTIAL, default_fraction=1.0, base_field=None
):
    """The `attention.rotary` option of a config.json whose rope parameters
    may rotate part of each head: `llama.rotary`'s, with `fraction` from
    the rope parameters' `partial_rotary_factor`, else the top-level
    `fraction_field`, and the base from `base_field` where the rope
    parameters have none (GPT-NeoX's `rotary_pct`, `rotary_emb_base`)."""
    name, parameters = llama._rope_parameters(config)
    fraction = parameters.pop(
        PARTIAL, config.get(fraction_field, default_fraction)
    )
    if base_field in config:
        parameters.setdefault("rope_theta", config[base_field])
    whole = {**config, name: parameters, PARTIAL: 1.0}
    return {**llama.rotary(whole), "fraction": fraction}


def partial_rope_parameters(options):
    """config.json's `rope_parameters`, with the rotated fraction."""
    rotary = options["attention"]["rotary"]
    whole = llama.rope_dict({**rotary, "fraction": 1.0})
    return {**whole, PARTIAL: rotary["fraction"]}


def _longrope(config, name, parameters):
    """The rotary option of a `longrope` scaling. Its `factor` defaults to
    `max_position_embeddings / original_max_position_embeddings`, from
    which the rotary embedding computes the attention factor config.json
    may leave out, as transformers does."""
    for key in parameters:
        if key not in LONGROPE_KEYS:
            raise ValueError(
                f"config.json has {name}[{key!r}], which keras_tfm does not "
                f"support for rope_type='longrope': expected keys "
                f"{LONGROPE_KEYS}."
            )
    positions = config["max_position_embeddings"]
    # Phi3Config's top-level field overrides the rope parameters'.
    original = config.get(ORIGINAL) or parameters.get(ORIGINAL) or positions
    scaling = {
        "type": "longrope",
        "short_factor": list(parameters["short_factor"]),
        "long_factor": list(parameters["long_factor"]),
        ORIGINAL: original,
        "factor": parameters.get("factor") or positions / original,
        "attention_factor": parameters.get("attention_factor"),
    }
    theta = parameters.get("rope_theta", config.get("rope_theta", 10000.0))
    return {"max_wavelength": theta, "scaling": scaling}


def phi3_rotary(config):
    """Phi-3's rotary option: `partial_rotary`, or a `longrope` scaling."""
    name, parameters = llama._rope_parameters(config)
    rope_type = parameters.get("rope_type") or parameters.get("type")
    if rope_type not in LONGROPE_TYPES:
        return partial_rotary(config)
    fraction = parameters.get(PARTIAL, config.get(PARTIAL, 1.0))
    return {**_longrope(config, name, parameters), "fraction": fraction}


def _original_positions(options):
    """Phi-3's `original_max_position_embeddings`: longrope's, else the
    context length."""
    scaling = options["attention"]["rotary"]["scaling"] or {}
    return scaling.get(ORIGINAL, options["sequence_length"])


# Options of today's decoders that Phi, Phi-3, GPT-NeoX and OPT do not use.
UNUSED = fields.off(
    "embedding_scale", "logit_soft_cap", "layer_overrides",
    "attention.logit_soft_cap", "attention.query_key_norm",
)  # fmt: skip

# The fields Phi-2 and Phi-3 share.
COMMON = (
    *UNUSED,
    Field("vocab_size", "vocab_size"),
    Field("hidden_size", "embed_dim"),
    Field("intermediate_size", "feed_forward.hidden_dim"),
    Field("num_hidden_layers", "num_layers"),
    Field("num_attention_heads", "attention.num_heads"),
    Field("num_key_value_heads", "attention.num_kv_heads", None,
          save=llama.key_value_heads),
    Field("head_dim", "attention.key_dim", None, save=fields.head_dim),
    Field("max_position_embeddings", "sequence_length"),
    Field("resid_pdrop", "dropout", 0.0),
    Field("embd_pdrop", None, save=lambda options: options["dropout"]),
    Constant("attention_dropout", 0.0, checked=False),  # none on weights
    Fixed("norm.placement", "pre"),
    Fixed("attention.attention_scale", None),
    Fixed("padding_id", None),
)  # fmt: skip

PHI_FIELDS = (
    *COMMON,
    Field("hidden_act", "feed_forward.activation", "gelu_new",
          fields.ACTIVATIONS),
    Field("layer_norm_eps", "norm.epsilon", 1e-5),
    Field("rope_parameters", "attention.rotary",
          load=lambda config: partial_rotary(config, default_fraction=0.5),
          save=partial_rope_parameters),
    # The head has a bias, which a tied head (the embedding) has not.
    Field("tie_word_embeddings", "tie_embeddings", False, {False: False}),
    Constant("qk_layernorm", False),
    *llama.NO_WINDOW,
    Fixed("norm.type", "layer"),
    Fixed("residual", "parallel_shared_norm"),
    Fixed("attention.use_bias", True),
    Fixed("feed_forward.use_bias", True),
    Fixed("output_bias", True),
)  # fmt: skip

PHI3_FIELDS = (
    *COMMON,
    Field("hidden_act", "feed_forward.activation", "silu",
          {"silu": "swiglu"}),
    Field("rms_norm_eps", "norm.epsilon", 1e-5),
    Field("rope_parameters", "attention.rotary", load=phi3_rotary,
          save=partial_rope_parameters),
    Field(ORIGINAL, None, save=_original_positions),
    Field("sliding_window", "attention.sliding_window", None),
    Field("tie_word_embeddings", "tie_embeddings", False),
    Fixed("norm.type", "rms"),
    Fixed("norm.offset", 0.0),
    *fields.off("residual"),
    Fixed("attention.use_bias", False),
    Fixed("feed_forward.use_bias", False),
    Fixed("output_bias", False, unless="tie_embeddings"),
)  # fmt: skip

EMBEDDING = (
    "model.embed_tokens.weight", "embedding.token_embedding",
    core.variable("embeddings"),
)  # fmt: skip
PHI_LAYOUT = (
    EMBEDDING,
    core.Stack("model.layers.{}", "blocks", (
        ("input_layernorm", "self_attention_norm", core.NORM),
        *core.attention_rows("self_attn.{}", "q_proj k_proj v_proj dense"),
        *core.feed_forward_rows("mlp.{}", "fc1 fc2"),
    )),
    ("model.final_layernorm", "final_norm", core.NORM),
    ("lm_head", "output_projection", core.LINEAR),
)  # fmt: skip
PHI3_LAYOUT = (
    EMBEDDING,
    core.Stack("model.layers.{}", "blocks", (
        ("input_layernorm", "self_attention_norm", core.NORM),
        ("self_attn.qkv_proj", "self_attention",
         fused.fused("query_dense key_dense value_dense")),
        ("self_attn.o_proj", "self_attention.output_dense",
         core.LINEAR_FROM_HEADS),
        ("post_attention_layernorm", "feed_forward_norm", core.NORM),
        # `gate, up = gate_up_proj(x).chunk(2)`: the gate first.
        ("mlp.gate_up_proj", "feed_forward",
         fused.fused("gate_dense hidden_dense")),
        ("mlp.down_proj", "feed_forward.output_dense", core.LINEAR),
    )),
    ("model.norm", "final_norm", core.NORM),
    ("lm_head", "output_projection", core.LINEAR),
)  # fmt: skip

FAMILIES = (
    core.Family("phi", "PhiForCausalLM", models.CausalLM, PHI_FIELDS,
                PHI_LAYOUT, prefix="model."),
    core.Family("phi3", "Phi3ForCausalLM", models.CausalLM, PHI3_FIELDS,
                PHI3_LAYOUT, prefix="model.",
                options=llama.completed_options),
)  # fmt: skip

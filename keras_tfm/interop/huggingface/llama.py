"""Llama (`llama`, Llama 1 to 3.x), Mistral (`mistral`) and Qwen2
(`qwen2`, Qwen2 and Qwen2.5): one layout, three sets of config fields.

Each is a `CausalLM` with rotary positions (Hugging Face's half rotation,
`rope_theta`, and the `linear`, `dynamic` and `llama3` scalings), grouped-
query attention, pre-norm RMS norms and SwiGLU. They differ in data only:
Llama has optional biases (`attention_bias`, `mlp_bias`), Qwen2 has biases
on the query, key and value projections alone, and Mistral attends within a
sliding window (within which it is full attention: the model's
`sequence_length` is the window).
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed

ORIGINAL = "original_max_position_embeddings"
# Each rope type and the keys of keras_tfm's rotary `scaling` it takes.
SCALINGS = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor", ORIGINAL),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", ORIGINAL),
}
# Keys any rope dict may hold besides its scaling's.
_ROPE_KEYS = (
    "rope_type",
    "type",
    "rope_theta",
    "partial_rotary_factor",
    ORIGINAL,
)


def _rope_parameters(config):
    """`(field name, parameters)`: transformers 5's `rope_parameters`, or
    the older `rope_scaling` with a top-level `rope_theta`."""
    for name in ("rope_parameters", "rope_scaling"):
        if config.get(name):
            return name, dict(config[name])
    return "rope_parameters", {}


def _rope_type(name, parameters, config):
    """The rope type of `parameters`, refused unless the rotary embedding
    computes it with every key given."""
    model_type = config.get("model_type")
    rope_type = parameters.get("rope_type") or parameters.get("type")
    rope_type = rope_type or "default"
    if rope_type not in SCALINGS:
        raise fields.unsupported(
            f"{name}['rope_type']", rope_type, SCALINGS, model_type
        )
    allowed = (*_ROPE_KEYS, *SCALINGS[rope_type])
    for key in parameters:
        if key not in allowed:
            raise ValueError(
                f"config.json has {name}[{key!r}], which keras_tfm does not "
                f"support for rope_type={rope_type!r}: expected keys {allowed}."
            )
    partial = "partial_rotary_factor"
    for field, source in (
        (f"{name}[{partial!r}]", parameters),
        (partial, config),
    ):
        if source.get(partial, 1.0) != 1.0:
            raise fields.unsupported(field, source[partial], [1.0], model_type)
    return rope_type


def rotary(config):
    """The `attention.rotary` option of a config.json."""
    name, parameters = _rope_parameters(config)
    rope_type = _rope_type(name, parameters, config)
    theta = parameters.get("rope_theta", config.get("rope_theta", 10000.0))
    if rope_type == "default":
        return {"max_wavelength": theta, "scaling": None}
    scaling = {key: parameters.get(key) for key in SCALINGS[rope_type]}
    # transformers' dynamic scaling reads `max_position_embeddings` alone.
    if ORIGINAL in scaling and (
        rope_type == "dynamic" or not scaling[ORIGINAL]
    ):
        scaling[ORIGINAL] = config["max_position_embeddings"]
    return {"max_wavelength": theta, "scaling": {"type": rope_type, **scaling}}


def rope_parameters(options):
    """config.json's `rope_parameters` for the model's options."""
    rotary = options["attention"]["rotary"]
    if rotary is None:
        raise ValueError(
            "`model` has attention.rotary=None; this family needs rotary "
            "positions."
        )
    scaling = dict(rotary["scaling"] or {"type": "default"})
    rope_type = scaling.pop("type")
    if rope_type == "dynamic":  # transformers reads max_position_embeddings
        del scaling[ORIGINAL]
    return {
        "rope_type": rope_type,
        "rope_theta": float(rotary["max_wavelength"]),
        **scaling,
    }


def context_length(config):
    """The model's `sequence_length`: `max_position_embeddings`, stretched
    by a `dynamic` scaling's factor (which extends the context)."""
    length = config["max_position_embeddings"]
    scaling = rotary(config)["scaling"] or {}
    if scaling.get("type") == "dynamic":
        length = int(length * scaling["factor"])
    return length


def max_positions(options):
    """config.json's `max_position_embeddings` for the model's options."""
    scaling = options["attention"]["rotary"]["scaling"] or {}
    if scaling.get("type") == "dynamic":
        return scaling["original_max_position_embeddings"]
    return options["sequence_length"]


def windowed_length(config):
    """Mistral's `sequence_length`: within its sliding window, sliding-window
    attention is full attention."""
    window = config.get("sliding_window") or context_length(config)
    return min(context_length(config), window)


def key_value_heads(options):
    attention = options["attention"]
    return attention["num_kv_heads"] or attention["num_heads"]


def positions(load):
    return Field(
        "max_position_embeddings", "sequence_length", load=load,
        save=max_positions,
    )  # fmt: skip


# The fields all three share.
COMMON = (
    Field("vocab_size", "vocab_size"),
    Field("hidden_size", "embed_dim"),
    Field("intermediate_size", "feed_forward.hidden_dim"),
    Field("num_hidden_layers", "num_layers"),
    Field("num_attention_heads", "attention.num_heads"),
    Field("num_key_value_heads", "attention.num_kv_heads", None,
          save=key_value_heads),
    Field("head_dim", "attention.key_dim", None, save=fields.head_dim),
    Field("hidden_act", "feed_forward.activation", "silu",
          {"silu": "swiglu"}),
    Field("rms_norm_eps", "norm.epsilon", 1e-6),
    Field("attention_dropout", "dropout", 0.0),
    Field("tie_word_embeddings", "tie_embeddings", False),
    Field("rope_parameters", "attention.rotary", load=rotary,
          save=rope_parameters),
    Fixed("norm.type", "rms"),
    Fixed("norm.placement", "pre"),
    Fixed("attention.attention_scale", None),
    Fixed("output_bias", False, unless="tie_embeddings"),
    Fixed("padding_id", None),
)  # fmt: skip

LLAMA_FIELDS = (
    *COMMON,
    positions(context_length),
    Field("attention_bias", "attention.use_bias", False,
          {False: False, True: True}),
    Field("mlp_bias", "feed_forward.use_bias", False),
    Constant("pretraining_tp", 1),
)  # fmt: skip
MISTRAL_FIELDS = (
    *COMMON,
    positions(windowed_length),
    Field("sliding_window", None, save=lambda options: options[
          "sequence_length"]),
    Fixed("attention.use_bias", False),
    Fixed("feed_forward.use_bias", False),
)  # fmt: skip
QWEN2_FIELDS = (
    *COMMON,
    positions(context_length),
    Constant("use_sliding_window", False),
    Fixed("attention.use_bias", ["query", "key", "value"]),
    Fixed("feed_forward.use_bias", False),
)

BLOCK = (
    ("input_layernorm", "self_attention_norm", core.NORM),
    *core.attention_rows("self_attn.{}", "q_proj k_proj v_proj o_proj"),
    ("post_attention_layernorm", "feed_forward_norm", core.NORM),
    *core.feed_forward_rows("mlp.{}", "up_proj down_proj gate_proj"),
)
LAYOUT = (
    ("model.embed_tokens.weight", "embedding.token_embedding",
     core.variable("embeddings")),
    core.Stack("model.layers.{}", "blocks", BLOCK),
    ("model.norm", "final_norm", core.NORM),
    ("lm_head", "output_projection", core.LINEAR),
)  # fmt: skip


def _family(model_type, architecture, fields):
    return core.Family(
        model_type, architecture, models.CausalLM, fields, LAYOUT,
        prefix="model.",
    )  # fmt: skip


FAMILIES = (
    _family("llama", "LlamaForCausalLM", LLAMA_FIELDS),
    _family("mistral", "MistralForCausalLM", MISTRAL_FIELDS),
    _family("qwen2", "Qwen2ForCausalLM", QWEN2_FIELDS),
)

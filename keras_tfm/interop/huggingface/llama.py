"""Llama (`llama`, Llama 1 to 3.x), Mistral (`mistral`), Qwen2 (`qwen2`,
Qwen2 and Qwen2.5), Qwen3 (`qwen3`), SmolLM3 (`smollm3`) and OLMo 2
(`olmo2`): one block of tensors, six sets of config fields.

Each is a `CausalLM` with rotary positions (Hugging Face's half rotation,
`rope_theta`, and the `linear`, `dynamic`, `llama3` and `yarn` scalings),
grouped-query attention, RMS norms and SwiGLU. They differ in data only:
Llama has optional biases (`attention_bias`, `mlp_bias`); Qwen2 has biases
on the query, key and value projections alone; Mistral attends within a
sliding window (`attention.sliding_window`); Qwen2 and Qwen3 may slide in
some layers (`layer_types`), SmolLM3 drops rotary positions in some
(`no_rope_layers`): per-layer `layer_overrides`; Qwen3 norms each head's
queries and keys, OLMo 2 the whole query and key projections
(`attention.query_key_norm`), and OLMo 2 norms the sublayers' outputs
instead of their inputs (`norm.placement="output"`).
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed
from keras_tfm.layers.normalization import OPTIONAL_NORM
from keras_tfm.layers.rotary import ORIGINAL
from keras_tfm.layers.rotary import SCALINGS as ROTARY_SCALINGS
from keras_tfm.models.base import OVERRIDDEN_OPTIONS, layer_options

# Each rope type these families take and the keys of its rotary `scaling`.
SCALINGS = {
    "default": (),
    **{
        kind: (*ROTARY_SCALINGS[kind].required, *ROTARY_SCALINGS[kind].optional)
        for kind in ("linear", "dynamic", "llama3", "yarn")
    },
}
# Keys any rope dict may hold besides its scaling's.
_ROPE_KEYS = (
    "rope_type",
    "type",
    "rope_theta",
    "partial_rotary_factor",
    ORIGINAL,
)
SLIDING, FULL = "sliding_attention", "full_attention"


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


def rotary(config, parameters=None, name=None):
    """The `attention.rotary` option of a config.json: of its rope
    parameters, or of `parameters` (one of several sets, named `name`)."""
    if parameters is None:
        name, parameters = _rope_parameters(config)
    rope_type = _rope_type(name, parameters, config)
    theta = parameters.get("rope_theta", config.get("rope_theta", 10000.0))
    if rope_type == "default":
        return {"max_wavelength": theta, "scaling": None}
    keys = SCALINGS[rope_type]
    scaling = {key: parameters[key] for key in keys if key in parameters}
    # transformers' dynamic scaling reads `max_position_embeddings` alone;
    # the others default to it.
    if ORIGINAL in keys and (rope_type == "dynamic" or ORIGINAL not in scaling):
        scaling[ORIGINAL] = config["max_position_embeddings"]
    return {"max_wavelength": theta, "scaling": {"type": rope_type, **scaling}}


def rope_dict(rotary, name="attention.rotary"):
    """Hugging Face's rope parameters for one `rotary` option."""
    if rotary is None:
        raise ValueError(
            f"`model` has {name}=None; this family needs rotary positions."
        )
    if rotary.get("fraction", 1.0) != 1.0:
        raise ValueError(
            f"`model` has {name}['fraction']={rotary['fraction']!r}; this "
            "family rotates whole heads (fraction 1.0)."
        )
    scaling = dict(rotary["scaling"] or {"type": "default"})
    rope_type = scaling.pop("type")
    if rope_type == "dynamic":  # transformers reads max_position_embeddings
        del scaling[ORIGINAL]
    return {
        "rope_type": rope_type,
        "rope_theta": float(rotary["max_wavelength"]),
        # None: an optional key left to transformers' default.
        **{key: value for key, value in scaling.items() if value is not None},
    }


def rope_parameters(options):
    """config.json's `rope_parameters` for the model's options."""
    return rope_dict(options["attention"]["rotary"])


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
    scaling = (options["attention"]["rotary"] or {}).get("scaling") or {}
    if scaling.get("type") == "dynamic":
        return scaling["original_max_position_embeddings"]
    return options["sequence_length"]


def key_value_heads(options):
    attention = options["attention"]
    return attention["num_kv_heads"] or attention["num_heads"]


def positions(load=context_length):
    return Field(
        "max_position_embeddings", "sequence_length", load=load,
        save=max_positions,
    )  # fmt: skip


# --- Per-layer options: config.json's `layer_types` and the like ---------


def block_options(options):
    """The complete options of each block: the model's, with its entry of
    `layer_overrides` merged over them as the model merges it."""
    overrides = options.get("layer_overrides") or [None] * options["num_layers"]
    return [
        layer_options(options, override, index)
        for index, override in enumerate(overrides)
    ]


def per_layer(options, concept, key):
    """`concept[key]` of each block."""
    return [block[concept][key] for block in block_options(options)]


def merged_overrides(*layers):
    """One `layer_overrides` list from per-layer lists of option dicts
    (`{"attention": {...}}` or {}), or None if no layer differs."""
    merged = []
    for dicts in zip(*layers, strict=True):
        override = {}
        for options in dicts:
            for concept, values in options.items():
                override.setdefault(concept, {}).update(values)
        merged.append(override or None)
    return merged if any(merged) else None


def layer_types(config, default=None):
    """Each layer's attention type: config.json's `layer_types`, else
    `default`, else all full."""
    count = config["num_hidden_layers"]
    types = config.get("layer_types") or default or [FULL] * count
    if len(types) != count or not set(types) <= {SLIDING, FULL}:
        raise ValueError(
            f"config.json has layer_types={types!r}: keras_tfm expects "
            f"{count} entries, each {SLIDING!r} or {FULL!r}."
        )
    return types


def window_layers(types, window):
    """`{"attention": {"sliding_window": window}}` for each sliding layer
    of `types`."""
    if window is None:
        return [{}] * len(types)
    sliding = {"attention": {"sliding_window": window}}
    return [sliding if kind == SLIDING else {} for kind in types]


def rope_parameters_per_layer_type(model_type):
    """The `save` of a family that writes `rope_parameters` per layer type
    (Gemma 3, ModernBERT): each type's one rotary option, the model's for a
    type no block has."""

    def save(options):
        rotaries = per_layer(options, "attention", "rotary")
        types = written_layer_types(options)
        written = {}
        for kind in (FULL, SLIDING):
            found = [
                r for r, t in zip(rotaries, types, strict=True) if t == kind
            ]
            found = found or [options["attention"]["rotary"]]
            if any(rotary != found[0] for rotary in found):
                raise ValueError(
                    f"`model` has {kind} blocks with different "
                    f"attention.rotary options; {model_type} has one rope "
                    "per layer type."
                )
            written[kind] = rope_dict(found[0])
        return written

    return save


def written_layer_types(options):
    """config.json's `layer_types`: sliding where a block has a window."""
    windows = per_layer(options, "attention", "sliding_window")
    return [SLIDING if window else FULL for window in windows]


def written_window(options):
    """config.json's `sliding_window`: the one window of the sliding
    blocks, or None."""
    windows = set(per_layer(options, "attention", "sliding_window")) - {None}
    if len(windows) > 1:
        raise ValueError(
            "`model` has blocks with different attention.sliding_window "
            f"values {sorted(windows)}; Hugging Face configs hold one."
        )
    return windows.pop() if windows else None


def overrides_saver(allowed):
    """The writer of `layer_types`, which refuses blocks whose options
    differ from the model's other than in `allowed` (`{concept: keys}`)."""

    def save(options):
        for index, block in enumerate(block_options(options)):
            for concept in OVERRIDDEN_OPTIONS:
                for key, value in block[concept].items():
                    same = value == options[concept].get(key)
                    if not same and key not in allowed.get(concept, ()):
                        raise ValueError(
                            f"`model` has layer_overrides[{index}], with "
                            f"{concept}[{key!r}]={value!r}, which this "
                            "family cannot vary per layer: it varies only "
                            f"{allowed}."
                        )
        return written_layer_types(options)

    return save


def _window(config):
    """Qwen's and SmolLM3's window: `sliding_window` if
    `use_sliding_window`."""
    if config.get("use_sliding_window"):
        return config.get("sliding_window")
    return None


def _qwen_overrides(config):
    """Qwen2/Qwen3: sliding layers from `max_window_layers` on (or as
    `layer_types` says), if `use_sliding_window`."""
    count = config["num_hidden_layers"]
    first = config.get("max_window_layers", count)
    default = [SLIDING if i >= first else FULL for i in range(count)]
    types = layer_types(config, default)
    return merged_overrides(window_layers(types, _window(config)))


def _first_sliding(options):
    types = written_layer_types(options)
    return types.index(SLIDING) if SLIDING in types else len(types)


def _smollm3_overrides(config):
    """SmolLM3: no rotary positions where `no_rope_layers` has a 0; sliding
    layers as `layer_types` says, if `use_sliding_window`."""
    count = config["num_hidden_layers"]
    interval = config.get("no_rope_layer_interval", 4)
    ropes = config.get("no_rope_layers") or [
        int((i + 1) % interval != 0) for i in range(count)
    ]
    no_rope = [
        {} if rope else {"attention": {"rotary": None}} for rope in ropes
    ]
    windows = window_layers(layer_types(config), _window(config))
    return merged_overrides(no_rope, windows)


def _no_rope_layers(options):
    """SmolLM3's `no_rope_layers`: 0 where a block has no rotary
    positions; the others rotate as the model's `attention.rotary`."""
    rotary = options["attention"]["rotary"]
    flags = []
    for index, own in enumerate(per_layer(options, "attention", "rotary")):
        if own not in (None, rotary):
            raise ValueError(
                f"`model` has layer_overrides[{index}]['attention']"
                f"['rotary']={own!r}; smollm3 layers rotate as the model's "
                f"attention.rotary={rotary!r} or not at all (None)."
            )
        flags.append(int(own is not None))
    return flags


def sliding_fields(load, allowed=None):
    """`layer_types` (per-layer `layer_overrides`, read by `load`) and the
    fields of Qwen's sliding window, written from the overrides."""
    allowed = allowed or {"attention": ("sliding_window",)}
    return (
        Field("layer_types", "layer_overrides", load=load,
              save=overrides_saver(allowed)),
        Field("sliding_window", None, save=written_window),
        Field("use_sliding_window", None,
              save=lambda options: written_window(options) is not None),
    )  # fmt: skip


# --- Fields ------------------------------------------------------------


def query_key_norm(scope, offset=0.0):
    """`attention.query_key_norm` of config.json's `rms_norm_eps`."""
    return Field(
        "rms_norm_eps", "attention.query_key_norm",
        load=lambda config: {
            "type": "rms", "epsilon": config.get("rms_norm_eps", 1e-6),
            "scope": scope, "offset": offset,
        },
        save=lambda options: _norm_epsilon(options, scope, offset),
    )  # fmt: skip


def _norm_epsilon(options, scope, offset):
    norm = options["attention"]["query_key_norm"]
    expected = {"type": "rms", "scope": scope, "offset": offset}
    if norm is None or any(norm.get(k) != v for k, v in expected.items()):
        raise ValueError(
            f"`model` has attention.query_key_norm={norm!r}; this family "
            f"needs {expected} with the blocks' epsilon."
        )
    return norm["epsilon"]


ALL_BIASES = Field("attention_bias", "attention.use_bias", False,
                   {False: False, True: True})  # fmt: skip
# The fields these and Gemma share.
SHAPES = (
    Field("vocab_size", "vocab_size"),
    Field("hidden_size", "embed_dim"),
    Field("intermediate_size", "feed_forward.hidden_dim"),
    Field("num_hidden_layers", "num_layers"),
    Field("num_attention_heads", "attention.num_heads"),
    Field("num_key_value_heads", "attention.num_kv_heads", None,
          save=key_value_heads),
    Field("head_dim", "attention.key_dim", None, save=fields.head_dim),
    Field("rms_norm_eps", "norm.epsilon", 1e-6),
    Field("attention_dropout", "dropout", 0.0),
    Fixed("norm.type", "rms"),
    Fixed("output_bias", False, unless="tie_embeddings"),
    Fixed("padding_id", None),
    *fields.off("residual"),
)  # fmt: skip
# The fields all six share.
COMMON = (
    *SHAPES,
    positions(),
    Field("hidden_act", "feed_forward.activation", "silu",
          {"silu": "swiglu"}),
    Fixed("norm.offset", 0.0),
    Fixed("attention.attention_scale", None),
    *fields.off("attention.logit_soft_cap", "embedding_scale",
                "logit_soft_cap"),
)  # fmt: skip
ROPE = Field("rope_parameters", "attention.rotary", load=rotary,
             save=rope_parameters)  # fmt: skip
PRE_NORM = (
    Fixed("norm.placement", "pre"),
    Fixed("feed_forward.use_bias", False),
)
NO_QUERY_KEY_NORM = fields.off("attention.query_key_norm")
NO_WINDOW = fields.off("attention.sliding_window")


def tied(default):
    return Field("tie_word_embeddings", "tie_embeddings", default)


LLAMA_FIELDS = (
    *COMMON, ROPE, tied(False), *NO_QUERY_KEY_NORM, *NO_WINDOW, ALL_BIASES,
    Fixed("norm.placement", "pre"),
    Field("mlp_bias", "feed_forward.use_bias", False),
    *fields.off("layer_overrides"),
    Constant("pretraining_tp", 1),
)  # fmt: skip
MISTRAL_FIELDS = (
    *COMMON, ROPE, tied(False), *NO_QUERY_KEY_NORM, *PRE_NORM,
    Field("sliding_window", "attention.sliding_window", None),
    Fixed("attention.use_bias", False),
    *fields.off("layer_overrides"),
)  # fmt: skip
QWEN2_FIELDS = (
    *COMMON, ROPE, tied(False), *NO_QUERY_KEY_NORM, *NO_WINDOW, *PRE_NORM,
    *sliding_fields(_qwen_overrides),
    Field("max_window_layers", None, save=_first_sliding),
    Fixed("attention.use_bias", ["query", "key", "value"]),
)  # fmt: skip
QWEN3_FIELDS = (
    *COMMON, ROPE, tied(False), *NO_WINDOW, *PRE_NORM, ALL_BIASES,
    query_key_norm("head"),
    *sliding_fields(_qwen_overrides),
    Field("max_window_layers", None, save=_first_sliding),
)  # fmt: skip
SMOLLM3_FIELDS = (
    *COMMON, tied(True), *NO_QUERY_KEY_NORM, *NO_WINDOW, ALL_BIASES,
    Fixed("norm.placement", "pre"),
    Field("mlp_bias", "feed_forward.use_bias", False),
    ROPE,
    *sliding_fields(_smollm3_overrides, {"attention": (
        "sliding_window", "rotary")}),
    Field("no_rope_layers", None, save=_no_rope_layers),
)  # fmt: skip
OLMO2_FIELDS = (
    *COMMON, ROPE, tied(False), *NO_WINDOW, ALL_BIASES,
    query_key_norm("projection"),
    Fixed("norm.placement", "output"),
    Fixed("feed_forward.use_bias", False),
    *fields.off("layer_overrides"),
)  # fmt: skip

SELF_ATTENTION = core.attention_rows(
    "self_attn.{}", "q_proj k_proj v_proj o_proj"
)
FEED_FORWARD = core.feed_forward_rows("mlp.{}", "up_proj down_proj gate_proj")
QUERY_KEY_NORMS = (
    ("self_attn.q_norm", "self_attention.query_norm", core.NORM),
    ("self_attn.k_norm", "self_attention.key_norm", core.NORM),
)
BLOCK = (
    ("input_layernorm", "self_attention_norm", core.NORM),
    *SELF_ATTENTION,
    *QUERY_KEY_NORMS,  # absent (no rows) but in Qwen3
    ("post_attention_layernorm", "feed_forward_norm", core.NORM),
    *FEED_FORWARD,
)
# OLMo 2 norms the outputs of its sublayers.
OUTPUT_NORM_BLOCK = (
    *SELF_ATTENTION,
    *QUERY_KEY_NORMS,
    ("post_attention_layernorm", "self_attention_norm", core.NORM),
    *FEED_FORWARD,
    ("post_feedforward_layernorm", "feed_forward_norm", core.NORM),
)


def layout(block):
    """A causal LM's tensors with `block`'s rows for each block."""
    return (
        ("model.embed_tokens.weight", "embedding.token_embedding",
         core.variable("embeddings")),
        core.Stack("model.layers.{}", "blocks", block),
        ("model.norm", "final_norm", core.NORM),
        ("lm_head", "output_projection", core.LINEAR),
    )  # fmt: skip


def completed_options(model):
    """The model's options as the fields read them: its config, with the
    norm `offset` that the completed norm options leave out at 0."""
    options = model.get_config()
    return {**options, "norm": {**OPTIONAL_NORM, **options["norm"]}}


def family(model_type, architecture, fields, block=BLOCK):
    return core.Family(
        model_type, architecture, models.CausalLM, fields, layout(block),
        prefix="model.", options=completed_options,
    )  # fmt: skip


FAMILIES = (
    family("llama", "LlamaForCausalLM", LLAMA_FIELDS),
    family("mistral", "MistralForCausalLM", MISTRAL_FIELDS),
    family("qwen2", "Qwen2ForCausalLM", QWEN2_FIELDS),
    family("qwen3", "Qwen3ForCausalLM", QWEN3_FIELDS),
    family("smollm3", "SmolLM3ForCausalLM", SMOLLM3_FIELDS),
    family("olmo2", "Olmo2ForCausalLM", OLMO2_FIELDS, OUTPUT_NORM_BLOCK),
)

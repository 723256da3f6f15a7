"""Gemma (`gemma`), Gemma 2 (`gemma2`) and Gemma 3's text model
(`gemma3_text`): Llama's tensors, with Gemma's options.

All three scale the embeddings by `sqrt(hidden_size)` (`embedding_scale`),
norm with RMS norms whose scale is `1 + weight` (`norm.offset=1.0`: the
checkpoint's weight is the layer's scale as is), gate with the tanh GELU
(`geglu_tanh`) and tie the output to the embedding. Gemma 2 and 3 norm
each sublayer's input and output (`norm.placement="sandwich"`), scale the
logits by `query_pre_attn_scalar ** -0.5` (`attention.attention_scale`) and
alternate sliding-window and global layers (`layer_types`, as per-layer
`layer_overrides`); Gemma 2 soft-caps the attention logits and the output
logits (`attention.logit_soft_cap`, `logit_soft_cap`); Gemma 3 norms each
head's queries and keys (`attention.query_key_norm`, offset 1) and gives
its local layers their own rotary base (`rope_local_base_freq`, or the
`sliding_attention` set of `rope_parameters`).
"""

import dataclasses
import math

from keras_tfm.interop.huggingface import core, fields, llama
from keras_tfm.interop.huggingface.fields import Field, Fixed
from keras_tfm.interop.huggingface.llama import FULL, SLIDING

GEGLU = {"gelu_pytorch_tanh": "geglu_tanh"}
# transformers reads Gemma 1's legacy "gelu" as the tanh GELU.
GEMMA_GEGLU = {**GEGLU, "gelu": "geglu_tanh"}
# The rope bases of Gemma 3's global and local layers, where unsaid.
GEMMA3_THETA = {FULL: 1_000_000.0, SLIDING: 10_000.0}


def _embedding_scale(options):
    """config.json's `hidden_size`, once `embedding_scale` is checked to be
    its square root, as every Gemma scales."""
    scale, width = options["embedding_scale"], options["embed_dim"]
    if scale is None or not math.isclose(scale, math.sqrt(width)):
        raise ValueError(
            f"`model` has embedding_scale={scale!r}; Gemma scales its "
            f"embeddings by sqrt(embed_dim)={math.sqrt(width)!r}."
        )
    return width


def _query_scale(config):
    return config.get("query_pre_attn_scalar", 256) ** -0.5


def _query_scalar(options):
    """config.json's `query_pre_attn_scalar`, whose inverse square root
    scales the logits (an int, as transformers declares it)."""
    scale = options["attention"]["attention_scale"]
    if scale is None:
        return fields.head_dim(options)
    scalar = scale**-2
    return round(scalar) if math.isclose(scalar, round(scalar)) else scalar


@dataclasses.dataclass(frozen=True)
class Off:
    """A config.json switch that keras_tfm supports off only (false or
    null; Gemma 3's bidirectional attention)."""

    name: str

    def read(self, config, options, model_type):
        if config.get(self.name):
            raise fields.unsupported(
                self.name, config[self.name], [False, None], model_type
            )

    def write(self, options, config, model_type):
        config[self.name] = False


def _layer_types(config, pattern):
    """`layer_types`, else all but every `pattern`-th layer sliding
    (checkpoints made before transformers wrote `layer_types`; Gemma 3's
    said `sliding_window_pattern`)."""
    pattern = config.get("sliding_window_pattern", pattern)
    count = config["num_hidden_layers"]
    default = [SLIDING if (i + 1) % pattern else FULL for i in range(count)]
    return llama.layer_types(config, default)


def _gemma2_overrides(config):
    """Gemma 2's sliding layers, each with the window."""
    windows = llama.window_layers(
        _layer_types(config, 2), config.get("sliding_window")
    )
    return llama.merged_overrides(windows)


def _gemma3_rotaries(config):
    """`{layer type: rotary option}`: transformers 5's `rope_parameters` per
    layer type, or transformers 4's `rope_scaling` and `rope_theta` (global
    layers) and `rope_local_base_freq` (local layers)."""
    parameters = config.get("rope_parameters") or {}
    if FULL in parameters or SLIDING in parameters:
        return {
            kind: llama.rotary(
                config,
                {
                    "rope_theta": GEMMA3_THETA[kind],
                    **(parameters.get(kind) or {}),
                },
                f"rope_parameters[{kind!r}]",
            )
            for kind in (FULL, SLIDING)
        }
    theta = config.get("rope_theta", GEMMA3_THETA[FULL])
    local = config.get("rope_local_base_freq", GEMMA3_THETA[SLIDING])
    return {
        FULL: llama.rotary({**config, "rope_theta": theta}),
        SLIDING: {"max_wavelength": local, "scaling": None},
    }


def _gemma3_overrides(config):
    """Gemma 3's local layers: the window and the local rotary option."""
    local = _gemma3_rotaries(config)[SLIDING]
    sliding = {
        "attention": {
            "sliding_window": config["sliding_window"],
            "rotary": local,
        }
    }
    types = _layer_types(config, 6)
    return llama.merged_overrides(
        [sliding if t == SLIDING else {} for t in types]
    )


def _gemma3_rotary(config):
    return _gemma3_rotaries(config)[FULL]


def _max_positions(config):
    return config["max_position_embeddings"]


COMMON = (
    *llama.SHAPES,
    llama.ALL_BIASES,
    llama.tied(True),
    llama.positions(_max_positions),
    Field("hidden_size", "embedding_scale",
          load=lambda config: math.sqrt(config["hidden_size"]),
          save=_embedding_scale),
    Off("use_bidirectional_attention"),
    Fixed("norm.offset", 1.0),
    Fixed("feed_forward.use_bias", False),
)  # fmt: skip
GEMMA_FIELDS = (
    *COMMON,
    llama.ROPE,
    *llama.NO_QUERY_KEY_NORM,
    *llama.NO_WINDOW,
    Field("hidden_act", "feed_forward.activation", "gelu_pytorch_tanh",
          GEMMA_GEGLU),
    Fixed("norm.placement", "pre"),
    Fixed("attention.attention_scale", None),
    *fields.off("attention.logit_soft_cap", "logit_soft_cap",
                "layer_overrides"),
)  # fmt: skip
LATER = (
    *COMMON,
    *llama.NO_WINDOW,
    Field("hidden_activation", "feed_forward.activation",
          "gelu_pytorch_tanh", GEGLU),
    Field("query_pre_attn_scalar", "attention.attention_scale",
          load=_query_scale, save=_query_scalar),
    Fixed("norm.placement", "sandwich"),
)  # fmt: skip
GEMMA2_FIELDS = (
    *LATER,
    llama.ROPE,
    *llama.NO_QUERY_KEY_NORM,
    Field("attn_logit_softcapping", "attention.logit_soft_cap", None),
    Field("final_logit_softcapping", "logit_soft_cap", None),
    Field("layer_types", "layer_overrides", load=_gemma2_overrides,
          save=llama.overrides_saver({"attention": ("sliding_window",)})),
    Field("sliding_window", None, save=llama.written_window),
)  # fmt: skip
GEMMA3_FIELDS = (
    *LATER,
    llama.query_key_norm("head", offset=1.0),
    Field("rope_parameters", "attention.rotary", load=_gemma3_rotary,
          save=llama.rope_parameters_per_layer_type("gemma3_text")),
    Field("attn_logit_softcapping", "attention.logit_soft_cap", None),
    Field("final_logit_softcapping", "logit_soft_cap", None),
    Field("layer_types", "layer_overrides", load=_gemma3_overrides,
          save=llama.overrides_saver({"attention": (
              "sliding_window", "rotary")})),
    Field("sliding_window", None, save=llama.written_window),
)  # fmt: skip

# Norms before and after each sublayer.
SANDWICH_NORMS = (
    ("input_layernorm", "self_attention_norm", core.NORM),
    ("post_attention_layernorm", "self_attention_output_norm", core.NORM),
    ("pre_feedforward_layernorm", "feed_forward_norm", core.NORM),
    ("post_feedforward_layernorm", "feed_forward_output_norm", core.NORM),
)
SANDWICH_BLOCK = (
    *SANDWICH_NORMS,
    *llama.SELF_ATTENTION,
    *llama.QUERY_KEY_NORMS,  # Gemma 3's
    *llama.FEED_FORWARD,
)

FAMILIES = (
    llama.family("gemma", "GemmaForCausalLM", GEMMA_FIELDS),
    llama.family("gemma2", "Gemma2ForCausalLM", GEMMA2_FIELDS, SANDWICH_BLOCK),
    llama.family(
        "gemma3_text", "Gemma3ForCausalLM", GEMMA3_FIELDS, SANDWICH_BLOCK
    ),
)

"""ModernBERT (`modernbert`): a `TextEncoder` (`ModernBertModel`), and the
`MaskedLM` (`ModernBertForMaskedLM`), `TextClassifier`
(`ModernBertForSequenceClassification`) and `TokenClassifier`
(`ModernBertForTokenClassification`) on it.

The encoder has no position table: its attention rotates queries and keys
(`position=None`, `attention.rotary`). Its blocks are pre-norm with layer
norms without biases (`norm.use_bias`, config.json's `norm_bias`), fused
query-key-value (`Wqkv`) and gated GELU (`Wi`: the activated half, then the
linear one) projections, and no other biases. Every
`global_attn_every_n_layers`-th block attends globally (rope base
`global_rope_theta`); the others are local (their own rope base,
`local_rope_theta`), seeing the `local_attention // 2` positions on each
side (`attention.sliding_window` of `local_attention // 2 + 1` in a
non-causal layer): per-layer `layer_overrides`, which also leave the first
block without a norm before its attention (`norm.skip`), where the
embedding's norm precedes it. The heads are a dense layer, an activation
and a norm (`classifier_bias`, `classifier_activation`: the classifiers'
`pooler` and `transform`); the masked-LM head then projects with the tied
embedding and a bias of its own (`MaskedLM(output_bias=True)`,
`decoder_bias`).

The one dropout rate of keras_tfm is config.json's `embedding_dropout`.
"""

import dataclasses

from keras_tfm import models
from keras_tfm.interop.huggingface import bert, core, fields, fused, llama
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed
from keras_tfm.interop.huggingface.llama import FULL, SLIDING
from keras_tfm.layers.normalization import norm_options
from keras_tfm.models.token_classifier import TokenClassifier

# transformers' activations of the gated feed-forward and keras_tfm's
# (writing picks the first).
HIDDEN_ACTIVATIONS = {
    "gelu": "geglu",
    "gelu_pytorch_tanh": "geglu_tanh",
    "gelu_new": "geglu_tanh",
}
# Of the heads' dense layer, which `activate` and Keras's Dense both take.
HEAD_ACTIVATIONS = {"gelu": "gelu", "relu": "relu"}
BOOLEAN = {False: False, True: True}
# The rope bases of the global and local layers, where config.json has
# none.
THETA = {FULL: 160_000.0, SLIDING: 10_000.0}
# The first block reads the embedding's norm.
FIRST_BLOCK = {"norm": {"skip": ["self_attention"]}}


def _rotaries(config):
    """`{layer type: rotary option}`: transformers 5's `rope_parameters`
    per layer type, or transformers 4's `global_rope_theta` and
    `local_rope_theta`."""
    parameters = config.get("rope_parameters") or {}
    names = {FULL: "global_rope_theta", SLIDING: "local_rope_theta"}
    return {
        kind: llama.rotary(
            config,
            {
                "rope_theta": config.get(names[kind], THETA[kind]),
                **(parameters.get(kind) or {}),
            },
            f"rope_parameters[{kind!r}]",
        )
        for kind in (FULL, SLIDING)
    }


def _window(config):
    """The local layers' `sliding_window`: the query and the
    `local_attention // 2` positions on each side."""
    local = config.get("local_attention", 128)
    if isinstance(local, bool) or not isinstance(local, int) or local < 2:
        raise ValueError(
            f"config.json has local_attention={local!r}; expected an "
            "integer >= 2."
        )
    return local // 2 + 1


def _layer_types(config):
    """`layer_types`, else every `global_attn_every_n_layers`-th layer
    global from the first (transformers 4's configs)."""
    every = config.get("global_attn_every_n_layers", 3)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(
            f"config.json has global_attn_every_n_layers={every!r}; "
            "expected a positive integer."
        )
    count = config["num_hidden_layers"]
    default = [SLIDING if i % every else FULL for i in range(count)]
    return llama.layer_types(config, default)


def _overrides(config):
    """Each block's options: the first without its attention's norm, the
    local ones with their window and rope base."""
    local = {
        "attention": {
            "sliding_window": _window(config),
            "rotary": _rotaries(config)[SLIDING],
        }
    }
    types = _layer_types(config)
    first = [FIRST_BLOCK] + [{}] * (len(types) - 1)
    return llama.merged_overrides(
        first, [local if kind == SLIDING else {} for kind in types]
    )


_overrides_saver = llama.overrides_saver(
    {"attention": ("sliding_window", "rotary"), "norm": ("skip",)}
)


def _saved_layer_types(options):
    """config.json's `layer_types`, once the blocks are checked to be
    ModernBERT's: only the first without its attention's norm."""
    skipped = [
        block["norm"].get("skip", []) for block in llama.block_options(options)
    ]
    expected = [FIRST_BLOCK["norm"]["skip"]] + [[]] * (len(skipped) - 1)
    if skipped != expected:
        raise ValueError(
            f"`model` has blocks whose norm['skip'] are {skipped}; "
            f"ModernBERT's are {expected}: its first block reads the "
            "embedding's norm, the others their own."
        )
    return _overrides_saver(options)


def _local_attention(options):
    """config.json's `local_attention` from the local blocks' window."""
    window = llama.written_window(options)
    return 128 if window is None else 2 * (window - 1)


def _global_rotary(config):
    return _rotaries(config)[FULL]


def _of_encoder(save):
    """A field's `save`, which reads the encoder's options, on the option
    tree `{"encoder": ..., ...}`."""
    return lambda options: save(options["encoder"])


def _in_encoder(field):
    """`field` of the encoder's options, in the option tree."""
    return dataclasses.replace(
        field,
        path=field.path and f"encoder.{field.path}",
        save=field.save and _of_encoder(field.save),
    )


ENCODER_FIELDS = tuple(
    _in_encoder(field)
    for field in (
        Field("vocab_size", "vocab_size"),
        Field("max_position_embeddings", "sequence_length", 8192),
        Field("hidden_size", "embed_dim"),
        Field("num_hidden_layers", "num_layers"),
        Field("num_attention_heads", "attention.num_heads"),
        Field("intermediate_size", "feed_forward.hidden_dim"),
        Field("hidden_activation", "feed_forward.activation", "gelu",
              HIDDEN_ACTIVATIONS),
        Field("norm_eps", "norm.epsilon", 1e-5),
        Field("norm_bias", "norm.use_bias", False, BOOLEAN),
        Field("attention_bias", "attention.use_bias", False, BOOLEAN),
        Field("mlp_bias", "feed_forward.use_bias", False, BOOLEAN),
        Field("embedding_dropout", "dropout", 0.0),
        Field("pad_token_id", "padding_id", 50283),
        Field("rope_parameters", "attention.rotary", load=_global_rotary,
              save=llama.rope_parameters_per_layer_type("modernbert")),
        Field("layer_types", "layer_overrides", load=_overrides,
              save=_saved_layer_types),
        Field("local_attention", None, save=_local_attention),
    )
) + (
    Constant("attention_dropout", 0.0, checked=False),
    Constant("mlp_dropout", 0.0, checked=False),
    *fields.fixed(
        {
            "position": None,
            "embedding_norm": True,
            "num_segments": None,
            "position_offset": 0,
            "embedding_dim": None,
            "causal": False,
            "relative_embedding_norm": False,
            "norm.type": "layer",
            "norm.placement": "pre",
            "attention.key_dim": None,
            "attention.num_kv_heads": None,
            "attention.attention_scale": None,
            **fields.NO_ATTENTION_VARIANTS,
        },
        prefix="encoder.",
    ),
)  # fmt: skip


def head_fields(path):
    """The fields of a head's dense transform at `path` (`TextClassifier`'s
    `pooler`, `TokenClassifier`'s `transform`)."""
    return (
        Field("classifier_activation", f"{path}.activation", "gelu",
              HEAD_ACTIVATIONS),
        Field("classifier_bias", f"{path}.use_bias", False, BOOLEAN),
        Field("norm_eps", f"{path}.norm.epsilon", 1e-5),
        Field("norm_bias", f"{path}.norm.use_bias", False, BOOLEAN),
        Fixed(f"{path}.norm.type", "layer"),
    )  # fmt: skip


CLASSIFIER_FIELDS = (
    *ENCODER_FIELDS,
    Field("num_labels", "num_classes", load=fields.num_labels),
    Field("classifier_dropout", "dropout", 0.0),
)
SEQUENCE_CLASSIFIER_FIELDS = (
    *CLASSIFIER_FIELDS,
    *head_fields("pooler"),
    Field("classifier_pooling", "pooling", "cls", {"cls": "cls",
                                                   "mean": "mean"}),
)  # fmt: skip
TOKEN_CLASSIFIER_FIELDS = (*CLASSIFIER_FIELDS, *head_fields("transform"))
MASKED_LM_FIELDS = (
    *ENCODER_FIELDS,
    Field("classifier_activation", "activation", "gelu", HEAD_ACTIVATIONS),
    Field("classifier_bias", "head_bias", False, BOOLEAN),
    Field("norm_eps", "layer_norm_epsilon", 1e-5),
    Field("norm_bias", "head_norm_bias", False, BOOLEAN),
    Field("decoder_bias", "output_bias", True, BOOLEAN),
    Field("tie_word_embeddings", "tie_embeddings", True, BOOLEAN),
    Constant("sparse_prediction", False, checked=False),
)  # fmt: skip


def _layer_norm(name, layer):
    """A LayerNormalization's weight, and its bias if it has one."""
    tensors = core.NORM(name, layer)
    return tensors if layer.center else tensors[:1]


BLOCK = (
    ("attn_norm", "self_attention_norm", _layer_norm),  # not the first's
    ("attn.Wqkv", "self_attention",
     fused.fused("query_dense key_dense value_dense")),
    ("attn.Wo", "self_attention.output_dense", core.LINEAR_FROM_HEADS),
    ("mlp_norm", "feed_forward_norm", _layer_norm),
    # `input, gate = Wi(x).chunk(2)` and `act(input) * gate`: the activated
    # half, keras_tfm's gate, first.
    ("mlp.Wi", "feed_forward", fused.fused("gate_dense hidden_dense")),
    ("mlp.Wo", "feed_forward.output_dense", core.LINEAR),
)  # fmt: skip


def _encoder_layout(path):
    """The encoder's rows, for an encoder at `path` of the model."""
    return (
        ("model.embeddings.tok_embeddings.weight",
         f"{path}embedding.token_embedding", core.variable("embeddings")),
        ("model.embeddings.norm", f"{path}embedding_norm", _layer_norm),
        core.Stack("model.layers.{}", f"{path}blocks", BLOCK),
        ("model.final_norm", f"{path}final_norm", _layer_norm),
    )  # fmt: skip


def _classifier_layout(transform):
    """A classifier's rows, its dense transform at `transform_dense` and
    `transform_norm` of the model."""
    return (
        *_encoder_layout("encoder."),
        ("head.dense", f"{transform}_dense", core.LINEAR),
        ("head.norm", f"{transform}_norm", _layer_norm),
        ("classifier", "head", core.LINEAR),
    )


MASKED_LM_LAYOUT = (
    *_encoder_layout("encoder."),
    ("head.dense", "head_dense", core.LINEAR),
    ("head.norm", "head_norm", _layer_norm),
    ("decoder", "output_projection", core.LINEAR),  # untied
    ("decoder.bias", "output_bias_layer", core.variable("bias")),  # tied
)


def _encoder_options(encoder):
    """The encoder's options, its norm's `use_bias` completed."""
    options = encoder.get_config()
    return {**options, "norm": {"use_bias": True, **options["norm"]}}


def _dense_transform(options):
    """A `pooler` (or `transform`) option, complete: its norm too."""
    if not isinstance(options, dict) or options.get("norm") is None:
        raise ValueError(
            f"`model` has a head transform {options!r}; ModernBERT's is a "
            "dict with a `norm`."
        )
    norm = {"use_bias": True, **norm_options(options["norm"])}
    del norm["placement"]  # a head's norm is not around a sublayer
    return {**models.text.DENSE_TRANSFORM, **options, "norm": norm}


def _classifier_options(transform):
    """The options of a classifier whose dense transform is the option
    `transform`."""

    def options_of(model):
        options = model.get_config()
        return {
            **options,
            "encoder": _encoder_options(model.encoder),
            transform: _dense_transform(options[transform]),
        }

    return options_of


def _masked_lm_options(model):
    return {**model.get_config(), "encoder": _encoder_options(model.encoder)}


FAMILIES = (
    bert.encoder_family(
        "modernbert", "ModernBertModel", ENCODER_FIELDS, _encoder_layout(""),
        "model.", _encoder_options,
    ),
    bert.head_family(
        "modernbert", "ModernBertForMaskedLM", models.MaskedLM,
        MASKED_LM_FIELDS, MASKED_LM_LAYOUT, "model.", _masked_lm_options,
    ),
    bert.head_family(
        "modernbert", "ModernBertForSequenceClassification",
        models.TextClassifier, SEQUENCE_CLASSIFIER_FIELDS,
        _classifier_layout("pooler"), "model.", _classifier_options("pooler"),
    ),
    bert.head_family(
        "modernbert", "ModernBertForTokenClassification", TokenClassifier,
        TOKEN_CLASSIFIER_FIELDS, _classifier_layout("transform"), "model.",
        _classifier_options("transform"),
    ),
)  # fmt: skip

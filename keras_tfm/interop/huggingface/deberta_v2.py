"""DeBERTa-v2 and v3 (`deberta-v2`): a `TextEncoder` (`DebertaV2Model`),
and the `TextClassifier` (`DebertaV2ForSequenceClassification`),
`MaskedLM` (`DebertaV2ForMaskedLM`) and `TokenClassifier`
(`DebertaV2ForTokenClassification`) on it.

The blocks are BERT's post-norm blocks with DeBERTa's disentangled
attention (`attention={"type": "disentangled", ...}`): content-to-position
and position-to-content terms (`pos_att_type`) over one relative-position
table that every block reads (`rel_embeddings`, with its LayerNorm when
`norm_rel_ebd` is `"layer_norm"`), in log buckets (`position_buckets`),
projected by each layer's query and key projections (`share_att_key`) or
by projections of their own.
Absolute positions (`position_biased_input`) and token types
(`type_vocab_size`) are optional. The classifier's pooler is a dense layer
with `pooler_hidden_act` on the first token. The masked LM's legacy head
(`legacy=True`, the default) is BERT's, loaded and written untied; the
other (`legacy=False`) projects with the token embedding and adds a bias
(`output_bias=True`).

Refused, naming the field: no relative attention, `conv_kernel_size > 0`
(DeBERTa-v2 xlarge's convolution), `embedding_size != hidden_size` (a projection
before the embedding norm).
"""

import dataclasses

from keras_tfm import models
from keras_tfm.interop.huggingface import bert, core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed
from keras_tfm.layers.options import attention_type
from keras_tfm.models.text import DENSE_TRANSFORM
from keras_tfm.models.token_classifier import TokenClassifier


def _position_terms(config):
    """`pos_att_type`: a list, or a string such as `"p2c|c2p"`."""
    terms = config.get("pos_att_type") or []
    if isinstance(terms, str):
        terms = [term.strip() for term in terms.lower().split("|")]
    for term in terms:
        if term not in ("c2p", "p2c"):
            raise ValueError(
                f"pos_att_type has {term!r}; expected terms among "
                "['c2p', 'p2c']"
            )
    return list(terms)


def _max_relative_positions(config):
    """`max_relative_positions`, which below 1 means
    `max_position_embeddings`."""
    value = config.get("max_relative_positions", -1)
    return value if value >= 1 else config["max_position_embeddings"]


def _position_buckets(config):
    value = config.get("position_buckets", -1)
    return value if value > 0 else None


# What transformers needs for a disentangled attention; it reads it as
# False when absent.
_DISENTANGLED = {True: "disentangled"}


def _disentangled(options):
    """True, for a model with disentangled attention; else refused."""
    kind = attention_type(options["encoder"]["attention"])
    if kind != "disentangled":
        raise ValueError(
            f"`model` has attention['type']={kind!r}; deberta-v2 needs "
            "attention['type']='disentangled'."
        )
    return True


ENCODER_FIELDS = tuple(
    dataclasses.replace(field, path=f"encoder.{field.path}")
    for field in (
        Field("vocab_size", "vocab_size"),
        Field("max_position_embeddings", "sequence_length"),
        Field("hidden_size", "embed_dim"),
        Field("embedding_size", "embed_dim", None),
        Field("num_hidden_layers", "num_layers"),
        Field("num_attention_heads", "attention.num_heads"),
        Field("intermediate_size", "feed_forward.hidden_dim"),
        Field(
            "hidden_act", "feed_forward.activation", "gelu", fields.ACTIVATIONS
        ),
        Field("hidden_dropout_prob", "dropout", 0.1),
        Field("layer_norm_eps", "norm.epsilon", 1e-7),
        Field(
            "type_vocab_size", "num_segments", None,
            load=lambda config: config.get("type_vocab_size", 0) or None,
            save=lambda options: options["encoder"]["num_segments"] or 0,
        ),
        Field("pad_token_id", "padding_id", 0),
        Field(
            "position_biased_input", "position", True,
            {True: "learned", False: None},
        ),
        Field(
            "relative_attention", "attention.type", False, _DISENTANGLED,
            save=_disentangled,
        ),
        Field(
            "share_att_key", "attention.share_position_projections", False
        ),
        Field(
            "pos_att_type", "attention.position_terms", load=_position_terms
        ),
        Field(
            "position_buckets", "attention.position_buckets", None,
            load=_position_buckets,
            save=lambda options: (
                options["encoder"]["attention"]["position_buckets"] or -1
            ),
        ),
        Field(
            "max_relative_positions", "attention.max_relative_positions",
            load=_max_relative_positions,
        ),
        Field(
            "norm_rel_ebd", "relative_embedding_norm", "none",
            {"none": False, "layer_norm": True},
        ),
    )
) + (
    Constant("conv_kernel_size", 0),
    Constant("attention_probs_dropout_prob", 0.1, checked=False),
    *fields.fixed(
        {
            "embedding_norm": True,
            "embedding_dim": None,
            "position_offset": 0,
            "causal": False,
            "layer_overrides": None,
            "norm.type": "layer",
            "norm.placement": "post",
            **fields.PLAIN_BLOCKS,
        },
        prefix="encoder.",
    ),
)  # fmt: skip


def _classifier_dropout(config):
    dropout = config.get("cls_dropout")
    return (
        config.get("hidden_dropout_prob", 0.1) if dropout is None else dropout
    )


POOLER_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "tanh": "tanh"}

CLASSIFIER_FIELDS = (
    *ENCODER_FIELDS,
    Field("num_labels", "num_classes", load=fields.num_labels),
    Field("cls_dropout", "dropout", load=_classifier_dropout),
    Field("pooler_hidden_size", "encoder.embed_dim", None),
    Field("pooler_hidden_act", "pooler.activation", "gelu", POOLER_ACTIVATIONS),
    Constant("pooler_dropout", 0.0, checked=False),
    Fixed("pooling", "cls"),
    Fixed("pooler.use_bias", True),
    Fixed("pooler.norm", None),
)
MASKED_LM_FIELDS = (
    *ENCODER_FIELDS,
    Field("hidden_act", "activation", "gelu", fields.ACTIVATIONS),
    Field("layer_norm_eps", "layer_norm_epsilon", 1e-7),
    # The legacy head is BERT's, loaded untied; the other projects with the
    # token embedding and adds a bias.
    Field("legacy", "tie_embeddings", True, {True: False, False: True}),
    Field(
        "legacy",
        "output_bias",
        True,
        {True: None, False: True},
        load=lambda config: None if config.get("legacy", True) else True,
    ),
    Constant("tie_word_embeddings", False, checked=False),
    *fields.fixed({"head_bias": True, "head_norm_bias": True}),
)
TOKEN_CLASSIFIER_FIELDS = (
    *ENCODER_FIELDS,
    Field("num_labels", "num_classes", load=fields.num_labels),
    Field("hidden_dropout_prob", "dropout", 0.1),
    Fixed("transform", None),
)

BLOCK = (
    *core.attention_rows(
        "attention.{}",
        "self.query_proj self.key_proj self.value_proj output.dense",
    ),
    # The position terms' own projections (`share_att_key=False`).
    (
        "attention.self.pos_query_proj",
        "self_attention.position_query_dense",
        core.LINEAR,
    ),
    (
        "attention.self.pos_key_proj",
        "self_attention.position_key_dense",
        core.LINEAR,
    ),
    ("attention.output.LayerNorm", "self_attention_norm", core.NORM),
    *core.feed_forward_rows("{}.dense", "intermediate output"),
    ("output.LayerNorm", "feed_forward_norm", core.NORM),
)


def _encoder_layout(encoder, path):
    """The rows of `encoder`, at `path` of the model."""
    embeddings = "deberta.embeddings"
    rows = [
        (f"{embeddings}.word_embeddings.weight",
         f"{path}embedding.token_embedding", core.variable("embeddings")),
    ]  # fmt: skip
    if encoder.position is not None:
        rows.append(
            (f"{embeddings}.position_embeddings.weight", f"{path}embedding",
             core.variable("position_embeddings"))
        )  # fmt: skip
    if encoder.num_segments is not None:
        rows.append(
            (f"{embeddings}.token_type_embeddings.weight", f"{path}embedding",
             core.variable("segment_embeddings"))
        )  # fmt: skip
    return (
        *rows,
        (f"{embeddings}.LayerNorm", f"{path}embedding_norm", core.NORM),
        ("deberta.encoder.rel_embeddings.weight",
         f"{path}relative_embeddings", core.variable("embeddings")),
        ("deberta.encoder.LayerNorm", f"{path}relative_embeddings.norm_layer",
         core.NORM),
        core.Stack("deberta.encoder.layer.{}", f"{path}blocks", BLOCK),
    )  # fmt: skip


def _tied_decoder(name, layer):
    """The masked-LM projection; a tied checkpoint holds its matrix as the
    token embedding and its bias as `cls.predictions.bias`."""
    weight, bias = core.LINEAR(name, layer)
    return [
        dataclasses.replace(
            weight, alias="deberta.embeddings.word_embeddings.weight"
        ),
        dataclasses.replace(bias, alias="cls.predictions.bias"),
    ]


def _classifier_layout(model):
    return (
        *_encoder_layout(model.encoder, "encoder."),
        ("pooler.dense", "pooler_dense", core.LINEAR),
        ("classifier", "head", core.LINEAR),
    )


def _token_classifier_layout(model):
    return (
        *_encoder_layout(model.encoder, "encoder."),
        ("classifier", "head", core.LINEAR),
    )


def _masked_lm_layout(model):
    if not model.tie_embeddings:  # the legacy head
        return (
            *_encoder_layout(model.encoder, "encoder."),
            ("cls.predictions.transform.dense", "head_dense", core.LINEAR),
            ("cls.predictions.transform.LayerNorm", "head_norm", core.NORM),
            ("cls.predictions.decoder", "output_projection", _tied_decoder),
        )
    head = "lm_predictions.lm_head"
    return (
        *_encoder_layout(model.encoder, "encoder."),
        (f"{head}.dense", "head_dense", core.LINEAR),
        (f"{head}.LayerNorm", "head_norm", core.NORM),
        (f"{head}.bias", "output_bias_layer", core.variable("bias")),
    )


def _head_options(model):
    """A head's options and its encoder's, with a classifier's `pooler` as
    a dict (`pooler=True` is BERT's tanh pooler)."""
    options = bert.head_options(model)
    if "pooler" not in options:
        return options
    pooler = options["pooler"]
    if pooler is False:
        raise ValueError(
            "`model` has pooler=False; DebertaV2ForSequenceClassification "
            "has a dense pooler on the first token: pooler=True or a dict."
        )
    options["pooler"] = {**DENSE_TRANSFORM, **(pooler if pooler else {})}
    return options


FAMILIES = (
    bert.encoder_family(
        "deberta-v2", "DebertaV2Model", ENCODER_FIELDS,
        lambda model: _encoder_layout(model, ""), "deberta.",
    ),
    bert.head_family(
        "deberta-v2", "DebertaV2ForSequenceClassification",
        models.TextClassifier, CLASSIFIER_FIELDS, _classifier_layout,
        "deberta.", _head_options,
    ),
    bert.head_family(
        "deberta-v2", "DebertaV2ForMaskedLM", models.MaskedLM,
        MASKED_LM_FIELDS, _masked_lm_layout, "deberta.", _head_options,
    ),
    bert.head_family(
        "deberta-v2", "DebertaV2ForTokenClassification", TokenClassifier,
        TOKEN_CLASSIFIER_FIELDS, _token_classifier_layout, "deberta.",
        _head_options,
    ),
)  # fmt: skip

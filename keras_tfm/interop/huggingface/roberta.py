"""RoBERTa (`roberta`) and XLM-RoBERTa (`xlm-roberta`): a `TextEncoder`
(`RobertaModel`), and the `TextClassifier`
(`RobertaForSequenceClassification`), `TokenClassifier`
(`RobertaForTokenClassification`) and `MaskedLM` (`RobertaForMaskedLM`)
on it; XLM-RoBERTa's `XLMRoberta*` architectures alike.

RoBERTa is BERT's encoder (`bert.BLOCK`) under the prefix `roberta.`,
with its padding id (1) and learned positions that start at row
`pad_token_id + 1` of the table (`position_offset`): config.json's
`max_position_embeddings` counts those rows too, so `sequence_length` is
two less (514 -> 512). transformers numbers positions from the padding
(`pad_token_id + 1 + ` the count of real tokens so far): with right
padding, as keras_tfm pads, real tokens get keras_tfm's positions; with
left padding they do not, since keras_tfm numbers positions from the
first column.

The classification head is BERT's pooler under other names
(`classifier.dense`, `classifier.out_proj`: `pooler=True` on the first
token); transformers also applies dropout before its dense layer, in
training only. The masked-LM head's activation is GELU whatever
`hidden_act` says, and its tied projection has a bias: it loads untied,
as BERT's does (`bert`).

BERT's encoder layout under another prefix, which ELECTRA's is too, is
declared here: `encoder_layout`.
"""

import dataclasses

from keras_tfm import models
from keras_tfm.interop.huggingface import bert, core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed
from keras_tfm.models.token_classifier import TokenClassifier


def without(declared, *paths):
    """`declared` fields but those of the options (or config.json fields,
    for a `Constant`) at `paths`, which a family declares otherwise."""
    return tuple(
        field
        for field in declared
        if (getattr(field, "path", None) or field.name) not in paths
    )


def _position_offset(config):
    return config.get("pad_token_id", 1) + 1


def _sequence_length(config):
    rows, offset = config["max_position_embeddings"], _position_offset(config)
    if rows <= offset:
        raise ValueError(
            f"max_position_embeddings={rows} leaves no positions after the "
            f"{offset} rows before the first (pad_token_id + 1)"
        )
    return rows - offset


def _max_position_embeddings(options):
    encoder = options["encoder"]
    return encoder["sequence_length"] + encoder["position_offset"]


ENCODER_FIELDS = without(
    bert.ENCODER_FIELDS,
    "encoder.sequence_length",
    "encoder.padding_id",
    "encoder.position_offset",
) + (
    Field(
        "max_position_embeddings", "encoder.sequence_length",
        load=_sequence_length, save=_max_position_embeddings,
    ),
    Field("pad_token_id", "encoder.padding_id", 1),
    # Written as pad_token_id too: a model whose offset is not its padding
    # id plus one is refused.
    Field(
        "pad_token_id", "encoder.position_offset", load=_position_offset,
        save=lambda options: options["encoder"]["position_offset"] - 1,
    ),
)  # fmt: skip


def head_fields(bert_fields, encoder_fields):
    """The head's fields of BERT's `bert_fields` (`CLASSIFIER_FIELDS`) on
    another family's encoder fields."""
    own = [field for field in bert_fields if field not in bert.ENCODER_FIELDS]
    return (*encoder_fields, *own)


CLASSIFIER_FIELDS = head_fields(bert.CLASSIFIER_FIELDS, ENCODER_FIELDS)
MASKED_LM_FIELDS = (
    *ENCODER_FIELDS,
    Fixed("activation", "gelu"),
    Field("layer_norm_eps", "layer_norm_epsilon", 1e-12),
    *fields.fixed(bert.PLAIN_MASKED_LM),
    Constant("tie_word_embeddings", False, checked=False),
)


def encoder_layout(prefix, path):
    """The rows of BERT's encoder with tensor names under `prefix`
    (`roberta`), for a `TextEncoder` at `path` of the model (`""` or
    `"encoder."`)."""
    embeddings = f"{prefix}.embeddings"
    return (
        (f"{embeddings}.word_embeddings.weight",
         f"{path}embedding.token_embedding", core.variable("embeddings")),
        (f"{embeddings}.position_embeddings.weight", f"{path}embedding",
         core.variable("position_embeddings")),
        (f"{embeddings}.token_type_embeddings.weight", f"{path}embedding",
         core.variable("segment_embeddings")),
        (f"{embeddings}.LayerNorm", f"{path}embedding_norm", core.NORM),
        core.Stack(f"{prefix}.encoder.layer.{{}}", f"{path}blocks", bert.BLOCK),
    )  # fmt: skip


def _tied_decoder(name, layer):
    """The masked-LM projection. A tied checkpoint holds its matrix as the
    token embedding and its bias as `lm_head.bias`, which an untied one
    holds too: transformers' head has both."""
    weight, bias = core.LINEAR(name, layer)
    return [
        dataclasses.replace(
            weight, alias="roberta.embeddings.word_embeddings.weight"
        ),
        dataclasses.replace(bias, alias="lm_head.bias"),
        dataclasses.replace(bias, name="lm_head.bias", alias=bias.name),
    ]


ENCODER_LAYOUT = encoder_layout("roberta", "encoder.")
CLASSIFIER_LAYOUT = (
    *ENCODER_LAYOUT,
    ("classifier.dense", "pooler_dense", core.LINEAR),
    ("classifier.out_proj", "head", core.LINEAR),
)
TOKEN_CLASSIFIER_LAYOUT = (
    *ENCODER_LAYOUT,
    ("classifier", "head", core.LINEAR),
)
MASKED_LM_LAYOUT = (
    *ENCODER_LAYOUT,
    ("lm_head.dense", "head_dense", core.LINEAR),
    ("lm_head.layer_norm", "head_norm", core.NORM),
    ("lm_head.decoder", "output_projection", _tied_decoder),
)


def _families(model_type, name):
    return (
        bert.encoder_family(
            model_type, f"{name}Model", ENCODER_FIELDS,
            encoder_layout("roberta", ""), "roberta.",
        ),
        bert.head_family(
            model_type, f"{name}ForSequenceClassification",
            models.TextClassifier, CLASSIFIER_FIELDS, CLASSIFIER_LAYOUT,
            "roberta.",
        ),
        bert.head_family(
            model_type, f"{name}ForTokenClassification", TokenClassifier,
            bert.token_classifier_fields(ENCODER_FIELDS),
            TOKEN_CLASSIFIER_LAYOUT, "roberta.",
        ),
        bert.head_family(
            model_type, f"{name}ForMaskedLM", models.MaskedLM,
            MASKED_LM_FIELDS, MASKED_LM_LAYOUT, "roberta.",
        ),
    )  # fmt: skip


FAMILIES = (
    *_families("roberta", "Roberta"),
    *_families("xlm-roberta", "XLMRoberta"),
)

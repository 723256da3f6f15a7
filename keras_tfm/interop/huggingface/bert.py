"""BERT (`bert`): a `TextEncoder` (`BertModel`), and the `TextClassifier`
(`BertForSequenceClassification`), `TokenClassifier`
(`BertForTokenClassification`) and `MaskedLM` (`BertForMaskedLM`) on it.
The encoder families after it (RoBERTa to DeBERTa) build their families
with `encoder_family` and `head_family`.

The encoder is post-norm with an embedding norm and token types
(`num_segments`). The fields and rows of the encoder are those of an
option tree `{"encoder": ..., ...}`, where the heads add theirs at the
top: one declaration serves the three architectures.

BERT's masked-LM head ties its output projection to the token embedding
and adds a bias, which keras_tfm's tied projection (the embedding used in
reverse) does not have: it loads untied, as a Dense layer holding the
embedding's values and the bias, and is written back untied.
"""

import dataclasses

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed

# The encoder options added after BERT, at the values that turn them off.
PLAIN_ENCODER = {
    "encoder.position_offset": 0,
    "encoder.embedding_dim": None,
    "encoder.causal": False,
    "encoder.layer_overrides": None,
    "encoder.relative_embedding_norm": False,
}
# BERT's masked-LM head: untied (see above), with its biases.
PLAIN_MASKED_LM = {
    "tie_embeddings": False,
    "head_bias": True,
    "head_norm_bias": True,
    "output_bias": None,
}

ENCODER_FIELDS = tuple(
    dataclasses.replace(field, path=f"encoder.{field.path}")
    for field in (
        Field("vocab_size", "vocab_size"),
        Field("max_position_embeddings", "sequence_length"),
        Field("hidden_size", "embed_dim"),
        Field("num_hidden_layers", "num_layers"),
        Field("num_attention_heads", "attention.num_heads"),
        Field("intermediate_size", "feed_forward.hidden_dim"),
        Field(
            "hidden_act", "feed_forward.activation", "gelu", fields.ACTIVATIONS
        ),
        Field("hidden_dropout_prob", "dropout", 0.1),
        Field("layer_norm_eps", "norm.epsilon", 1e-12),
        Field("type_vocab_size", "num_segments", 2),
        Field("pad_token_id", "padding_id", 0),
    )
) + (
    Constant("position_embedding_type", "absolute"),
    Constant("is_decoder", False),
    Constant("add_cross_attention", False),
    Constant("attention_probs_dropout_prob", 0.0, checked=False),
    *fields.fixed(
        {
            "position": "learned",
            "embedding_norm": True,
            "norm.type": "layer",
            "norm.placement": "post",
            **fields.PLAIN_BLOCKS,
        },
        prefix="encoder.",
    ),
    *fields.fixed(PLAIN_ENCODER),
)


def _classifier_dropout(config):
    dropout = config.get("classifier_dropout")
    return (
        config.get("hidden_dropout_prob", 0.1) if dropout is None else dropout
    )


CLASSIFIER_FIELDS = (
    *ENCODER_FIELDS,
    Field("num_labels", "num_classes", load=fields.num_labels),
    Field("classifier_dropout", "dropout", load=_classifier_dropout),
    Fixed("pooling", "cls"),
    Fixed("pooler", True),
)


def token_classifier_fields(encoder_fields, dropout=None):
    """A `TokenClassifier`'s fields on an encoder's; `dropout` is the field
    of its dropout, BERT's `classifier_dropout` (else
    `hidden_dropout_prob`) by default."""
    if dropout is None:
        dropout = Field(
            "classifier_dropout", "dropout", load=_classifier_dropout
        )
    return (
        *encoder_fields,
        Field("num_labels", "num_classes", load=fields.num_labels),
        dropout,
        Fixed("transform", None),
    )


MASKED_LM_FIELDS = (
    *ENCODER_FIELDS,
    Field("hidden_act", "activation", "gelu", fields.ACTIVATIONS),
    Field("layer_norm_eps", "layer_norm_epsilon", 1e-12),
    *fields.fixed(PLAIN_MASKED_LM),
    Constant("tie_word_embeddings", False, checked=False),
)

BLOCK = (
    *core.attention_rows(
        "attention.{}", "self.query self.key self.value output.dense"
    ),
    ("attention.output.LayerNorm", "self_attention_norm", core.NORM),
    *core.feed_forward_rows("{}.dense", "intermediate output"),
    ("output.LayerNorm", "feed_forward_norm", core.NORM),
)


def _encoder_layout(path):
    """The encoder's rows, for an encoder at `path` of the model."""
    embeddings = "bert.embeddings"
    return (
        (f"{embeddings}.word_embeddings.weight",
         f"{path}embedding.token_embedding", core.variable("embeddings")),
        (f"{embeddings}.position_embeddings.weight", f"{path}embedding",
         core.variable("position_embeddings")),
        (f"{embeddings}.token_type_embeddings.weight", f"{path}embedding",
         core.variable("segment_embeddings")),
        (f"{embeddings}.LayerNorm", f"{path}embedding_norm", core.NORM),
        core.Stack("bert.encoder.layer.{}", f"{path}blocks", BLOCK),
    )  # fmt: skip


def _tied_decoder(name, layer):
    """The masked-LM projection; a tied checkpoint holds its matrix as the
    token embedding and its bias as `cls.predictions.bias`."""
    weight, bias = core.LINEAR(name, layer)
    return [
        dataclasses.replace(
            weight, alias="bert.embeddings.word_embeddings.weight"
        ),
        dataclasses.replace(bias, alias="cls.predictions.bias"),
    ]


CLASSIFIER_LAYOUT = (
    *_encoder_layout("encoder."),
    ("bert.pooler.dense", "pooler_dense", core.LINEAR),
    ("classifier", "head", core.LINEAR),
)
TOKEN_CLASSIFIER_LAYOUT = (
    *_encoder_layout("encoder."),
    ("classifier", "head", core.LINEAR),
)
MASKED_LM_LAYOUT = (
    *_encoder_layout("encoder."),
    ("cls.predictions.transform.dense", "head_dense", core.LINEAR),
    ("cls.predictions.transform.LayerNorm", "head_norm", core.NORM),
    ("cls.predictions.decoder", "output_projection", _tied_decoder),
)


def head_options(model):
    """A task model's options, with its encoder's under `"encoder"`."""
    return {**model.get_config(), "encoder": model.encoder.get_config()}


def encoder_family(model_type, architecture, encoder_fields, layout, prefix,
                   encoder_options=None):  # fmt: skip
    """The family of a bare encoder (`BertModel`): a `TextEncoder`, whose
    options are `encoder_options(model)` (its config by default)."""
    encoder_options = encoder_options or (lambda model: model.get_config())
    return core.Family(
        model_type, architecture, models.TextEncoder, encoder_fields, layout,
        prefix=prefix,
        options=lambda model: {"encoder": encoder_options(model)},
        build=lambda options, **records: models.TextEncoder(
            **options["encoder"], **records
        ),
    )  # fmt: skip


def head_family(model_type, architecture, model_class, fields, layout,
                prefix, options=head_options):  # fmt: skip
    """The family of a task model on a `TextEncoder` (`TextClassifier`,
    `TokenClassifier`, `MaskedLM`), whose options are `options(model)`."""

    def build(model_options, **records):
        encoder = models.TextEncoder(**model_options.pop("encoder"))
        return model_class(encoder, **model_options, **records)

    return core.Family(
        model_type, architecture, model_class, fields, layout, prefix=prefix,
        options=options, build=build,
    )  # fmt: skip


FAMILIES = (
    encoder_family(
        "bert", "BertModel", ENCODER_FIELDS, _encoder_layout(""), "bert."
    ),
    head_family(
        "bert", "BertForSequenceClassification", models.TextClassifier,
        CLASSIFIER_FIELDS, CLASSIFIER_LAYOUT, "bert.",
    ),
    head_family(
        "bert", "BertForTokenClassification", models.TokenClassifier,
        token_classifier_fields(ENCODER_FIELDS), TOKEN_CLASSIFIER_LAYOUT,
        "bert.",
    ),
    head_family(
        "bert", "BertForMaskedLM", models.MaskedLM, MASKED_LM_FIELDS,
        MASKED_LM_LAYOUT, "bert.",
    ),
)  # fmt: skip

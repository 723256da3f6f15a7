"""DistilBERT (`distilbert`): a `TextEncoder` (`DistilBertModel`), and the
`TextClassifier` (`DistilBertForSequenceClassification`),
`TokenClassifier` (`DistilBertForTokenClassification`) and `MaskedLM`
(`DistilBertForMaskedLM`) on it.

BERT's post-norm encoder under other config and tensor names, without
token types, with every norm's epsilon fixed at 1e-12. Its classifier's
`pre_classifier` is a dense ReLU layer on the first token (`pooler`); its
token classifier's dropout is the encoder's (`dropout`). The masked-LM
head uses `activation`, and its tied projection has a bias
(`vocab_projector.bias`): it loads untied, as BERT's does.

`sinusoidal_pos_embds` only chooses how transformers initialises the
position table, which the checkpoint holds either way: it is read as
any value and written false.
"""

import dataclasses

from keras_tfm import models
from keras_tfm.interop.huggingface import bert, core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed
from keras_tfm.models.text import DENSE_TRANSFORM
from keras_tfm.models.token_classifier import TokenClassifier

EPSILON = 1e-12
ENCODER_FIELDS = tuple(
    dataclasses.replace(field, path=f"encoder.{field.path}")
    for field in (
        Field("vocab_size", "vocab_size"),
        Field("max_position_embeddings", "sequence_length"),
        Field("dim", "embed_dim"),
        Field("n_layers", "num_layers"),
        Field("n_heads", "attention.num_heads"),
        Field("hidden_dim", "feed_forward.hidden_dim"),
        Field(
            "activation", "feed_forward.activation", "gelu", fields.ACTIVATIONS
        ),
        Field("dropout", "dropout", 0.1),
        Field("pad_token_id", "padding_id", 0),
    )
) + (
    Constant("attention_dropout", 0.0, checked=False),
    Constant("sinusoidal_pos_embds", False, checked=False),
    *fields.fixed(
        {
            "position": "learned",
            "num_segments": None,
            "embedding_norm": True,
            "norm.type": "layer",
            "norm.epsilon": EPSILON,
            "norm.placement": "post",
            **fields.PLAIN_BLOCKS,
        },
        prefix="encoder.",
    ),
    *fields.fixed(bert.PLAIN_ENCODER),
)

CLASSIFIER_FIELDS = (
    *ENCODER_FIELDS,
    Field("num_labels", "num_classes", load=fields.num_labels),
    Field("seq_classif_dropout", "dropout", 0.2),
    Fixed("pooling", "cls"),
    Fixed("pooler", {**DENSE_TRANSFORM, "activation": "relu"}),
)
TOKEN_CLASSIFIER_FIELDS = bert.token_classifier_fields(
    ENCODER_FIELDS, Field("dropout", "dropout", 0.1)
)
MASKED_LM_FIELDS = (
    *ENCODER_FIELDS,
    Field("activation", "activation", "gelu", fields.ACTIVATIONS),
    Fixed("layer_norm_epsilon", EPSILON),
    *fields.fixed(bert.PLAIN_MASKED_LM),
    Constant("tie_word_embeddings", False, checked=False),
)

BLOCK = (
    *core.attention_rows("attention.{}", "q_lin k_lin v_lin out_lin"),
    ("sa_layer_norm", "self_attention_norm", core.NORM),
    *core.feed_forward_rows("ffn.{}", "lin1 lin2"),
    ("output_layer_norm", "feed_forward_norm", core.NORM),
)


def _encoder_layout(path):
    """The encoder's rows, for an encoder at `path` of the model."""
    embeddings = "distilbert.embeddings"
    return (
        (f"{embeddings}.word_embeddings.weight",
         f"{path}embedding.token_embedding", core.variable("embeddings")),
        (f"{embeddings}.position_embeddings.weight", f"{path}embedding",
         core.variable("position_embeddings")),
        (f"{embeddings}.LayerNorm", f"{path}embedding_norm", core.NORM),
        core.Stack(
            "distilbert.transformer.layer.{}", f"{path}blocks", BLOCK
        ),
    )  # fmt: skip


def _tied_decoder(name, layer):
    """The masked-LM projection; a tied checkpoint holds its matrix as the
    token embedding."""
    weight, bias = core.LINEAR(name, layer)
    alias = "distilbert.embeddings.word_embeddings.weight"
    return [dataclasses.replace(weight, alias=alias), bias]


ENCODER_LAYOUT = _encoder_layout("encoder.")
CLASSIFIER_LAYOUT = (
    *ENCODER_LAYOUT,
    ("pre_classifier", "pooler_dense", core.LINEAR),
    ("classifier", "head", core.LINEAR),
)
TOKEN_CLASSIFIER_LAYOUT = (
    *ENCODER_LAYOUT,
    ("classifier", "head", core.LINEAR),
)
MASKED_LM_LAYOUT = (
    *ENCODER_LAYOUT,
    ("vocab_transform", "head_dense", core.LINEAR),
    ("vocab_layer_norm", "head_norm", core.NORM),
    ("vocab_projector", "output_projection", _tied_decoder),
)

FAMILIES = (
    bert.encoder_family(
        "distilbert", "DistilBertModel", ENCODER_FIELDS,
        _encoder_layout(""), "distilbert.",
    ),
    bert.head_family(
        "distilbert", "DistilBertForSequenceClassification",
        models.TextClassifier, CLASSIFIER_FIELDS, CLASSIFIER_LAYOUT,
        "distilbert.",
    ),
    bert.head_family(
        "distilbert", "DistilBertForTokenClassification", TokenClassifier,
        TOKEN_CLASSIFIER_FIELDS, TOKEN_CLASSIFIER_LAYOUT, "distilbert.",
    ),
    bert.head_family(
        "distilbert", "DistilBertForMaskedLM", models.MaskedLM,
        MASKED_LM_FIELDS, MASKED_LM_LAYOUT, "distilbert.",
    ),
)  # fmt: skip

"""ELECTRA's discriminator (`electra`): a `TextEncoder` (`ElectraModel`),
and the `TextClassifier` (`ElectraForSequenceClassification`) and
`TokenClassifier` (`ElectraForTokenClassification`) on it.

BERT's encoder under the prefix `electra.`, whose embeddings (and their
norm) may be narrower than the blocks: `embedding_size` is the
`TextEncoder`'s `embedding_dim`, and the `embeddings_project` Dense layer
its `embedding_projection` (absent when `embedding_size` equals
`hidden_size`). The classification head is a dense GELU layer on the
first token (`pooler`, tensors `classifier.dense` and
`classifier.out_proj`); transformers also applies dropout before it, in
training only. The generator's masked LM (`ElectraForMaskedLM`) and the
discriminator's replaced-token head (`ElectraForPreTraining`) are not
loaded.
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import bert, core, roberta
from keras_tfm.interop.huggingface.fields import Field, Fixed
from keras_tfm.models.text import DENSE_TRANSFORM
from keras_tfm.models.token_classifier import TokenClassifier


def _embedding_dim(config):
    """None (no projection) when `embedding_size` is the blocks' width."""
    size = config.get("embedding_size", 128)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"embedding_size={size!r} is not a positive integer")
    return None if size == config["hidden_size"] else size


def _embedding_size(options):
    encoder = options["encoder"]
    return encoder["embedding_dim"] or encoder["embed_dim"]


ENCODER_FIELDS = roberta.without(
    bert.ENCODER_FIELDS, "encoder.embedding_dim"
) + (
    Field(
        "embedding_size", "encoder.embedding_dim", load=_embedding_dim,
        save=_embedding_size,
    ),
)  # fmt: skip
CLASSIFIER_FIELDS = (
    *roberta.without(
        roberta.head_fields(bert.CLASSIFIER_FIELDS, ENCODER_FIELDS), "pooler"
    ),
    Fixed("pooler", {**DENSE_TRANSFORM, "activation": "gelu"}),
)


def _encoder_layout(path):
    return (
        *roberta.encoder_layout("electra", path),
        ("electra.embeddings_project", f"{path}embedding_projection",
         core.LINEAR),
    )  # fmt: skip


ENCODER_LAYOUT = _encoder_layout("encoder.")
CLASSIFIER_LAYOUT = (
    *ENCODER_LAYOUT,
    ("classifier.dense", "pooler_dense", core.LINEAR),
    ("classifier.out_proj", "head", core.LINEAR),
)
TOKEN_CLASSIFIER_LAYOUT = (
    *ENCODER_LAYOUT,
    ("classifier", "head", core.LINEAR),
)

FAMILIES = (
    bert.encoder_family(
        "electra", "ElectraModel", ENCODER_FIELDS, _encoder_layout(""),
        "electra.",
    ),
    bert.head_family(
        "electra", "ElectraForSequenceClassification", models.TextClassifier,
        CLASSIFIER_FIELDS, CLASSIFIER_LAYOUT, "electra.",
    ),
    bert.head_family(
        "electra", "ElectraForTokenClassification", TokenClassifier,
        bert.token_classifier_fields(ENCODER_FIELDS),
        TOKEN_CLASSIFIER_LAYOUT, "electra.",
    ),
)  # fmt: skip

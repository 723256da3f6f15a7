"""DeiT (`deit`): `DeiTForImageClassification` and
`DeiTForImageClassificationWithTeacher` as a `ViTClassifier`, `DeiTModel`
as a `ViTEncoder`.

DeiT is ViT with a learned distillation token after the class token
(`distillation_token`), which has a position embedding of its own. The
classifier classifies the class token's state; the one "with teacher"
also classifies the distillation token's state with a second head
(`distillation_head`) and returns the mean of both heads' logits. Both
architectures are one family: config.json's `architectures` holds the
`distillation_head` option.

`DeiTModel`'s pooler (`pooler.dense`, which its last hidden state does
not use) is not loaded: written back, `transformers` initialises it.
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields, vit
from keras_tfm.interop.huggingface.fields import Field
from keras_tfm.models.vision import ViTEncoder

CLASSIFIER = "DeiTForImageClassification"
WITH_TEACHER = "DeiTForImageClassificationWithTeacher"

PATCHES = fields.fixed({**vit.PLAIN_PATCHES, "distillation_token": True})


def _with_teacher(config):
    return (config.get("architectures") or [CLASSIFIER])[0] == WITH_TEACHER


def _architectures(options):
    return [WITH_TEACHER if options["distillation_head"] else CLASSIFIER]


CLASSIFIER_FIELDS = (
    *vit.classifier_fields(),
    *PATCHES,
    *fields.fixed({"pooling": "cls"}),
    Field(
        "architectures", "distillation_head",
        load=_with_teacher, save=_architectures,
    ),
)  # fmt: skip
ENCODER_FIELDS = vit.encoder_fields() + PATCHES


def _layout(head):
    """DeiT's rows, then those of `head`, a function of the model."""

    def layout(model):
        return (
            *vit.encoder_rows("deit"),
            *head(model),
        )

    return layout


def _heads(model):
    if model.distillation_head is None:
        return [("classifier", "head", core.LINEAR)]
    return [
        ("cls_classifier", "head", core.LINEAR),
        ("distillation_classifier", "distillation_head", core.LINEAR),
    ]


FAMILIES = (
    core.Family(
        "deit", CLASSIFIER, models.ViTClassifier, CLASSIFIER_FIELDS,
        _layout(_heads), prefix="deit.", aliases=(WITH_TEACHER,),
    ),
    core.Family(
        "deit", "DeiTModel", ViTEncoder, ENCODER_FIELDS,
        _layout(lambda model: ()), prefix="deit.",
    ),
)  # fmt: skip

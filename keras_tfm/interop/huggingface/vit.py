"""ViT (`vit`): `ViTForImageClassification` as a `ViTClassifier`,
`ViTModel` as a `ViTEncoder` (without its pooler, which its last hidden
state does not use: written back, `transformers` initialises it).

Its layout differs in the patch embedding: PyTorch keeps convolution
kernels `(out, in, height, width)` and a leading batch axis on the class
token and position embeddings. Images are channels-last here, where
`transformers` takes channels-first.

The fields and rows the image families share (ViT, DeiT, DINOv2) are
declared here: `classifier_fields` and `encoder_fields` (for a
`ViTClassifier` or a `ViTEncoder`), `embedding_rows`.
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed
from keras_tfm.models.vision import ViTEncoder

# The options a plain ViT leaves at their defaults, at a `ViTClassifier`'s
# paths.
PLAIN_PATCHES = {
    "distillation_token": False,
    "num_registers": 0,
    "position_grid": None,
    "position_antialias": False,
}
PLAIN_CLASSIFIER = {
    **PLAIN_PATCHES,
    "pooling": "cls",
    "distillation_head": False,
}


def _fields(heads, epsilon, ff_dims, epsilon_default):
    """What ViT's descendants share; the paths of the heads, of the norm
    epsilon and of the feed-forward width (a list) differ by model."""
    return (
        Field("image_size", "image_size"),
        Field("patch_size", "patch_size"),
        Field("num_channels", "channels", 3),
        Field("hidden_size", "embed_dim"),
        Field("num_hidden_layers", "num_layers"),
        *(Field("num_attention_heads", path) for path in heads),
        *(Field("intermediate_size", path) for path in ff_dims),
        Field("hidden_dropout_prob", "dropout", 0.0),
        Field("layer_norm_eps", epsilon, epsilon_default),
        Field(
            "hidden_act", "feed_forward.activation", "gelu", fields.ACTIVATIONS
        ),
        Fixed("feed_forward.use_bias", True),
        Constant("qkv_bias", True),
        Constant("attention_probs_dropout_prob", 0.0, checked=False),
    )


def classifier_fields(epsilon_default=1e-12, without=()):
    """A `ViTClassifier`'s fields, but those named in `without` (which a
    family declares otherwise)."""
    found = _fields(
        ["num_heads"], "layer_norm_epsilon",
        ["ff_dim", "feed_forward.hidden_dim"], epsilon_default,
    )  # fmt: skip
    labels = Field("num_labels", "num_classes", load=fields.num_labels)
    return _without((*found, labels), without)


def encoder_fields(epsilon_default=1e-12, without=()):
    """A `ViTEncoder`'s fields (ViT's tower: pre-norm, plain blocks, a
    class token and a final norm), but those named in `without`."""
    found = _fields(
        ["num_heads", "attention.num_heads"], "norm.epsilon",
        ["ff_dim", "feed_forward.hidden_dim"], epsilon_default,
    ) + fields.fixed(
        {
            **fields.PLAIN_BLOCKS,
            "norm.type": "layer",
            "norm.placement": "pre",
            "class_token": True,
            "patch_bias": True,
            "embedding_norm": False,
            "final_norm": True,
        }
    )  # fmt: skip
    return _without(found, without)


def _without(found, names):
    """`found` but the fields whose config.json name or option path is in
    `names`."""
    return tuple(
        field
        for field in found
        if getattr(field, "name", None) not in names
        and getattr(field, "path", None) not in names
    )


FIELDS = classifier_fields() + fields.fixed(PLAIN_CLASSIFIER)


def _convolution(name, layer):
    """A `Conv2D` kernel `(height, width, in, out)` and bias."""
    found = [
        core.Tensor(
            f"{name}.weight",
            [(layer, "kernel")],
            lambda kernel: [kernel.transpose(2, 3, 1, 0)],
            lambda kernels: kernels[0].transpose(3, 2, 0, 1),
        )
    ]
    if layer.bias is not None:
        found.append(core.Tensor(f"{name}.bias", [(layer, "bias")]))
    return found


def _batched(array):
    """A `(1, n, width)` checkpoint tensor as the `(n, width)` weight."""
    return [array[0]]


def _unbatched(arrays):
    return arrays[0][None]


def _present(attribute, *conversions):
    """`core.variable`, for a weight that is None where the model lacks
    it (a class token, a distillation token, registers)."""
    kind = core.variable(attribute, *conversions)

    def tensors(name, layer):
        if getattr(layer, attribute) is None:
            return []
        return kind(name, layer)

    return tensors


def embedding_rows(prefix):
    """The rows of a `PatchEmbedding` whose checkpoint names start with
    `prefix` (`"vit.embeddings"`): class, distillation and register tokens
    where the model has them."""
    return (
        (f"{prefix}.cls_token", "patch_embedding", _present("class_token")),
        (f"{prefix}.distillation_token", "patch_embedding",
         _present("distillation_token")),
        (f"{prefix}.register_tokens", "patch_embedding",
         _present("register_tokens", _batched, _unbatched)),
        (f"{prefix}.position_embeddings", "patch_embedding",
         core.variable("position_embeddings", _batched, _unbatched)),
        (f"{prefix}.patch_embeddings.projection",
         "patch_embedding.projection", _convolution),
    )  # fmt: skip


BLOCK = (
    ("layernorm_before", "self_attention_norm", core.NORM),
    *core.attention_rows(
        "attention.{}",
        "attention.query attention.key attention.value output.dense",
    ),
    ("layernorm_after", "feed_forward_norm", core.NORM),
    *core.feed_forward_rows("{}.dense", "intermediate output"),
)


def encoder_rows(prefix):
    """The rows of ViT's encoder, whose names start with `prefix`
    (`"vit"`, `"deit"`)."""
    return (
        *embedding_rows(f"{prefix}.embeddings"),
        core.Stack(f"{prefix}.encoder.layer.{{}}", "blocks", BLOCK),
        (f"{prefix}.layernorm", "final_norm", core.NORM),
    )


LAYOUT = (*encoder_rows("vit"), ("classifier", "head", core.LINEAR))

FAMILIES = (
    core.Family(
        "vit", "ViTForImageClassification", models.ViTClassifier, FIELDS,
        LAYOUT, prefix="vit.",
    ),
    core.Family(
        "vit", "ViTModel", ViTEncoder,
        encoder_fields() + fields.fixed(PLAIN_PATCHES), encoder_rows("vit"),
        prefix="vit.",
    ),
)  # fmt: skip

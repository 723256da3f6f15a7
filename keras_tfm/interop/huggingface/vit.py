"""ViT (`vit`): `ViTForImageClassification` as a `ViTClassifier`.

Its layout differs in the patch embedding: PyTorch keeps convolution
kernels `(out, in, height, width)` and a leading batch axis on the class
token and position embeddings. Images are channels-last here, where
`transformers` takes channels-first.
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field

FIELDS = (
    Field("image_size", "image_size"),
    Field("patch_size", "patch_size"),
    Field("num_channels", "channels", 3),
    Field("hidden_size", "embed_dim"),
    Field("num_hidden_layers", "num_layers"),
    Field("num_attention_heads", "num_heads"),
    Field("intermediate_size", "ff_dim"),
    Field("hidden_dropout_prob", "dropout", 0.0),
    Field("layer_norm_eps", "layer_norm_epsilon", 1e-12),
    Field("num_labels", "num_classes", load=fields.num_labels),
    Constant("hidden_act", "gelu"),
    Constant("qkv_bias", True),
    Constant("attention_probs_dropout_prob", 0.0, checked=False),
)


def _convolution(name, layer):
    """A `Conv2D` kernel `(height, width, in, out)` and bias."""
    return [
        core.Tensor(
            f"{name}.weight",
            [(layer, "kernel")],
            lambda kernel: [kernel.transpose(2, 3, 1, 0)],
            lambda kernels: kernels[0].transpose(3, 2, 0, 1),
        ),
        core.Tensor(f"{name}.bias", [(layer, "bias")]),
    ]


def _batched(array):
    """A `(1, n, width)` checkpoint tensor as the `(n, width)` weight."""
    return [array[0]]


def _unbatched(arrays):
    return arrays[0][None]


BLOCK = (
    ("layernorm_before", "self_attention_norm", core.NORM),
    *core.attention_rows(
        "attention.{}",
        "attention.query attention.key attention.value output.dense",
    ),
    ("layernorm_after", "feed_forward_norm", core.NORM),
    *core.feed_forward_rows("{}.dense", "intermediate output"),
)
LAYOUT = (
    ("vit.embeddings.cls_token", "patch_embedding",
     core.variable("class_token")),
    ("vit.embeddings.position_embeddings", "patch_embedding",
     core.variable("position_embeddings", _batched, _unbatched)),
    ("vit.embeddings.patch_embeddings.projection", "patch_embedding.projection",
     _convolution),
    core.Stack("vit.encoder.layer.{}", "blocks", BLOCK),
    ("vit.layernorm", "final_norm", core.NORM),
    ("classifier", "head", core.LINEAR),
)  # fmt: skip

FAMILIES = (
    core.Family(
        "vit", "ViTForImageClassification", models.ViTClassifier, FIELDS,
        LAYOUT, prefix="vit.",
    ),
)  # fmt: skip

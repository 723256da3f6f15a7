"""DINOv2 (`dinov2`, `dinov2_with_registers`): `Dinov2Model` as a
`ViTEncoder`, `Dinov2ForImageClassification` as a `ViTClassifier`.

DINOv2 is ViT with four differences:

- Layer scale: each block multiplies its attention's and its
  feed-forward's output by a learned vector (`layer_scale1.lambda1`,
  `layer_scale2.lambda1`). The projection before it is linear, so the
  vector is folded into it when loading: the attention's output kernel and
  bias, and the feed-forward's second kernel and bias, are multiplied by
  it, and the model computes exactly the same. Written back, the vectors
  are ones and the projections hold the folded weights, which
  `transformers` reloads to the same outputs.
- The position table covers the grid of config.json's `image_size`
  (`position_grid`); a model built at another `image_size` (from the
  loaded model's config, with its weights) resizes it bicubically to its
  own grid as `transformers` does (PyTorch's kernel, `a = -0.75`).
  Written back, `image_size` is the table's.
- The feed-forward width is `mlp_ratio` times the width, or, with
  `use_swiglu_ffn`, two thirds of that rounded up to a multiple of 8, with
  SwiGLU (`mlp.weights_in` holds the gate's rows, then the hidden's).
- The classifier classifies the class token's state concatenated with
  the mean of the patches' (`pooling="cls_and_mean"`).

DINOv2 with registers adds `num_register_tokens` tokens after the class
token (`num_registers`), and resizes the position table with PyTorch's
antialiasing (`position_antialias`).

The mask token (`embeddings.mask_token`), used only by masked-image
pretraining, is not loaded: written back, `transformers` initialises it
(to zeros). `drop_path_rate` (stochastic depth, a training regulariser)
is ignored.
"""

import numpy as np
from keras import ops

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields, vit
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed
from keras_tfm.interop.huggingface.fused import fused
from keras_tfm.models.vision import ViTEncoder

# Written as DINOv2's own configs have them: ignored by the forward pass.
_UNCHECKED = (
    Constant("layerscale_value", 1.0, checked=False),
    Constant("drop_path_rate", 0.0, checked=False),
)


def _layer_scale(name, layer):
    """A layer-scale vector, folded into the kernel and bias of `layer`,
    the Dense or EinsumDense before it (whose rows load first)."""

    def fold(scale):
        return [
            ops.convert_to_numpy(layer.kernel) * scale,
            ops.convert_to_numpy(layer.bias) * scale,
        ]

    def ones(arrays):
        return np.ones_like(arrays[1])

    return [core.Tensor(name, [(layer, "kernel"), (layer, "bias")], fold, ones)]


def _feed_forward_width(width, ratio, swiglu):
    hidden = int(width * ratio)
    return (int(hidden * 2 / 3) + 7) // 8 * 8 if swiglu else hidden


def _hidden_dim(config):
    return _feed_forward_width(
        config["hidden_size"],
        config.get("mlp_ratio", 4),
        config.get("use_swiglu_ffn", False),
    )


def _mlp_ratio(options):
    """The integer `mlp_ratio` (transformers' type) of the width."""
    width = options["embed_dim"]
    hidden = options["feed_forward"]["hidden_dim"]
    swiglu = options["feed_forward"]["activation"] == "swiglu"
    for ratio in range(1, hidden + 1):
        if _feed_forward_width(width, ratio, swiglu) == hidden:
            return ratio
    raise ValueError(
        f"`model` has feed_forward['hidden_dim']={hidden}, which no integer "
        f"mlp_ratio of DINOv2 gives for embed_dim={width}."
    )


def _activation(model_type):
    def load(config):
        if config.get("use_swiglu_ffn", False):
            return "swiglu"
        name = config.get("hidden_act", "gelu")
        if name not in fields.ACTIVATIONS:
            raise fields.unsupported(
                "hidden_act", name, fields.ACTIVATIONS, model_type
            )
        return fields.ACTIVATIONS[name]

    return load


def _hidden_act(options):
    activation = options["feed_forward"]["activation"]
    if activation == "swiglu":  # SwiGLU's activation is SiLU, whatever this
        return "gelu"
    for name, option in fields.ACTIVATIONS.items():
        if option == activation:
            return name
    raise ValueError(
        f"`model` has feed_forward['activation']={activation!r}, which "
        "DINOv2 cannot express: expected one of "
        f"{[*dict.fromkeys(fields.ACTIVATIONS.values()), 'swiglu']}."
    )


def _table_size(options):
    """The image size of the position table's grid."""
    grid = (
        options["position_grid"]
        or options["image_size"] // options["patch_size"]
    )
    return grid * options["patch_size"]


def _fields(model_type, base, registers):
    """A family's fields, on `base` (`vit.classifier_fields` or
    `vit.encoder_fields`); `registers`, those of its register tokens and
    resizing."""
    return (
        *base(1e-6, without=("image_size", "intermediate_size", "hidden_act")),
        Field("image_size", "image_size", save=_table_size),
        Field(
            "image_size", "position_grid", save=_table_size,
            load=lambda config: config["image_size"] // config["patch_size"],
        ),
        Field("mlp_ratio", "ff_dim", load=_hidden_dim, save=_mlp_ratio),
        Field(
            "mlp_ratio", "feed_forward.hidden_dim",
            load=_hidden_dim, save=_mlp_ratio,
        ),
        Field(
            "hidden_act", "feed_forward.activation",
            load=_activation(model_type), save=_hidden_act,
        ),
        Field(
            "use_swiglu_ffn", None,
            save=lambda options: (
                options["feed_forward"]["activation"] == "swiglu"
            ),
        ),
        *registers,
        Fixed("distillation_token", False),
        *_UNCHECKED,
    )  # fmt: skip


def _block(swiglu):
    feed_forward = (
        ("mlp.weights_in", "feed_forward", fused("gate_dense hidden_dense")),
        ("mlp.weights_out", "feed_forward.output_dense", core.LINEAR),
    )
    if not swiglu:
        feed_forward = core.feed_forward_rows("mlp.{}", "fc1 fc2")
    return (
        ("norm1", "self_attention_norm", core.NORM),
        *core.attention_rows(
            "attention.{}",
            "attention.query attention.key attention.value output.dense",
        ),
        ("layer_scale1.lambda1", "self_attention.output_dense", _layer_scale),
        ("norm2", "feed_forward_norm", core.NORM),
        *feed_forward,
        ("layer_scale2.lambda1", "feed_forward.output_dense", _layer_scale),
    )


def _layout(prefix, head=()):
    """The layout of a model whose tensors start with `prefix`."""

    def layout(model):
        swiglu = model.feed_forward_options["activation"] == "swiglu"
        return (
            *vit.embedding_rows(f"{prefix}embeddings"),
            core.Stack(f"{prefix}encoder.layer.{{}}", "blocks", _block(swiglu)),
            (f"{prefix}layernorm", "final_norm", core.NORM),
            *head,
        )

    return layout


def _families(model_type, name, registers):
    """The base and classifier families of `model_type`, whose
    architectures start with `name`."""
    prefix = f"{model_type}."
    return (
        core.Family(
            model_type, f"{name}Model", ViTEncoder,
            _fields(model_type, vit.encoder_fields, registers),
            _layout(prefix), prefix=prefix,
        ),
        core.Family(
            model_type, f"{name}ForImageClassification", models.ViTClassifier,
            _fields(model_type, vit.classifier_fields, registers)
            + (Fixed("pooling", "cls_and_mean"),
               Fixed("distillation_head", False)),
            _layout(prefix, [("classifier", "head", core.LINEAR)]),
            prefix=prefix,
        ),
    )  # fmt: skip


FAMILIES = (
    *_families(
        "dinov2",
        "Dinov2",
        fields.fixed({"num_registers": 0, "position_antialias": False}),
    ),
    *_families(
        "dinov2_with_registers",
        "Dinov2WithRegisters",
        (
            Field("num_register_tokens", "num_registers", 4),
            Fixed("position_antialias", True),
        ),
    ),
)

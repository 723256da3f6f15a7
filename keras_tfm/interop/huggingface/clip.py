"""CLIP (`clip`, `CLIPModel`) and SigLIP (`siglip`, `SiglipModel`) as a
`DualEncoder` of a `TextEncoder` and a `ViTEncoder`.

Their config.json nests each tower's fields in `text_config` and
`vision_config`; a field of those is declared by its dotted name
(`text_config.hidden_act`), which is how errors name it too. Both towers
are pre-norm with a final norm, and their blocks share one layout.

CLIP's text tower is causal and read at its end-of-text token: the first
`eos_token_id` of each sequence, or (configs from before transformers
4.31, whose `eos_token_id` is 2) the highest id. Its image tower has a
class token, a patch projection without bias and a norm before its
blocks; `post_layernorm`, which CLIP applies to the class token only, is
the tower's final norm (a norm of each token alone). SigLIP's text tower
is bidirectional, read at its last position and followed by a `head`
projection with a bias; its image tower has no class token and pools
with a MAP head (`AttentionPooling`), whose PyTorch `MultiheadAttention`
keeps its query, key and value projections in one tensor.

Neither text tower masks padding: CLIP's causal attention keeps padding
after the end-of-text token from reaching it, and SigLIP was trained on
sequences padded to full length, read at the last position, with no
attention mask (its pad id is also its end-of-text id). The text tower's
`padding_id` is -1, an id no token has.
"""

import dataclasses
import math

from keras_tfm.interop.huggingface import core, fields, fused, vit
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed
from keras_tfm.models import TextEncoder
from keras_tfm.models.dual_encoder import DualEncoder
from keras_tfm.models.vision import ViTEncoder

SECTIONS = ("text_config", "vision_config")
ACTIVATIONS = {**fields.ACTIVATIONS, "quick_gelu": "quick_gelu"}
# No padding mask: see the module's docstring.
NO_PADDING_ID = -1
# SigLIP's transformers starts `logit_scale` and `logit_bias` at random;
# its paper at log(10) and -10.
SIGLIP_LOGIT_SCALE = math.log(10)
SIGLIP_LOGIT_BIAS = -10.0
# transformers' defaults of `hidden_act` and `layer_norm_eps`.
CLIP_DEFAULTS = ("quick_gelu", 1e-5)
SIGLIP_DEFAULTS = ("gelu_pytorch_tanh", 1e-6)
# CLIP configs whose end-of-text token is the highest id.
LEGACY_EOS_TOKEN_ID = 2


def _flattened(config):
    """config.json with its sections' fields as `section.name` keys; a
    `text_config_dict` (older configs) overrides `text_config`, as in
    transformers."""
    flat = {key: value for key, value in config.items() if key not in SECTIONS}
    for section in SECTIONS:
        merged = {
            **(config.get(section) or {}),
            **(config.get(f"{section}_dict") or {}),
        }
        for key, value in merged.items():
            flat[f"{section}.{key}"] = value
    return flat


class _Nested:
    """Reads and writes a field whose dotted name is `section.name`."""

    def read(self, config, options, model_type):
        super().read(_flattened(config), options, model_type)

    def write(self, options, config, model_type):
        flat = {}
        super().write(options, flat, model_type)
        for key, value in flat.items():
            section, name = key.split(".", 1)
            fields._put(config.setdefault(section, {}), name, value)


@dataclasses.dataclass(frozen=True)
class NestedField(_Nested, Field):
    """A `Field` of a section of config.json."""


@dataclasses.dataclass(frozen=True)
class NestedConstant(_Nested, Constant):
    """A `Constant` of a section of config.json."""


def _tower_fields(section, prefix, defaults):
    """The fields that both families' towers share; `defaults` holds the
    transformers defaults of `hidden_act` and `layer_norm_eps`."""

    def field(name, path, *args, **kwargs):
        return NestedField(f"{section}.{name}", prefix + path, *args, **kwargs)

    activation, epsilon = defaults
    return (
        field("hidden_size", "embed_dim", 768),
        field("num_hidden_layers", "num_layers", 12),
        field("num_attention_heads", "attention.num_heads", 12),
        field("intermediate_size", "feed_forward.hidden_dim", 3072),
        field("hidden_act", "feed_forward.activation", activation, ACTIVATIONS),
        field("layer_norm_eps", "norm.epsilon", epsilon),
        NestedConstant(f"{section}.attention_dropout", 0.0, checked=False),
        *fields.fixed(
            {
                "dropout": 0.0,
                "norm.type": "layer",
                "norm.placement": "pre",
                **fields.PLAIN_BLOCKS,
            },
            prefix=prefix,
        ),
    )


def _text_fields(defaults, vocab_size, sequence_length, causal):
    def field(name, path, default):
        return NestedField(
            f"text_config.{name}", f"text_encoder.{path}", default
        )

    return (
        field("vocab_size", "vocab_size", vocab_size),
        field("max_position_embeddings", "sequence_length", sequence_length),
        *_tower_fields("text_config", "text_encoder.", defaults),
        *fields.fixed(
            {
                "position": "learned",
                "position_offset": 0,
                "embedding_dim": None,
                "embedding_norm": False,
                "relative_embedding_norm": False,
                "num_segments": None,
                "padding_id": NO_PADDING_ID,
                "causal": causal,
                "layer_overrides": None,
            },
            prefix="text_encoder.",
        ),
    )


def _vision_fields(defaults, patch_size, variants):
    def field(name, path, default):
        return NestedField(
            f"vision_config.{name}", f"image_encoder.{path}", default
        )

    return (
        field("image_size", "image_size", 224),
        field("patch_size", "patch_size", patch_size),
        field("num_channels", "channels", 3),
        *_tower_fields("vision_config", "image_encoder.", defaults),
        *fields.fixed(
            {
                **variants,
                "final_norm": True,
                "num_registers": 0,
                "distillation_token": False,
                "position_grid": None,
                "position_antialias": False,
            },
            prefix="image_encoder.",
        ),
    )


def _special_token_fields(eos_save=None):
    """The text tower's padding, start and end ids, which both families
    keep in `text_config`, as `special_token_ids`; `eos_save` computes the
    end id written (CLIP's is its pooling's)."""
    found = []
    for key, default in (("pad", 1), ("bos", 49406), ("eos", 49407)):
        save = eos_save if key == "eos" and eos_save else None
        found.append(
            NestedField(
                f"text_config.{fields.SPECIAL_TOKENS[key]}",
                f"special_token_ids.{key}",
                default,
                save=save or (lambda options, key=key: _special(options, key)),
            )
        )
    return tuple(found)


def _special(options, key):
    return options["special_token_ids"].get(key)


def _clip_text_pooling(config):
    eos = config.get("text_config.eos_token_id", 49407)
    if eos == LEGACY_EOS_TOKEN_ID:
        return {"position": "highest_id", "token_id": None}
    if isinstance(eos, bool) or not isinstance(eos, int):
        raise ValueError(
            f"text_config.eos_token_id={eos!r} must be one int, the "
            "end-of-text token the text is read at"
        )
    return {"position": "token_id", "token_id": eos}


def _clip_eos_token_id(options):
    pooling = options["text_pooling"]
    if pooling["position"] == "highest_id":
        return LEGACY_EOS_TOKEN_ID
    if pooling["position"] == "token_id":
        return pooling["token_id"]
    raise ValueError(
        f"`model` has text_pooling={pooling!r}, which clip's "
        "text_config.eos_token_id cannot express: expected position "
        "'token_id' or 'highest_id'."
    )


CLIP_FIELDS = (
    *_text_fields(CLIP_DEFAULTS, 49408, 77, causal=True),
    *_vision_fields(
        CLIP_DEFAULTS, 32,
        {"class_token": True, "patch_bias": False, "embedding_norm": True},
    ),
    NestedField(
        "text_config.eos_token_id", "text_pooling",
        load=_clip_text_pooling, save=_clip_eos_token_id,
    ),
    *_special_token_fields(eos_save=_clip_eos_token_id),
    Field("projection_dim", "text_projection_dim", 512),
    Field("projection_dim", "image_projection_dim", 512),
    Field("logit_scale_init_value", "logit_scale", 2.6592),
    Fixed("image_pooling", "first"),
    Fixed("projection_bias", False),
    Fixed("logit_bias", None),
)  # fmt: skip


def _siglip_projection(config):
    size = config.get("text_config.projection_size")
    return config.get("text_config.hidden_size", 768) if size is None else size


def _siglip_head(options):
    """The MAP head's options, which SigLIP takes from its vision tower."""
    tower = options["image_encoder"]
    return {
        "num_heads": tower["attention"]["num_heads"],
        "hidden_dim": tower["feed_forward"]["hidden_dim"],
        "activation": tower["feed_forward"]["activation"],
        "epsilon": tower["norm"]["epsilon"],
    }


def _siglip_use_head(options):
    expected = _siglip_head(options)
    if options["image_pooling"] != expected:
        raise ValueError(
            f"`model` has image_pooling={options['image_pooling']!r}; "
            f"siglip's MAP head is the image tower's: {expected!r}."
        )
    return True


def _siglip_head_from_config(config):
    """The MAP head's options from the vision tower's fields, which
    loading has checked before this one."""
    use_head = config.get("vision_config.vision_use_head", True)
    if use_head is not True:
        raise fields.unsupported(
            "vision_config.vision_use_head", use_head, [True], "siglip"
        )
    activation, epsilon = SIGLIP_DEFAULTS
    return {
        "num_heads": config.get("vision_config.num_attention_heads", 12),
        "hidden_dim": config.get("vision_config.intermediate_size", 3072),
        "activation": ACTIVATIONS[
            config.get("vision_config.hidden_act", activation)
        ],
        "epsilon": config.get("vision_config.layer_norm_eps", epsilon),
    }


SIGLIP_FIELDS = (
    *_text_fields(SIGLIP_DEFAULTS, 32000, 64, causal=False),
    *_vision_fields(
        SIGLIP_DEFAULTS, 16,
        {"class_token": False, "patch_bias": True, "embedding_norm": False},
    ),
    NestedField(
        "text_config.projection_size", "text_projection_dim",
        load=_siglip_projection,
    ),
    NestedField(
        "vision_config.vision_use_head", "image_pooling",
        load=_siglip_head_from_config, save=_siglip_use_head,
    ),
    *_special_token_fields(),
    Fixed("text_pooling", {"position": "last", "token_id": None}),
    Fixed("image_projection_dim", None),
    Fixed("projection_bias", True),
    Fixed("logit_scale", SIGLIP_LOGIT_SCALE),
    Fixed("logit_bias", SIGLIP_LOGIT_BIAS),
)  # fmt: skip


def _reshaped(shape):
    """The kind of one weight of another shape than its tensor's (a
    class token `(1, 1, width)` saved as `(width,)`)."""

    def kind(attribute):
        return core.variable(
            attribute,
            lambda array: [array.reshape(shape)],
            lambda arrays: arrays[0].reshape(-1),
        )

    return kind


@dataclasses.dataclass
class _ScalarTensor(core.Tensor):
    """A 0-d tensor, which `Tensor.save`'s `np.ascontiguousarray` would
    make `(1,)`."""

    def save(self, dtype=None):
        return super().save(dtype).reshape(())


def _scalar(name, layer):
    """CLIP's `logit_scale`, a 0-d tensor."""
    return [_ScalarTensor(name, [(layer, "logit_scale")])]


def _vector(attribute):
    """A scalar weight that SigLIP saves as a `(1,)` tensor."""
    return core.variable(
        attribute,
        lambda array: [array.reshape(())],
        lambda arrays: arrays[0].reshape(1),
    )


def _packed_projections(name, attention):
    """PyTorch `MultiheadAttention`'s query, key and value projections,
    one after the other in `in_proj_weight` and `in_proj_bias`."""
    tensors = fused.fused("query_dense key_dense value_dense")(
        f"{name}.in_proj", attention
    )
    return [
        dataclasses.replace(
            tensor, name=tensor.name.replace(".in_proj.", ".in_proj_")
        )
        for tensor in tensors
    ]


def _patch_projection(name, layer):
    """The patch convolution, whose bias CLIP does not have."""
    tensors = vit._convolution(name, layer)
    return tensors if layer.bias is not None else tensors[:1]


BLOCK = (
    ("layer_norm1", "self_attention_norm", core.NORM),
    *core.attention_rows("self_attn.{}", "q_proj k_proj v_proj out_proj"),
    ("layer_norm2", "feed_forward_norm", core.NORM),
    *core.feed_forward_rows("mlp.{}", "fc1 fc2"),
)


def _towers(vision_rows):
    """The rows of both towers; `vision_rows` are those of the image
    tower's embeddings and pooling, which differ."""
    text, vision = "text_model", "vision_model"
    return (
        (f"{text}.embeddings.token_embedding.weight",
         "text_encoder.embedding.token_embedding",
         core.variable("embeddings")),
        (f"{text}.embeddings.position_embedding.weight",
         "text_encoder.embedding", core.variable("position_embeddings")),
        core.Stack(f"{text}.encoder.layers.{{}}", "text_encoder.blocks", BLOCK),
        (f"{text}.final_layer_norm", "text_encoder.final_norm", core.NORM),
        (f"{vision}.embeddings.patch_embedding",
         "image_encoder.patch_embedding.projection", _patch_projection),
        (f"{vision}.embeddings.position_embedding.weight",
         "image_encoder.patch_embedding",
         core.variable("position_embeddings")),
        *vision_rows,
        core.Stack(
            f"{vision}.encoder.layers.{{}}", "image_encoder.blocks", BLOCK
        ),
        (f"{vision}.post_layernorm", "image_encoder.final_norm", core.NORM),
    )  # fmt: skip


CLIP_LAYOUT = (
    *_towers((
        ("vision_model.embeddings.class_embedding",
         "image_encoder.patch_embedding", _reshaped((1, 1, -1))("class_token")),
        ("vision_model.pre_layrnorm", "image_encoder.embedding_norm",
         core.NORM),
    )),
    ("text_projection", "text_projection", core.LINEAR),
    ("visual_projection", "image_projection", core.LINEAR),
    ("logit_scale", "similarity", _scalar),
)  # fmt: skip
HEAD = "vision_model.head"
SIGLIP_LAYOUT = (
    *_towers(()),
    (f"{HEAD}.probe", "image_pooling_layer", core.variable("probe")),
    (f"{HEAD}.attention", "image_pooling_layer.attention",
     _packed_projections),
    (f"{HEAD}.attention.out_proj", "image_pooling_layer.attention.output_dense",
     core.LINEAR_FROM_HEADS),
    (f"{HEAD}.layernorm", "image_pooling_layer.norm", core.NORM),
    *(
        (name, f"image_pooling_layer.{path}", kind)
        for name, path, kind in core.feed_forward_rows(
            f"{HEAD}.mlp.{{}}", "fc1 fc2"
        )
    ),
    ("text_model.head", "text_projection", core.LINEAR),
    ("logit_scale", "similarity", _vector("logit_scale")),
    ("logit_bias", "similarity", _vector("logit_bias")),
)  # fmt: skip


def _options(model):
    """The model's options, its towers' within: towers of other classes
    have no checkpoint layout."""
    for name, tower_class in (
        ("text_encoder", TextEncoder),
        ("image_encoder", ViTEncoder),
    ):
        tower = getattr(model, name)
        if not isinstance(tower, tower_class):
            raise ValueError(
                f"`model.{name}` must be a {tower_class.__name__} to be "
                f"written as a CLIP or SigLIP checkpoint. Received: "
                f"{type(tower).__name__}"
            )
    return {
        **model.get_config(),
        "text_encoder": model.text_encoder.get_config(),
        "image_encoder": model.image_encoder.get_config(),
    }


def _build(options, special_token_ids, **records):
    """The model; config.json's own special ids (None where it has none)
    yield to `text_config`'s."""
    options = dict(options)
    special_token_ids = {
        **{key: i for key, i in special_token_ids.items() if i is not None},
        **options.pop("special_token_ids"),
    }
    text = TextEncoder(**options.pop("text_encoder"), name="text_encoder")
    image = ViTEncoder(
        num_heads=None, ff_dim=None, **options.pop("image_encoder"),
        name="image_encoder",
    )  # fmt: skip
    return DualEncoder(
        text, image, **options, special_token_ids=special_token_ids,
        **records,
    )  # fmt: skip


FAMILIES = (
    core.Family(
        "clip", "CLIPModel", DualEncoder, CLIP_FIELDS, CLIP_LAYOUT,
        options=_options, build=_build,
    ),
    core.Family(
        "siglip", "SiglipModel", DualEncoder, SIGLIP_FIELDS, SIGLIP_LAYOUT,
        options=_options, build=_build,
    ),
)  # fmt: skip

"""A block's options, one dict per concept, each completed by its layer.

Blocks and models take three option dicts and pass them down unchanged:

- `attention`: arguments of `MultiHeadSelfAttention` (`num_heads`,
  `key_dim`, `num_kv_heads`, `use_bias`, `attention_scale`, `rotary`, ...),
  or, with a `"type"` other than `"multi_head"`, of the layer
  `ATTENTION_LAYERS` registers under that name (`"disentangled"`:
  DeBERTa's `DisentangledSelfAttention`).
- `feed_forward`: arguments of `FeedForward` (`hidden_dim`, `activation`,
  `use_bias`), or, with a `"type"` other than `"dense"`, of the layer
  `FEED_FORWARD_LAYERS` registers under that name.
- `norm`: `"type"`, `"epsilon"`, `"placement"` and `"offset"` (see
  `keras_tfm.layers.normalization`).

A block's `residual` argument (`RESIDUALS`) says how its sublayers meet the
residual stream.

Each option is declared once, by the layer that uses it: a new attention
option is an argument of the attention layer and reaches every block and
model with no other change. The flat arguments of keras_tfm 0.1
(`num_kv_heads=`, `rotary_max_wavelength=`, `norm_first=`, ...) are still
taken, by `block_options` alone.
"""

import keras

from keras_tfm.layers.attention import MultiHeadSelfAttention
from keras_tfm.layers.disentangled_attention import DisentangledSelfAttention
from keras_tfm.layers.feed_forward import FeedForward
from keras_tfm.layers.mixture_of_experts import MixtureOfExperts
from keras_tfm.layers.normalization import norm_options
from keras_tfm.layers.validation import check_choice, check_positive_int

# The self-attention layer of each `attention["type"]`; as for the
# feed-forward, the completed options hold a `"type"` other than the default
# only.
ATTENTION_LAYERS = {
    "multi_head": MultiHeadSelfAttention,
    "disentangled": DisentangledSelfAttention,
}
DEFAULT_ATTENTION = "multi_head"
# The feed-forward layer of each `feed_forward["type"]`. The completed
# options hold `"type"` only when it is not the default, so configs written
# before the key existed are unchanged.
FEED_FORWARD_LAYERS = {
    "dense": FeedForward,
    "mixture_of_experts": MixtureOfExperts,
}
DEFAULT_FEED_FORWARD = "dense"
# How a block's sublayers meet the residual stream: one after the other,
# or both reading the block's input, `x + attn(norm_1(x)) + ff(norm_2(x))`
# (GPT-NeoX), or through one shared norm (GPT-J, Phi-2).
RESIDUALS = ("sequential", "parallel", "parallel_shared_norm")

# The flat arguments of keras_tfm 0.1 and the option dicts each belongs to.
LEGACY_ARGUMENTS = {
    "num_kv_heads": ("attention",),
    "key_dim": ("attention",),
    "attention_scale": ("attention",),
    "rotary": ("attention",),
    "rotary_max_wavelength": ("attention",),
    "activation": ("feed_forward",),
    "use_bias": ("attention", "feed_forward"),
}
# The order of 0.1's block arguments after `num_heads, ff_dim, dropout`.
LEGACY_POSITIONAL = (
    "activation", "norm_first", "norm", "layer_norm_epsilon", "rotary",
    "num_kv_heads", "use_bias", "rotary_max_wavelength", "key_dim",
    "attention_scale",
)  # fmt: skip
# What the blocks set themselves, never an option.
_BLOCK_ARGUMENTS = ("causal", "dropout", "name", "dtype", "trainable")


def block_options(
    arguments,
    num_heads=None,
    ff_dim=None,
    attention=None,
    feed_forward=None,
    norm=None,
    defaults=None,
):
    """The complete `attention`, `feed_forward` and `norm` options.

    Args:
        arguments: The caller's other keyword arguments; the flat arguments
            of keras_tfm 0.1 are taken out of it.
        num_heads: Shorthand for `attention["num_heads"]`.
        ff_dim: Shorthand for `feed_forward["hidden_dim"]`.
        attention: Dict of `MultiHeadSelfAttention` arguments.
        feed_forward: Dict of `FeedForward` arguments.
        norm: Norm type name or dict (see `norm_options`).
        defaults: The caller's defaults, `{"feed_forward": {...}, ...}`,
            for the keys the options leave out.

    Returns:
        `{"attention": ..., "feed_forward": ..., "norm": ...}`, each dict
        complete: every argument of its layer, defaults filled in.
    """
    defaults = defaults or {}
    for name, value in (("num_heads", num_heads), ("ff_dim", ff_dim)):
        if value is not None:
            check_positive_int(name, value)
    options = {
        "attention": dict(_checked_dict("attention", attention)),
        "feed_forward": dict(_checked_dict("feed_forward", feed_forward)),
    }
    shorthands = {
        ("attention", "num_heads"): num_heads,
        ("feed_forward", "hidden_dim"): ff_dim,
    }
    for name in list(arguments):
        for concept in LEGACY_ARGUMENTS.get(name, ()):
            shorthands[(concept, name)] = arguments[name]
        if name in LEGACY_ARGUMENTS:
            del arguments[name]
    for (concept, key), value in shorthands.items():
        if value is not None:
            _set_once(options[concept], concept, key, value)
    norm = _legacy_norm(norm, arguments)
    return {
        "attention": _complete_typed(
            "attention",
            ATTENTION_LAYERS,
            DEFAULT_ATTENTION,
            {**defaults.get("attention", {}), **options["attention"]},
        ),
        "feed_forward": _complete_typed(
            "feed_forward",
            FEED_FORWARD_LAYERS,
            DEFAULT_FEED_FORWARD,
            {**defaults.get("feed_forward", {}), **options["feed_forward"]},
        ),
        "norm": norm_options(norm, defaults.get("norm")),
    }


def feed_forward_layer(options, **arguments):
    """A new feed-forward layer for complete `feed_forward` options, of the
    class `FEED_FORWARD_LAYERS` registers for its `"type"`."""
    return _typed_layer(
        FEED_FORWARD_LAYERS, DEFAULT_FEED_FORWARD, options, arguments
    )


def attention_type(options):
    """The `"type"` of complete `attention` options."""
    return options.get("type", DEFAULT_ATTENTION)


def attention_layer(options, **arguments):
    """A new self-attention layer for complete `attention` options, of the
    class `ATTENTION_LAYERS` registers for its `"type"`."""
    return _typed_layer(ATTENTION_LAYERS, DEFAULT_ATTENTION, options, arguments)


def _typed_layer(layers, default, options, arguments):
    options = dict(options)
    layer_class = layers[options.pop("type", default)]
    return layer_class(**options, **arguments)


def check_residual(residual, norm):
    """Checks a block's `residual` against its complete `norm` options."""
    check_choice("residual", residual, RESIDUALS)
    if residual != "sequential" and norm["placement"] != "pre":
        raise ValueError(
            f"`residual={residual!r}` needs pre-norm blocks "
            "(norm['placement'] 'pre'), as in GPT-NeoX and Phi-2. "
            f"Received: norm['placement']={norm['placement']!r}"
        )


def _complete_typed(name, layers, default, options):
    """Options of the layer `layers` registers for their `"type"`,
    completed; the type is kept only when it is not `default`."""
    options = dict(options)
    kind = options.pop("type", default)
    check_choice(f"{name}['type']", kind, tuple(layers))
    options = _complete(layers[kind], name, options)
    if kind == default:
        return options
    return {"type": kind, **options}


def _checked_dict(name, value):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            f"`{name}` must be a dict of options. Received: {name}={value!r}"
        )
    for key in _BLOCK_ARGUMENTS:
        if key in value:
            raise ValueError(
                f"`{name}` cannot set {key!r}: the block sets it. Received: "
                f"{name}={value!r}"
            )
    return value


def _set_once(options, concept, key, value):
    if key in options and options[key] != value:
        raise ValueError(
            f"`{key}` is given twice, as {key}={value!r} and in "
            f"{concept}={options!r}: give it once."
        )
    options[key] = value


def _legacy_norm(norm, arguments):
    """`norm` with 0.1's `norm_first` and `layer_norm_epsilon` folded in."""
    if isinstance(norm, str):
        norm = {"type": norm}
    norm = dict(norm or {})
    if "norm_first" in arguments:
        placement = "pre" if arguments.pop("norm_first") else "post"
        _set_once(norm, "norm", "placement", placement)
    if "layer_norm_epsilon" in arguments:
        epsilon = arguments.pop("layer_norm_epsilon")
        _set_once(norm, "norm", "epsilon", epsilon)
    return norm


_LAYER_KEYS = frozenset(keras.layers.Layer().get_config())


def _complete(layer_class, name, options):
    """`options` with the defaults of `layer_class`, checked by making one
    (a layer makes no weights before `build`; named, so that it takes no
    automatic name from the user's layers)."""
    try:
        config = layer_class(**options, name=f"{name}_options").get_config()
    except TypeError as error:
        raise ValueError(
            f"`{name}` does not fit {layer_class.__name__}: {error}. "
            f"Received: {name}={options!r}"
        ) from None
    return {
        key: value
        for key, value in config.items()
        if key not in _LAYER_KEYS and key not in _BLOCK_ARGUMENTS
    }

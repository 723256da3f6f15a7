"""Normalization options: which norm, its epsilon, and where it sits.

A block's `norm` option is a dict (or just the type's name):

- `"type"`: `"layer"` (`keras.layers.LayerNormalization`) or `"rms"`
  (`keras.layers.RMSNormalization`).
- `"epsilon"`: added to the variance.
- `"placement"`, where the norm sits around each sublayer `f`:
  `"post"` (the paper's `norm(x + f(x))`), `"pre"` (`x + f(norm(x))`,
  steadier for deep stacks), `"sandwich"` (`x + norm_out(f(norm_in(x)))`,
  Gemma 2 and 3: a norm before and one after the sublayer) or `"output"`
  (`x + norm(f(x))`, OLMo 2: after the sublayer only).
- `"offset"` (RMS only, default 0): the norm scales by `offset + scale`,
  Gemma's `x * (1 + weight)`; the scale then starts at `1 - offset`, so
  that the layer starts as a plain RMS norm.
- `"use_bias"` (layer norms only, default True): False for a layer norm
  without a bias, `LayerNormalization(center=False)` (ModernBERT).
- `"skip"` (default none): the sublayers of a block (`"self_attention"`,
  `"cross_attention"`, `"feed_forward"`) that have no norm, their input
  and residual sum left as they are: ModernBERT's first block, through
  `layer_overrides`, reads the embedding's norm instead.

The completed options leave `"offset"`, `"use_bias"` and `"skip"` out at
their defaults, so configs written before they existed are unchanged.
"""

import keras
from keras import ops

from keras_tfm.layers.validation import check_choice

NORM_TYPES = {
    "layer": keras.layers.LayerNormalization,
    "rms": keras.layers.RMSNormalization,
}
PLACEMENTS = ("post", "pre", "sandwich", "output")
SUBLAYERS = ("self_attention", "cross_attention", "feed_forward")
DEFAULT_NORM = {"type": "layer", "epsilon": 1e-5, "placement": "post"}
# Keys that the completed options hold only away from their default: the
# RMS offset (with which the RMS decoder families complete the options
# they read), a layer norm's bias and the sublayers without a norm.
OPTIONAL_NORM = {"offset": 0.0}
LEFT_OUT_AT_DEFAULT = {**OPTIONAL_NORM, "use_bias": True, "skip": []}


def norm_options(norm=None, defaults=None):
    """The complete norm options of `norm`, checked.

    Args:
        norm: None, a type name (`"layer"`, `"rms"`) or a dict with any of
            `"type"`, `"epsilon"`, `"placement"`, `"offset"`, `"use_bias"`,
            `"skip"`.
        defaults: Values for the keys `norm` leaves out, over
            `DEFAULT_NORM`.

    Returns:
        A dict with `"type"`, `"epsilon"`, `"placement"`, and `"offset"`,
        `"use_bias"` and `"skip"` (a list) where they are not at their
        defaults.
    """
    if isinstance(norm, str):
        norm = {"type": norm}
    keys = (*DEFAULT_NORM, *LEFT_OUT_AT_DEFAULT)
    if norm is not None and not isinstance(norm, dict):
        raise ValueError(
            "`norm` must be None, 'layer', 'rms' or a dict with keys "
            f"{list(keys)}. Received: norm={norm!r}"
        )
    options = {**DEFAULT_NORM, **(defaults or {}), **(norm or {})}
    for key in options:
        check_choice("norm key", key, keys)
    check_choice("norm['type']", options["type"], tuple(NORM_TYPES))
    check_choice("norm['placement']", options["placement"], PLACEMENTS)
    epsilon = options["epsilon"]
    if not _is_number(epsilon) or epsilon <= 0:
        raise ValueError(
            "`norm['epsilon']` must be a positive number. Received: "
            f"epsilon={epsilon!r}"
        )
    _check_offset(options)
    _check_use_bias(options)
    if "skip" in options:
        options["skip"] = _skipped(options["skip"])
    for key, default in LEFT_OUT_AT_DEFAULT.items():
        if key in options and options[key] == default:
            del options[key]
    return options


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_offset(options):
    offset = options.get("offset", 0.0)
    if not _is_number(offset):
        raise ValueError(
            f"`norm['offset']` must be a number. Received: offset={offset!r}"
        )
    if offset and options["type"] != "rms":
        raise ValueError(
            "`norm['offset']` is an option of RMS norms only (norm['type'] "
            f"'rms'). Received: offset={offset!r} with "
            f"type={options['type']!r}"
        )


def _check_use_bias(options):
    use_bias = options.get("use_bias", True)
    if not isinstance(use_bias, bool):
        raise ValueError(
            "`norm['use_bias']` must be a bool. Received: "
            f"use_bias={use_bias!r}"
        )
    if not use_bias and options["type"] != "layer":
        raise ValueError(
            "`norm['use_bias']` is an option of layer norms only "
            "(norm['type'] 'layer'; an RMS norm has no bias). Received: "
            f"use_bias=False with type={options['type']!r}"
        )


def _skipped(skip):
    """`skip` as a list of sublayer names, checked."""
    if not isinstance(skip, list | tuple):
        raise ValueError(
            f"`norm['skip']` must be a list of sublayers among "
            f"{list(SUBLAYERS)}. Received: skip={skip!r}"
        )
    for sublayer in skip:
        check_choice("norm['skip']", sublayer, SUBLAYERS)
    return list(skip)


def normalization(options, name, dtype=None):
    """A new, unbuilt norm layer for `options` (`norm_options`; extra keys,
    such as a query/key norm's `"scope"` or a block's `"skip"`, are
    ignored)."""
    offset = options.get("offset", 0.0)
    if offset:
        layer = OffsetRMSNormalization(
            epsilon=options["epsilon"], offset=offset, name=name, dtype=dtype
        )
    elif not options.get("use_bias", True):
        layer = keras.layers.LayerNormalization(
            epsilon=options["epsilon"], center=False, name=name, dtype=dtype
        )
    else:
        layer = NORM_TYPES[options["type"]](
            epsilon=options["epsilon"], name=name, dtype=dtype
        )
    # Each position is normalised alone, so a padding mask passes through
    # (Keras's RMSNormalization would drop it, and the loss would count
    # padding).
    layer.supports_masking = True
    return layer


def sublayer_norms(options, sublayer, x_shape, dtype=None):
    """The built norms around one sublayer of a block: `{sublayer}_norm`,
    and `{sublayer}_output_norm` for a sandwich placement (else None);
    both None for a sublayer in `options["skip"]`."""
    if sublayer in options.get("skip", ()):
        return None, None
    names = [f"{sublayer}_norm"]
    if options["placement"] == "sandwich":
        names.append(f"{sublayer}_output_norm")
    layers = [normalization(options, name, dtype) for name in names]
    for layer in layers:
        layer.build(x_shape)
    return (*layers, None)[:2]


def normalized_input(placement, x, norm):
    """What a sublayer reads: `norm(x)` for a norm before it, else `x`
    (also for a skipped norm, None)."""
    if norm is None or placement not in ("pre", "sandwich"):
        return x
    return norm(x)


def residual_sum(placement, x, outputs, norm, output_norm=None):
    """`x` plus a sublayer's `outputs`, with the norm after the sublayer
    that `placement` puts there (`output_norm` is the sandwich's second);
    none for a skipped norm (None)."""
    if norm is None:
        return x + outputs
    if placement == "post":
        return norm(x + outputs)
    if placement == "output":
        return x + norm(outputs)
    if placement == "sandwich":
        return x + output_norm(outputs)
    return x + outputs


@keras.saving.register_keras_serializable(package="keras_tfm")
class OffsetRMSNormalization(keras.layers.Layer):
    """RMS normalization scaled by `offset + scale`.

    Gemma's RMS norm: `x / rms(x) * (1 + weight)`, computed in float32 and
    cast to the compute dtype at the end, with `offset=1`. The scale starts
    at `1 - offset` (zeros for Gemma, as its checkpoints count from 0), so a
    new layer is a plain RMS norm. Made by `normalization` for a norm dict
    with an `"offset"`.

    Args:
        epsilon: Added to the mean square.
        offset: Added to the learned scale.
        **kwargs: Standard layer arguments.

    Call arguments:
        x: Input; normalised over its last axis.

    Returns:
        A tensor with the shape and dtype of `x`.

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers.normalization import OffsetRMSNormalization

    x = np.random.rand(2, 5, 16).astype("float32")
    outputs = OffsetRMSNormalization(epsilon=1e-6, offset=1.0)(x)
    ```
    """

    def __init__(self, epsilon=1e-6, offset=1.0, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.offset = offset
        self.supports_masking = True

    def build(self, x_shape):
        self.scale = self.add_weight(
            name="scale",
            shape=(x_shape[-1],),
            initializer=keras.initializers.Constant(1.0 - self.offset),
        )

    def call(self, x):
        scale = self.offset + ops.cast(self.scale, "float32")
        # `rms_normalization` multiplies in float32 and casts at the end.
        return ops.rms_normalization(x, scale=scale, epsilon=self.epsilon)

    def compute_output_shape(self, x_shape):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
            "offset": self.offset,
        }

"""Normalization options: which norm, its epsilon, and where it sits.

A block's `norm` option is a dict (or just the type's name):

- `"type"`: `"layer"` (`keras.layers.LayerNormalization`) or `"rms"`
  (`keras.layers.RMSNormalization`).
- `"epsilon"`: added to the variance.
- `"placement"`: `"post"` (the paper's `norm(x + f(x))`) or `"pre"`
  (`x + f(norm(x))`, steadier for deep stacks).
"""

import keras

from keras_tfm.layers.validation import check_choice

NORM_TYPES = {
    "layer": keras.layers.LayerNormalization,
    "rms": keras.layers.RMSNormalization,
}
PLACEMENTS = ("post", "pre")
DEFAULT_NORM = {"type": "layer", "epsilon": 1e-5, "placement": "post"}


def norm_options(norm=None, defaults=None):
    """The complete norm options of `norm`, checked.

    Args:
        norm: None, a type name (`"layer"`, `"rms"`) or a dict with any of
            `"type"`, `"epsilon"`, `"placement"`.
        defaults: Values for the keys `norm` leaves out, over
            `DEFAULT_NORM`.

    Returns:
        A dict with the three keys.
    """
    if isinstance(norm, str):
        norm = {"type": norm}
    if norm is not None and not isinstance(norm, dict):
        raise ValueError(
            "`norm` must be None, 'layer', 'rms' or a dict with keys "
            f"{list(DEFAULT_NORM)}. Received: norm={norm!r}"
        )
    options = {**DEFAULT_NORM, **(defaults or {}), **(norm or {})}
    for key in options:
        check_choice("norm key", key, tuple(DEFAULT_NORM))
    check_choice("norm['type']", options["type"], tuple(NORM_TYPES))
    check_choice("norm['placement']", options["placement"], PLACEMENTS)
    epsilon = options["epsilon"]
    number = isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool)
    if not number or epsilon <= 0:
        raise ValueError(
            "`norm['epsilon']` must be a positive number. Received: "
            f"epsilon={epsilon!r}"
        )
    return options


def normalization(options, name, dtype=None):
    """A new, unbuilt norm layer for complete `options` (`norm_options`)."""
    layer = NORM_TYPES[options["type"]](
        epsilon=options["epsilon"], name=name, dtype=dtype
    )
    # Each position is normalised alone, so a padding mask passes through
    # (Keras's RMSNormalization would drop it, and the loss would count
    # padding).
    layer.supports_masking = True
    return layer

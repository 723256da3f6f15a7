"""Rotary position embedding (RoPE) and its context-extension scalings."""

import math
import numbers

import keras
from keras import ops

from keras_tfm.layers.validation import check_rank


def _inverse_frequencies(base, head_dim):
    """`1 / base ** (2i / head_dim)` for each channel pair `i`, in float32."""
    exponents = ops.arange(0, head_dim, 2, dtype="float32") / head_dim
    return 1.0 / ops.power(base, exponents)


def _linear(max_wavelength, head_dim, length, factor):
    return _inverse_frequencies(max_wavelength, head_dim) / factor


def _dynamic(
    max_wavelength, head_dim, length, factor, original_max_position_embeddings
):
    if head_dim <= 2:
        raise ValueError(
            "Dynamic rotary scaling needs a head dimension above 2. "
            f"Received: head_dim={head_dim}"
        )
    n = original_max_position_embeddings
    length = ops.maximum(ops.cast(length, "float32"), float(n))
    stretch = factor * length / n - (factor - 1)
    base = max_wavelength * ops.power(stretch, head_dim / (head_dim - 2))
    return _inverse_frequencies(base, head_dim)


def _llama3(
    max_wavelength,
    head_dim,
    length,
    factor,
    low_freq_factor,
    high_freq_factor,
    original_max_position_embeddings,
):
    n = original_max_position_embeddings
    inverse = _inverse_frequencies(max_wavelength, head_dim)
    wavelengths = 2 * math.pi / inverse
    smooth = (n / wavelengths - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    smoothed = (1 - smooth) * inverse / factor + smooth * inverse
    return ops.where(
        wavelengths > n / low_freq_factor,
        inverse / factor,
        ops.where(wavelengths < n / high_freq_factor, inverse, smoothed),
    )


# Each scaling type: its function and the keys it takes besides `"type"`.
SCALINGS = {
    "linear": (_linear, ("factor",)),
    "dynamic": (_dynamic, ("factor", "original_max_position_embeddings")),
    "llama3": (
        _llama3,
        (
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ),
    ),
}


def _positive_number(name, value):
    """`value` as a plain Python int or float, if it is a positive number."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not value > 0
    ):
        raise ValueError(
            f"`{name}` must be a positive number. Received: {name}={value!r}"
        )
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _check_scaling(scaling):
    """`scaling` with plain Python numbers, or a `ValueError` naming the key."""
    if scaling is None:
        return None
    expected = "; ".join(
        f'"type": "{kind}" with {list(keys)}'
        for kind, (_, keys) in SCALINGS.items()
    )
    if not isinstance(scaling, dict) or scaling.get("type") not in SCALINGS:
        raise ValueError(
            f"`scaling` must be None or a dict with {expected}. "
            f"Received: scaling={scaling!r}"
        )
    keys = SCALINGS[scaling["type"]][1]
    for key in scaling:
        if key != "type" and key not in keys:
            raise ValueError(
                f'`scaling` of type "{scaling["type"]}" takes the keys '
                f"{list(keys)}; unknown key {key!r}. "
                f"Received: scaling={scaling!r}"
            )
    checked = {"type": scaling["type"]}
    for key in keys:
        if key not in scaling:
            raise ValueError(
                f'`scaling` of type "{scaling["type"]}" needs the keys '
                f"{list(keys)}; missing key {key!r}. "
                f"Received: scaling={scaling!r}"
            )
        checked[key] = _positive_number(f'scaling["{key}"]', scaling[key])
    if scaling["type"] == "llama3" and (
        checked["high_freq_factor"] <= checked["low_freq_factor"]
    ):
        raise ValueError(
            '`scaling["high_freq_factor"]` must be greater than '
            f'`scaling["low_freq_factor"]`. Received: scaling={scaling!r}'
        )
    return checked


@keras.saving.register_keras_serializable(package="keras_tfm")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoPE), applied to queries and keys.

    Rotates each pair of channels `(i, i + head_dim / 2)` of a query or key
    by an angle proportional to its position, so that the dot product of a
    query and a key depends on their relative distance only. Attention layers
    apply it when built with `rotary=True`. The layer has no weights and no
    mask handling of its own: it rotates every position, padding included.

    `scaling` stretches the rotations so that a model reaches past the
    length it was trained on, as Hugging Face's `rope_scaling` does (with
    the key `"type"` for its `"rope_type"`), and matches
    `transformers.modeling_rope_utils`:

    - `{"type": "linear", "factor": f}`: positions divided by `f`.
    - `{"type": "dynamic", "factor": f,
      "original_max_position_embeddings": n}`: NTK-aware, the base grows
      with the current length `start_index + seq` once it exceeds `n`
      (Hugging Face takes `n` from `max_position_embeddings`).
    - `{"type": "llama3", "factor": f, "low_freq_factor": a,
      "high_freq_factor": b, "original_max_position_embeddings": n}`:
      Llama 3.1's scaling, which divides the frequencies of wavelengths above
      `n / a` by `f`, keeps those below `n / b`, and blends in between.

    Args:
        max_wavelength: The base of the rotation wavelengths, a positive
            number (Hugging Face's `rope_theta`).
        scaling: `None`, or a dict as above.
        **kwargs: Standard layer arguments.

    Call arguments:
        inputs: Queries or keys of shape `(batch, seq, heads, head_dim)`;
            `head_dim` must be even.
        start_index: Position of the first element of `inputs`, an int or a
            scalar tensor, for cached decoding. Defaults to 0.

    Returns:
        The rotated tensor, same shape and dtype as `inputs`.

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers.rotary import RotaryEmbedding

    queries = np.random.rand(2, 10, 4, 16).astype("float32")
    rotated = RotaryEmbedding()(queries)  # (2, 10, 4, 16)

    # Llama 3.1's settings.
    llama3 = RotaryEmbedding(
        max_wavelength=500000.0,
        scaling={
            "type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    rotated = llama3(queries, start_index=5)  # (2, 10, 4, 16)
    ```

    References:
        - [Su et al., 2021](https://arxiv.org/abs/2104.09864)
        - [Chen et al., 2023 (linear scaling)](https://arxiv.org/abs/2306.15595)
        - [Llama 3, 2024](https://arxiv.org/abs/2407.21783)
    """

    def __init__(self, max_wavelength=10000, scaling=None, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = _positive_number("max_wavelength", max_wavelength)
        self.scaling = _check_scaling(scaling)
        # Each position is rotated alone: a padding mask passes through.
        self.supports_masking = True
        self.built = True

    def inverse_frequencies(self, head_dim, length):
        """The rotation speed of each channel pair, `(head_dim // 2,)`."""
        if self.scaling is None:
            return _inverse_frequencies(float(self.max_wavelength), head_dim)
        function, keys = SCALINGS[self.scaling["type"]]
        parameters = {key: self.scaling[key] for key in keys}
        return function(
            float(self.max_wavelength), head_dim, length, **parameters
        )

    def call(self, inputs, start_index=0):
        check_rank("inputs", inputs.shape, 4, "(batch, seq, heads, head_dim)")
        head_dim = inputs.shape[-1]
        if head_dim % 2:
            raise ValueError(
                "RotaryEmbedding needs an even head dimension. "
                f"Received: inputs.shape={tuple(inputs.shape)}"
            )
        seq = ops.shape(inputs)[1]
        positions = ops.cast(ops.arange(seq) + start_index, "float32")
        inverse = self.inverse_frequencies(head_dim, start_index + seq)
        angles = positions[:, None] * inverse[None, :]  # (seq, head_dim / 2)
        angles = ops.concatenate([angles, angles], axis=-1)[None, :, None, :]
        cos = ops.cast(ops.cos(angles), inputs.dtype)
        sin = ops.cast(ops.sin(angles), inputs.dtype)
        first_half, second_half = ops.split(inputs, 2, axis=-1)
        rotated_half = ops.concatenate([-second_half, first_half], axis=-1)
        return inputs * cos + rotated_half * sin

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "max_wavelength": self.max_wavelength,
            "scaling": self.scaling,
        }


def rotary_options(rotary, max_wavelength=None):
    """The `RotaryEmbedding` config that an attention layer's `rotary` means.

    Args:
        rotary: `None` or `False` for no rotary embedding; `True` for the
            default one; or a dict of `RotaryEmbedding` arguments
            (`max_wavelength`, `scaling`).
        max_wavelength: The legacy `rotary_max_wavelength` argument; when
            not `None`, it overrides the dict's or the default's value.

    Returns:
        `None`, or a complete JSON-serializable dict
        `{"max_wavelength": ..., "scaling": ...}`, validated.

    Example:

    ```python
    from keras_tfm.layers.rotary import rotary_options

    rotary_options(True)  # {"max_wavelength": 10000, "scaling": None}
    rotary_options({"scaling": {"type": "linear", "factor": 2}})
    ```
    """
    if rotary is None or rotary is False:
        return None
    if rotary is True:
        rotary = {}
    if not isinstance(rotary, dict):
        raise ValueError(
            "`rotary` must be None, a bool, or a dict with the keys "
            f"'max_wavelength' and 'scaling'. Received: rotary={rotary!r}"
        )
    for key in rotary:
        if key not in ("max_wavelength", "scaling"):
            raise ValueError(
                "`rotary` takes the keys 'max_wavelength' and 'scaling'; "
                f"unknown key {key!r}. Received: rotary={rotary!r}"
            )
    if max_wavelength is None:
        max_wavelength = rotary.get("max_wavelength", 10000)
    return {
        "max_wavelength": _positive_number("max_wavelength", max_wavelength),
        "scaling": _check_scaling(rotary.get("scaling")),
    }

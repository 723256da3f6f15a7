"""Rotary position embedding (RoPE) and its context-extension scalings."""

import math
import numbers
import typing

import keras
import numpy as np
from keras import ops

from keras_tfm.layers.validation import check_rank, positive_number

ORIGINAL = "original_max_position_embeddings"


def _inverse_frequencies(base, head_dim):
    """`1 / base ** (2i / head_dim)` for each channel pair `i`, in float32."""
    exponents = np.arange(0, head_dim, 2, dtype="float32") / head_dim
    if isinstance(base, numbers.Real):
        # A constant, computed here rather than by each layer's traced
        # operations (tracing them was a tenth of PyTorch's step trace).
        return ops.convert_to_tensor(1.0 / np.float32(base) ** exponents)
    return 1.0 / ops.power(base, exponents)


def _linear(max_wavelength, head_dim, length, scaling):
    return _inverse_frequencies(max_wavelength, head_dim) / scaling["factor"]


def _dynamic(max_wavelength, head_dim, length, scaling):
    if head_dim <= 2:
        raise ValueError(
            "Dynamic rotary scaling needs a head dimension above 2. "
            f"Received: head_dim={head_dim}"
        )
    n, factor = scaling[ORIGINAL], scaling["factor"]
    length = ops.maximum(ops.cast(length, "float32"), float(n))
    stretch = factor * length / n - (factor - 1)
    base = max_wavelength * ops.power(stretch, head_dim / (head_dim - 2))
    return _inverse_frequencies(base, head_dim)


def _llama3(max_wavelength, head_dim, length, scaling):
    n, factor = scaling[ORIGINAL], scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    inverse = _inverse_frequencies(max_wavelength, head_dim)
    wavelengths = 2 * math.pi / inverse
    smooth = (n / wavelengths - low) / (high - low)
    smoothed = (1 - smooth) * inverse / factor + smooth * inverse
    return ops.where(
        wavelengths > n / low,
        inverse / factor,
        ops.where(wavelengths < n / high, inverse, smoothed),
    )


def _correction_dimension(rotations, head_dim, base, length):
    """The channel pair that turns `rotations` times over `length`."""
    return (head_dim * math.log(length / (rotations * 2 * math.pi))) / (
        2 * math.log(base)
    )


def _yarn(max_wavelength, head_dim, length, scaling):
    # Pairs that turn more than `beta_fast` times over the original length
    # keep their frequency, those under `beta_slow` turns are divided by
    # `factor`, with a linear ramp between (transformers'
    # `_compute_yarn_parameters`).
    low, high = (
        _correction_dimension(
            scaling[beta], head_dim, max_wavelength, scaling[ORIGINAL]
        )
        for beta in ("beta_fast", "beta_slow")
    )
    if scaling["truncate"]:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a ramp of no width
    ramp = (ops.arange(head_dim // 2, dtype="float32") - low) / (high - low)
    kept = 1 - ops.clip(ramp, 0, 1)
    inverse = _inverse_frequencies(max_wavelength, head_dim)
    return inverse / scaling["factor"] * (1 - kept) + inverse * kept


def _longrope(max_wavelength, head_dim, length, scaling):
    short, long = scaling["short_factor"], scaling["long_factor"]
    if len(short) != head_dim // 2 or len(long) != head_dim // 2:
        raise ValueError(
            "`scaling['short_factor']` and `scaling['long_factor']` need one "
            f"number per rotated channel pair ({head_dim // 2}). Received: "
            f"{len(short)} and {len(long)} numbers."
        )
    # As transformers' Phi-3: the set is chosen per call, from the last
    # position it rotates (so in cached decoding, per step).
    is_long = ops.cast(length, "float32") > scaling[ORIGINAL]
    factors = ops.where(
        is_long,
        ops.convert_to_tensor(long, "float32"),
        ops.convert_to_tensor(short, "float32"),
    )
    return _inverse_frequencies(max_wavelength, head_dim) / factors


def _mscale(factor, mscale=1.0):
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _yarn_attention_factor(scaling):
    factor, mscale = scaling["factor"], scaling["mscale"]
    if mscale and scaling["mscale_all_dim"]:
        return _mscale(factor, mscale) / _mscale(
            factor, scaling["mscale_all_dim"]
        )
    return _mscale(factor)


def _longrope_attention_factor(scaling):
    factor = scaling["factor"]
    if factor is None or factor <= 1:
        return 1.0
    return math.sqrt(1 + math.log(factor) / math.log(scaling[ORIGINAL]))


class Scaling(typing.NamedTuple):
    """One scaling type: its frequencies, the keys it needs, its optional
    keys with their defaults, and its attention factor (which multiplies
    cos and sin) when the key `attention_factor` is not given."""

    frequencies: typing.Callable
    required: tuple
    optional: dict = {}
    attention_factor: typing.Callable = None


SCALINGS = {
    "linear": Scaling(_linear, ("factor",)),
    "dynamic": Scaling(_dynamic, ("factor", ORIGINAL)),
    "llama3": Scaling(
        _llama3, ("factor", "low_freq_factor", "high_freq_factor", ORIGINAL)
    ),
    "yarn": Scaling(
        _yarn,
        ("factor", ORIGINAL),
        {
            "beta_fast": 32.0, "beta_slow": 1.0, "truncate": True,
            "attention_factor": None, "mscale": None, "mscale_all_dim": None,
        },
        _yarn_attention_factor,
    ),
    "longrope": Scaling(
        _longrope,
        ("short_factor", "long_factor", ORIGINAL),
        {"attention_factor": None, "factor": None},
        _longrope_attention_factor,
    ),
}  # fmt: skip


def _checked_value(key, value):
    """A scaling value as plain Python: a bool (`truncate`), a list of
    positive numbers (longrope's factors) or a positive number."""
    name = f'scaling["{key}"]'
    if key == "truncate":
        if not isinstance(value, bool):
            raise ValueError(
                f"`{name}` must be a bool. Received: {name}={value!r}"
            )
        return value
    if isinstance(value, (list, tuple)):
        return [positive_number(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return positive_number(name, value)


def _check_scaling(scaling):
    """`scaling` complete, with plain Python values, or a `ValueError`
    naming the key."""
    if scaling is None:
        return None
    expected = "; ".join(
        f'"type": "{kind}" with {list(entry.required)}'
        + (f" and optionally {list(entry.optional)}" if entry.optional else "")
        for kind, entry in SCALINGS.items()
    )
    if not isinstance(scaling, dict) or scaling.get("type") not in SCALINGS:
        raise ValueError(
            f"`scaling` must be None or a dict with {expected}. "
            f"Received: scaling={scaling!r}"
        )
    kind = scaling["type"]
    entry = SCALINGS[kind]
    keys = (*entry.required, *entry.optional)
    for key in scaling:
        if key != "type" and key not in keys:
            raise ValueError(
                f'`scaling` of type "{kind}" takes the keys {list(keys)}; '
                f"unknown key {key!r}. Received: scaling={scaling!r}"
            )
    checked = {"type": kind}
    for key in entry.required:
        if key not in scaling:
            raise ValueError(
                f'`scaling` of type "{kind}" needs the keys '
                f"{list(entry.required)}; missing key {key!r}. "
                f"Received: scaling={scaling!r}"
            )
        checked[key] = _checked_value(key, scaling[key])
    for key, default in entry.optional.items():
        # None, as transformers' configs write a key they leave unset.
        value = scaling.get(key)
        checked[key] = default if value is None else _checked_value(key, value)
    if kind == "llama3" and (
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

    Rotates each pair of channels `(i, i + d / 2)` of a query or key by an
    angle proportional to its position, so that the dot product of a query
    and a key depends on their relative distance only. `d` is the head size,
    or its first `fraction` (GPT-NeoX, Phi-2: the other channels pass
    through unrotated). Attention layers apply it when built with
    `rotary=True`. The layer has no weights and no mask handling of its
    own: it rotates every position, padding included.

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
    - `{"type": "yarn", "factor": f, "original_max_position_embeddings": n}`
      and optionally `beta_fast` (32), `beta_slow` (1), `truncate` (True),
      `attention_factor`, `mscale`, `mscale_all_dim`: YaRN (Qwen2.5,
      Qwen3), which keeps the channel pairs that turn more than `beta_fast`
      times over `n`, divides by `f` those under `beta_slow` turns, ramps
      between, and multiplies cos and sin by the attention factor
      (`0.1 * ln(f) + 1` unless given).
    - `{"type": "longrope", "short_factor": [...], "long_factor": [...],
      "original_max_position_embeddings": n}` and optionally
      `attention_factor`, `factor`: Phi-3's LongRoPE, one divisor per
      channel pair; the long ones once the current length `start_index +
      seq` passes `n`. The attention factor defaults to
      `sqrt(1 + ln(factor) / ln(n))` (1 without `factor`).

    Args:
        max_wavelength: The base of the rotation wavelengths, a positive
            number (Hugging Face's `rope_theta`).
        scaling: `None`, or a dict as above.
        fraction: The part of each head that is rotated, in `(0, 1]`: the
            first `int(head_dim * fraction)` channels, which must be an even
            number (Hugging Face's `partial_rotary_factor`, GPT-NeoX's
            `rotary_pct`).
        **kwargs: Standard layer arguments.

    Call arguments:
        inputs: Queries or keys of shape `(batch, seq, heads, head_dim)`.
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

    # A quarter of each head rotated (Pythia), with YaRN.
    partial = RotaryEmbedding(
        fraction=0.25,
        scaling={
            "type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 32768,
        },
    )
    rotated = partial(queries)  # channels 4 to 15 unchanged
    ```

    References:
        - [Su et al., 2021](https://arxiv.org/abs/2104.09864)
        - [Chen et al., 2023 (linear scaling)](https://arxiv.org/abs/2306.15595)
        - [Peng et al., 2023 (YaRN)](https://arxiv.org/abs/2309.00071)
        - [Ding et al., 2024 (LongRoPE)](https://arxiv.org/abs/2402.13753)
        - [Llama 3, 2024](https://arxiv.org/abs/2407.21783)
    """

    def __init__(
        self, max_wavelength=10000, scaling=None, fraction=1.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.max_wavelength = positive_number("max_wavelength", max_wavelength)
        self.scaling = _check_scaling(scaling)
        self.fraction = _check_fraction(fraction)
        # Each position is rotated alone: a padding mask passes through.
        self.supports_masking = True
        self.built = True

    def inverse_frequencies(self, head_dim, length):
        """The rotation speed of each channel pair, `(head_dim // 2,)`, for
        rotated channels `head_dim` and a current length `length`."""
        if self.scaling is None:
            return _inverse_frequencies(float(self.max_wavelength), head_dim)
        function = SCALINGS[self.scaling["type"]].frequencies
        return function(
            float(self.max_wavelength), head_dim, length, self.scaling
        )

    def attention_factor(self):
        """The number cos and sin are multiplied by (YaRN, LongRoPE)."""
        if self.scaling is None:
            return 1.0
        default = SCALINGS[self.scaling["type"]].attention_factor
        if default is None:
            return 1.0
        given = self.scaling["attention_factor"]
        return default(self.scaling) if given is None else given

    def rotated_channels(self, head_dim):
        """How many channels of a head of `head_dim` are rotated."""
        channels = int(head_dim * self.fraction)
        if channels == 0 or channels % 2:
            raise ValueError(
                "RotaryEmbedding rotates an even, nonzero number of channels "
                f"per head: int(head_dim * fraction) = {channels}, with "
                f"head_dim={head_dim} and fraction={self.fraction}."
            )
        return channels

    def call(self, inputs, start_index=0):
        check_rank("inputs", inputs.shape, 4, "(batch, seq, heads, head_dim)")
        head_dim = inputs.shape[-1]
        channels = self.rotated_channels(head_dim)
        seq = ops.shape(inputs)[1]
        positions = ops.cast(ops.arange(seq) + start_index, "float32")
        inverse = self.inverse_frequencies(channels, start_index + seq)
        angles = positions[:, None] * inverse[None, :]  # (seq, channels / 2)
        angles = ops.concatenate([angles, angles], axis=-1)[None, :, None, :]
        factor = self.attention_factor()
        cos = ops.cast(ops.cos(angles) * factor, inputs.dtype)
        sin = ops.cast(ops.sin(angles) * factor, inputs.dtype)
        rotary, passed = inputs[..., :channels], inputs[..., channels:]
        first_half, second_half = ops.split(rotary, 2, axis=-1)
        rotated_half = ops.concatenate([-second_half, first_half], axis=-1)
        rotary = rotary * cos + rotated_half * sin
        if channels == head_dim:
            return rotary
        return ops.concatenate([rotary, passed], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "max_wavelength": self.max_wavelength,
            "scaling": self.scaling,
            "fraction": self.fraction,
        }


def _check_fraction(fraction):
    number = isinstance(fraction, numbers.Real) and not isinstance(
        fraction, bool
    )
    if not number or not 0 < fraction <= 1:
        raise ValueError(
            "`fraction` must be a number in (0, 1], the part of each head "
            f"that is rotated. Received: fraction={fraction!r}"
        )
    return float(fraction)


ROTARY_KEYS = ("max_wavelength", "scaling", "fraction")


def rotary_options(rotary, max_wavelength=None):
    """The `RotaryEmbedding` config that an attention layer's `rotary` means.

    Args:
        rotary: `None` or `False` for no rotary embedding; `True` for the
            default one; or a dict of `RotaryEmbedding` arguments
            (`max_wavelength`, `scaling`, `fraction`).
        max_wavelength: The legacy `rotary_max_wavelength` argument; when
            not `None`, it overrides the dict's or the default's value.

    Returns:
        `None`, or a complete JSON-serializable dict
        `{"max_wavelength": ..., "scaling": ..., "fraction": ...}`,
        validated.

    Example:

    ```python
    from keras_tfm.layers.rotary import rotary_options

    rotary_options(True)
    # {"max_wavelength": 10000, "scaling": None, "fraction": 1.0}
    rotary_options({"scaling": {"type": "linear", "factor": 2}})
    ```
    """
    if rotary is None or rotary is False:
        return None
    if rotary is True:
        rotary = {}
    if not isinstance(rotary, dict):
        raise ValueError(
            f"`rotary` must be None, a bool, or a dict with the keys "
            f"{list(ROTARY_KEYS)}. Received: rotary={rotary!r}"
        )
    for key in rotary:
        if key not in ROTARY_KEYS:
            raise ValueError(
                f"`rotary` takes the keys {list(ROTARY_KEYS)}; unknown key "
                f"{key!r}. Received: rotary={rotary!r}"
            )
    if max_wavelength is None:
        max_wavelength = rotary.get("max_wavelength", 10000)
    return {
        "max_wavelength": positive_number("max_wavelength", max_wavelength),
        "scaling": _check_scaling(rotary.get("scaling")),
        "fraction": _check_fraction(rotary.get("fraction", 1.0)),
    }

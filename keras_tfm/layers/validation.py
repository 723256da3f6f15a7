"""Argument checks shared by every layer.

Each check raises a `ValueError` that names the argument, shows the value
received and says what was expected, so that bad input never surfaces as a
backend stack trace.
"""

import numbers

import keras
from keras import ops


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )


def check_non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"`{name}` must be a non-negative integer. Received: "
            f"{name}={value!r}"
        )


def positive_number(name, value):
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


def check_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"`{name}` must be a number in [0, 1). Received: {name}={value!r}"
        )
    if not 0 <= value < 1:
        raise ValueError(
            f"`{name}` must be in [0, 1). Received: {name}={value!r}"
        )


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {list(choices)}. "
            f"Received: {name}={value!r}"
        )


def check_rank(name, shape, rank, description):
    if len(shape) != rank:
        raise ValueError(
            f"`{name}` must have rank {rank} {description}. "
            f"Received: {name}.shape={tuple(shape)}"
        )


def check_shape(name, shape, expected, description):
    """Checks `shape` against `expected`, where `None` matches any size."""
    shape = tuple(shape)
    matches = len(shape) == len(expected) and all(
        want is None or got is None or want == got
        for got, want in zip(shape, expected, strict=True)
    )
    if not matches:
        raise ValueError(
            f"`{name}` must have shape {description} = {tuple(expected)}. "
            f"Received: {name}.shape={shape}"
        )


def check_divisible(name, value, divisor_name, divisor):
    if value % divisor != 0:
        raise ValueError(
            f"`{name}` ({value}) must be divisible by `{divisor_name}` "
            f"({divisor})."
        )


def eager_values(tensor):
    """The NumPy values of `tensor`, or `None` where they are not known.

    Inside a compiled function (`jax.jit`, `tf.function`, a symbolic Keras
    model) a tensor has a shape but no values, so value checks are skipped
    there.
    """
    if keras.backend.is_keras_tensor(tensor):
        return None
    try:
        return ops.convert_to_numpy(tensor)
    except Exception:  # A traced tensor refuses conversion on every backend.
        return None

import importlib.metadata
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the float32 policy and a fixed seed."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def assert_same_updates(start, expected, actual):
    """Every weight moved from `start` by the same update in both runs.

    Sums over devices add in another order, so an update may differ in its
    last float32 digits; a missing or doubled reduction changes it by half
    or more.
    """
    for first, want, got in zip(start, expected, actual, strict=True):
        error = np.linalg.norm((got - first) - (want - first))
        assert error <= 1e-2 * np.linalg.norm(want - first) + 1e-6, error


def installed_version(package):
    """`(major, minor)` of an installed package, or None."""
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in version.split(".")[:2])


def random_inputs(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.fixture(params=["fused", "explicit"])
def attention_path(request, monkeypatch):
    """Runs a test through `ops.dot_product_attention` and through the
    explicit formula, whichever this machine would pick by default."""
    from keras_tfm.layers import kernels

    monkeypatch.setattr(
        kernels,
        "explicit_attention_is_faster",
        lambda query, key: request.param == "explicit",
    )
    return request.param


def cpu_devices(count):
    """The environment of a JAX process that sees `count` CPU devices,
    keeping the XLA flags this run was given (the Makefile's)."""
    flags = os.environ.get("XLA_FLAGS", "")
    return {
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={count}",
        "JAX_PLATFORMS": "cpu",
    }


def run_module(module, *arguments, env=None, timeout=600):
    """Runs `python -m MODULE ARGUMENTS` from the repository root.

    For tests that need a fresh process: another backend, another device
    count, or imports done once for several runs. `env` adds to the current
    environment, whose `KERAS_BACKEND` defaults to this run's backend.
    """
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, arguments)],
        cwd=ROOT,
        env={
            **os.environ,
            "KERAS_BACKEND": keras.backend.backend(),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )

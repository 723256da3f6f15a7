"""`keras_tfm.distribution`: data and model parallelism on 8 CPU devices.

The JAX test runs this file as a script in a subprocess, because the number
of virtual CPU devices is fixed when JAX starts.
"""

import re

import keras
import numpy as np
import pytest

from keras_tfm import distribution, models
from tests.conftest import (
    assert_same_updates,
    cpu_devices,
    installed_version,
    run_module,
)

DEVICES = 8
MESH_SHAPE = (2, 4)
BATCH = 8
# Weights the layout map leaves whole on purpose: small vectors.
REPLICATED = re.compile(r".*(norm/(gamma|beta|scale)|/bias)")


def builders():
    """`(name, model function, inputs, targets, loss)` for every builder."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 30, (BATCH, 8))
    small = {
        "num_layers": 1,
        "embed_dim": 16,
        "num_heads": 4,
        "ff_dim": 32,
        "dropout": 0.0,  # random masks differ when sharded
    }
    return [
        (
            "causal_lm",
            lambda: models.causal_lm(30, 8, activation="swiglu", **small),
            tokens,
            tokens,
            "sparse_categorical_crossentropy",
        ),
        (
            "seq2seq_transformer",
            lambda: models.seq2seq_transformer(30, 8, norm_first=True, **small),
            {"encoder_tokens": tokens, "decoder_tokens": tokens[:, ::-1]},
            tokens,
            "sparse_categorical_crossentropy",
        ),
        (
            "masked_lm",
            lambda: models.masked_lm(30, 8, **small),
            {"tokens": tokens, "mask_positions": tokens[:, :3] % 8},
            tokens[:, 3:6],
            "sparse_categorical_crossentropy",
        ),
        (
            "text_classifier",
            lambda: models.text_classifier(30, 8, 3, **small),
            tokens,
            tokens[:, 0] % 3,
            "sparse_categorical_crossentropy",
        ),
        (
            "vit_classifier",
            lambda: models.vit_classifier(8, 4, 3, channels=1, **small),
            rng.normal(size=(BATCH, 8, 8, 1)),
            tokens[:, 0] % 3,
            "sparse_categorical_crossentropy",
        ),
        (
            "forecaster",
            lambda: models.forecaster(8, 2, **small),
            rng.normal(size=(BATCH, 8, 1)),
            rng.normal(size=(BATCH, 2, 1)),
            "mse",
        ),
    ]


def run(model, inputs, targets, loss):
    """One training step's loss and the new weights."""
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    step_loss = model.train_on_batch(inputs, targets)
    return step_loss, model.get_weights()


def assert_same_step(before, expected, results):
    """Same loss, and each weight moved by the same update."""
    expected_loss, expected_weights = expected
    loss, weights = results
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-4)
    assert_same_updates(before, expected_weights, weights)


def check_shardings(model, layouts):
    """Every weight is sharded as the map says, or is meant to be whole."""
    for weight in model.weights:
        spec = tuple(weight.value.sharding.spec)
        spec += (None,) * (len(weight.shape) - len(spec))
        layout = layouts[weight.path]
        if layout is None:
            assert REPLICATED.fullmatch(weight.path), (
                f"{weight.path} is not in the layout map"
            )
            assert set(spec) == {None}, weight.path
        else:
            assert spec == tuple(layout.axes), (weight.path, spec)
            assert "model" in spec, weight.path


def main():
    """Runs every builder on one device, then under both distributions."""
    devices = keras.distribution.list_devices()
    assert len(devices) == DEVICES, devices
    mesh = keras.distribution.DeviceMesh(
        MESH_SHAPE, ("batch", "model"), devices
    )
    layouts = distribution.layout_map(mesh)
    strategies = {
        "data": keras.distribution.DataParallel(devices=devices),
        "model": keras.distribution.ModelParallel(
            layout_map=layouts, batch_dim_name="batch"
        ),
    }
    for name, build, inputs, targets, loss in builders():
        single = build()
        weights = single.get_weights()
        expected = run(single, inputs, targets, loss)
        for mode, strategy in strategies.items():
            with strategy.scope():
                model = build()
                model.set_weights(weights)
                results = run(model, inputs, targets, loss)
            assert_same_step(weights, expected, results)
            if mode == "model":
                check_shardings(model, layouts)
            print(f"{name} {mode}: same step loss and weights")


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution runs models on the JAX backend only",
)
@pytest.mark.skipif(
    installed_version("keras") < (3, 15),
    reason="before 3.15, Keras's JAX trainer fails on `train_on_batch` "
    "without sample weights under a distribution",
)
def test_both_distributions_match_one_device_on_8_cpus():
    result = run_module(
        "tests.test_distribution",
        env=cpu_devices(DEVICES),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("same step loss") == 2 * len(builders())


@pytest.mark.skipif(
    keras.backend.backend() == "jax", reason="checks the non-JAX error"
)
def test_layout_map_names_the_backend_it_needs():
    # Keras cannot list devices for distribution on PyTorch: name one.
    mesh = keras.distribution.DeviceMesh((1, 1), ("batch", "model"), ["cpu:0"])
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        distribution.layout_map(mesh)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX only")
def test_layout_map_rejects_a_bad_mesh_or_axis():
    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((len(devices),), ("batch",), devices)
    with pytest.raises(ValueError, match="`model_axis`"):
        distribution.layout_map(mesh)
    with pytest.raises(ValueError, match="`device_mesh` must be"):
        distribution.layout_map((2, 4))


if __name__ == "__main__":
    main()

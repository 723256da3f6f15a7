"""The kernel rules of `keras_tfm.layers.kernels`: which path runs where,
and that every path computes the same attention."""

import keras
import numpy as np
import pytest

from keras_tfm import MultiHeadSelfAttention
from keras_tfm.layers import kernels
from tests.conftest import random_inputs, to_numpy

BATCH, LENGTH, WIDTH = 2, 6, 12


@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="PyTorch's CPU rule"
)
def test_torch_cpu_takes_the_explicit_path_for_short_bfloat16_keys():
    import torch

    from keras_tfm.layers.kernels import explicit_attention_is_faster

    if torch.cuda.is_available():
        pytest.skip("the rule is for PyTorch's CPU kernel")
    short = keras.ops.zeros((2, 128, 2, 8), "bfloat16")
    long = keras.ops.zeros((2, 256, 2, 8), "bfloat16")
    assert explicit_attention_is_faster(short, short)
    assert explicit_attention_is_faster(short[:, :1], short)  # one query
    assert not explicit_attention_is_faster(long, long)
    as_float32 = keras.ops.cast(short, "float32")
    assert not explicit_attention_is_faster(as_float32, as_float32)


@pytest.mark.parametrize(
    "options",
    [{}, {"num_kv_heads": 1}, {"use_bias": False}, {"use_bias": ["query"]}],
    ids=str,
)
def test_joined_projections_equal_the_three_layers(monkeypatch, options):
    x = random_inputs(BATCH, LENGTH, WIDTH)
    layer = MultiHeadSelfAttention(2, **options)
    layer.build(x.shape)
    outputs = {}
    for joined in (True, False):
        monkeypatch.setattr(
            kernels, "fuses_projections", lambda size, joined=joined: joined
        )
        outputs[joined] = [to_numpy(part) for part in layer._project(x)]
    for got, want in zip(outputs[True], outputs[False], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_projections_with_lora_go_through_their_layers(monkeypatch):
    monkeypatch.setattr(kernels, "fuses_projections", lambda size: True)
    x = random_inputs(BATCH, LENGTH, WIDTH)
    layer = MultiHeadSelfAttention(2)
    layer.build(x.shape)
    layer.query_dense.enable_lora(2)
    calls = []
    monkeypatch.setattr(
        type(layer.query_dense),
        "call",
        lambda self, inputs, training=None: (
            calls.append(self.name)
            or keras.ops.einsum(self.equation, inputs, self.kernel)
        ),
    )
    layer._project(x)
    assert calls == ["query", "key", "value"]


def test_only_pytorch_joins_projections_and_only_small_ones():
    on_torch = keras.backend.backend() == "torch"
    largest = kernels.FUSED_PROJECTION_MAX_SIZE
    assert kernels.fuses_projections(largest) == on_torch
    assert not kernels.fuses_projections(largest + 1)

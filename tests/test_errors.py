"""Bad input raises a ValueError that names the argument and the value."""

import os
import sys
import zipfile

import keras
import numpy as np
import pytest

from keras_tfm import (
    DecoderBlock,
    EncoderBlock,
    FeedForward,
    MultiHeadCrossAttention,
    MultiHeadSelfAttention,
    PositionalEmbedding,
    RotaryEmbedding,
    SinusoidalEncoding,
)

X = np.zeros((2, 5, 12), "float32")


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: MultiHeadSelfAttention(0), "num_heads=0"),
        (
            lambda: MultiHeadSelfAttention(6, num_kv_heads=4),
            "`num_kv_heads` (4)",
        ),
        (lambda: MultiHeadSelfAttention(2, dropout=1.5), "dropout=1.5"),
        (lambda: MultiHeadSelfAttention(2, key_dim=-1), "key_dim=-1"),
        (lambda: FeedForward(8, activation="tanh"), "activation='tanh'"),
        (lambda: FeedForward(0), "hidden_dim=0"),
        (lambda: EncoderBlock(2, 8, norm="batch"), "norm['type']='batch'"),
        (lambda: EncoderBlock(2, 8, activation="elu"), "activation='elu'"),
        (lambda: DecoderBlock(2, "8"), "ff_dim='8'"),
        (
            lambda: PositionalEmbedding(10, 8, 4, position="alibi"),
            "position='alibi'",
        ),
        (lambda: PositionalEmbedding(10, 0, 4), "sequence_length=0"),
        (lambda: SinusoidalEncoding(max_wavelength=0), "max_wavelength=0"),
    ],
)
def test_bad_constructor_arguments(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


def test_width_not_divisible_by_heads():
    with pytest.raises(
        ValueError, match=r"input width` \(12\).*`num_heads` \(5\)"
    ):
        MultiHeadSelfAttention(5)(X)
    with pytest.raises(ValueError, match="num_heads"):
        EncoderBlock(5, 8)(X)


@pytest.mark.parametrize(
    "layer",
    [MultiHeadSelfAttention(2), EncoderBlock(2, 8), FeedForward(8)],
    ids=lambda layer: type(layer).__name__,
)
def test_wrong_rank(layer):
    with pytest.raises(ValueError, match=r"`x` must have rank 3.*\(2, 12\)"):
        layer(np.zeros((2, 12), "float32"))


def test_rotary_needs_even_head_dim_and_rank_4():
    with pytest.raises(
        ValueError, match=r"even, nonzero number of channels.*head_dim=5"
    ):
        RotaryEmbedding()(np.zeros((1, 2, 3, 5), "float32"))
    with pytest.raises(ValueError, match="`inputs` must have rank 4"):
        RotaryEmbedding()(X)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            {"padding_mask": np.ones((2, 4))},
            r"`padding_mask` must have shape .*\(2, 4\)",
        ),
        ({"padding_mask": np.ones((2, 5, 5))}, r"`padding_mask`.*\(2, 5, 5\)"),
        ({"attention_mask": np.ones((2, 5))}, r"`attention_mask`.*\(2, 5\)"),
        (
            {"attention_mask": np.ones((2, 5, 6))},
            r"`attention_mask`.*\(2, 5, 6\)",
        ),
    ],
)
def test_masks_of_the_wrong_shape(kwargs, message):
    for layer in (MultiHeadSelfAttention(2), EncoderBlock(2, 8)):
        with pytest.raises(ValueError, match=message):
            layer(X, **kwargs)


def test_cross_attention_inputs():
    context = np.zeros((2, 7, 12), "float32")
    layer = MultiHeadCrossAttention(2)
    with pytest.raises(ValueError, match=r"`context_padding_mask`.*\(2, 5\)"):
        layer(X, context, context_padding_mask=np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"same batch size.*\(3, 7, 12\)"):
        layer(X, np.zeros((3, 7, 12), "float32"))


def test_decoder_context_must_match_cross_attention_option():
    with pytest.raises(ValueError, match="`context`.*context=None"):
        DecoderBlock(2, 8)(X)
    with pytest.raises(ValueError, match="cross_attention=False"):
        DecoderBlock(2, 8, cross_attention=False)(X, X)


def test_positional_embedding_rejects_long_and_float_inputs():
    layer = PositionalEmbedding(10, 4, 8)
    with pytest.raises(
        ValueError, match=r"inputs.shape\[1\]=5.*`sequence_length`=4"
    ):
        layer(np.ones((2, 5), "int32"))
    with pytest.raises(ValueError, match=r"start_index=2.*`sequence_length`=4"):
        layer(np.ones((2, 3), "int32"), start_index=2)
    with pytest.raises(ValueError, match="integer token ids.*float32"):
        layer(np.ones((2, 3), "float32"))
    with pytest.raises(ValueError, match="`inputs` must have rank 2"):
        layer(np.ones((2, 3, 1), "int32"))
    # The layer is still usable after the errors.
    assert tuple(layer(np.ones((2, 4), "int32")).shape) == (2, 4, 8)


def test_token_ids_out_of_range_in_eager_calls():
    embedding = PositionalEmbedding(10, 8, 4)
    for tokens in ([[1, 2, 10]], [[-1, 2, 3]]):
        with pytest.raises(ValueError, match=r"\[0, vocab_size=10\).*from"):
            embedding(np.array(tokens))
    assert embedding(np.array([[1, 2, 9]])).shape == (1, 3, 4)  # still usable


def test_float_masks_are_refused():
    attention = MultiHeadSelfAttention(2)
    x = np.zeros((1, 3, 4), "float32")
    additive = np.array([[0.0, 0.0, -np.inf]], "float32")
    with pytest.raises(
        ValueError, match=r"`padding_mask` must be boolean.*float32"
    ):
        attention(x, padding_mask=additive)
    with pytest.raises(ValueError, match=r"`attention_mask` must be boolean"):
        attention(x, attention_mask=np.ones((1, 3, 3), "float32"))
    assert attention(x, padding_mask=additive == 0).shape == (1, 3, 4)


def test_a_corrupted_keras_file_raises_and_loads_nothing(tmp_path):
    model = keras.Sequential(
        [keras.Input((4,), dtype="int32"), PositionalEmbedding(10, 4, 8)]
    )
    path = tmp_path / "model.keras"
    model.save(path)
    data = path.read_bytes()
    for name, content in [
        ("truncated", data[: len(data) // 2]),
        ("garbage", b"not a keras file" * 64),
    ]:
        broken = tmp_path / f"{name}.keras"
        broken.write_bytes(content)
        with pytest.raises((ValueError, OSError, zipfile.BadZipFile)):
            keras.models.load_model(broken)


def test_forecast_data_preparation_rejects_nan():
    sys.path.insert(
        0, os.path.join(os.path.dirname(__file__), os.pardir, "examples")
    )
    try:
        from forecast import make_windows
    finally:
        sys.path.pop(0)
    series = np.ones((40, 1), "float32")
    series[17, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*time step 17, feature 0"):
        make_windows(series, input_length=8, horizon=2)
    assert make_windows(np.ones((40, 1)), 8, 2)[0].shape == (31, 8, 1)


def test_a_missing_optional_library_names_its_extra(monkeypatch):
    from keras_tfm import visualize

    # A None entry in sys.modules makes `import matplotlib` fail.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'keras_tfm\[docs\]'"):
        visualize.plot_positional_encoding(length=8, dim=8)

"""`keras_tfm.interop`: PyTorch's layers and keras_tfm's compute the same.

Runs under every Keras backend: torch is installed alongside, not active.
"""

import keras
import numpy as np
import pytest

from keras_tfm import (
    DecoderBlock,
    EncoderBlock,
    MultiHeadCrossAttention,
    MultiHeadSelfAttention,
    interop,
    models,
)
from tests.conftest import random_inputs, to_numpy

torch = pytest.importorskip("torch")
nn = torch.nn

CONFIGS = [
    {"width": 16, "heads": 4, "ff": 32, "norm_first": False,
     "activation": "relu", "batch_first": True},
    {"width": 24, "heads": 3, "ff": 40, "norm_first": True,
     "activation": "gelu", "batch_first": False},
    {"width": 8, "heads": 1, "ff": 12, "norm_first": True,
     "activation": "relu", "batch_first": True},
]  # fmt: skip
# Real tokens, then padding (False); every sequence has a real token.
PADDING = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], bool)
ATOL = 1e-5


def run_torch(module, batch_first, *inputs, **masks):
    """Calls `module` on batch-first NumPy inputs; batch-first NumPy out."""
    tensors = [torch.from_numpy(x) for x in inputs]
    if not batch_first:
        tensors = [t.transpose(0, 1) for t in tensors]
    with torch.no_grad():
        outputs = module(*tensors, **masks)
    if isinstance(outputs, tuple):
        outputs = outputs[0]
    if not batch_first:
        outputs = outputs.transpose(0, 1)
    return outputs.numpy()


def causal_torch_mask(length):
    return nn.Transformer.generate_square_subsequent_mask(length)


def torch_layer(layer_class, config):
    """A `TransformerEncoderLayer` or `TransformerDecoderLayer`, eval mode."""
    return layer_class(
        config["width"],
        config["heads"],
        config["ff"],
        activation=config["activation"],
        norm_first=config["norm_first"],
        batch_first=config["batch_first"],
    ).eval()


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


@pytest.mark.parametrize("config", CONFIGS)
def test_encoder_block_matches_torch_encoder_layer(config):
    module = torch_layer(nn.TransformerEncoderLayer, config)
    block = interop.from_torch(module)
    x = random_inputs(2, 6, config["width"])
    expected = run_torch(
        module, config["batch_first"], x, src_key_padding_mask=
        torch.from_numpy(~PADDING),
    )  # fmt: skip
    outputs = to_numpy(block(x, padding_mask=PADDING))
    # PyTorch's fast path zeroes padding outputs; real tokens must agree.
    np.testing.assert_allclose(outputs[PADDING], expected[PADDING], atol=ATOL)


@pytest.mark.parametrize("config", CONFIGS)
def test_decoder_block_matches_torch_decoder_layer(config):
    module = torch_layer(nn.TransformerDecoderLayer, config)
    block = interop.from_torch(module)
    x = random_inputs(2, 5, config["width"])
    context = random_inputs(2, 6, config["width"], seed=1)
    expected = run_torch(
        module, config["batch_first"], x, context,
        tgt_mask=causal_torch_mask(5), tgt_is_causal=True,
        memory_key_padding_mask=torch.from_numpy(~PADDING),
    )  # fmt: skip
    outputs = block(x, context, context_padding_mask=PADDING)
    np.testing.assert_allclose(to_numpy(outputs), expected, atol=ATOL)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_attention_matches_torch_multihead_attention(batch_first, bias):
    module = nn.MultiheadAttention(
        16, 4, bias=bias, batch_first=batch_first
    ).eval()
    x = random_inputs(2, 6, 16)
    context = random_inputs(2, 6, 16, seed=1)

    causal = interop.from_torch(module, causal=True)
    expected = run_torch(
        module, batch_first, x, x, x, attn_mask=causal_torch_mask(6),
        need_weights=False,
    )  # fmt: skip
    np.testing.assert_allclose(to_numpy(causal(x)), expected, atol=ATOL)

    cross = MultiHeadCrossAttention(4, use_bias=bias)
    cross.build(x.shape, context.shape)
    interop.load_torch(cross, module)
    expected = run_torch(
        module, batch_first, x, context, context,
        key_padding_mask=torch.from_numpy(~PADDING), need_weights=False,
    )  # fmt: skip
    outputs = cross(x, context, context_padding_mask=PADDING)
    np.testing.assert_allclose(to_numpy(outputs), expected, atol=ATOL)


def test_mismatched_layers_and_modules_are_rejected():
    encoder_layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    with pytest.raises(ValueError, match="must be built"):
        interop.load_torch(EncoderBlock(4, 32), encoder_layer)
    wrong_ff = EncoderBlock(4, 64)
    wrong_ff.build((None, None, 16))
    with pytest.raises(
        ValueError,
        match="`layer` has ff_dim=64 but the PyTorch module needs 32",
    ):
        interop.load_torch(wrong_ff, encoder_layer)
    decoder = DecoderBlock(4, 32)
    decoder.build((None, None, 16), (None, None, 16))
    with pytest.raises(ValueError, match="TransformerDecoderLayer"):
        interop.load_torch(decoder, encoder_layer)
    attention = MultiHeadSelfAttention(2)
    attention.build((None, None, 16))
    with pytest.raises(ValueError, match="2 heads and `module` 4"):
        interop.load_torch(attention, nn.MultiheadAttention(16, 4))
    with pytest.raises(ValueError, match="`module` must be"):
        interop.from_torch(nn.Linear(4, 4))
    swish = nn.TransformerEncoderLayer(16, 4, 32, activation=nn.SiLU())
    with pytest.raises(ValueError, match="`relu` or `gelu`"):
        interop.from_torch(swish)


@pytest.mark.parametrize("norm_first", [True, False])
def test_seq2seq_blocks_match_torch_transformer(norm_first):
    transformer = nn.Transformer(
        d_model=16, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
        dim_feedforward=32, norm_first=norm_first, batch_first=True,
    ).eval()  # fmt: skip
    model = models.seq2seq_transformer(
        vocab_size=30, sequence_length=8, num_layers=2, embed_dim=16,
        num_heads=4, ff_dim=32, norm_first=norm_first, final_norm=True,
    )  # fmt: skip
    interop.load_torch_transformer(model, transformer)
    tokens = {
        "encoder_tokens": np.array([[3, 4, 5, 6, 7, 8], [9, 10, 11, 0, 0, 0]]),
        "decoder_tokens": np.array([[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]]),
    }
    layers = [model.encoder_dropout, model.decoder_dropout, model.decoder_norm]
    source, target, decoded = keras.Model(
        model.inputs, [layer.output for layer in layers]
    )(tokens)
    with torch.no_grad():
        expected = transformer(
            torch.from_numpy(to_numpy(source)),
            torch.from_numpy(to_numpy(target)),
            tgt_mask=causal_torch_mask(5),
            tgt_is_causal=True,
            src_key_padding_mask=torch.from_numpy(~PADDING),
            memory_key_padding_mask=torch.from_numpy(~PADDING),
        )
    np.testing.assert_allclose(to_numpy(decoded), expected.numpy(), atol=ATOL)


def test_a_seq2seq_without_final_norms_cannot_take_a_torch_transformer():
    model = models.seq2seq_transformer(
        vocab_size=30, sequence_length=8, num_layers=1, embed_dim=16,
        num_heads=4, ff_dim=32,
    )  # fmt: skip
    transformer = nn.Transformer(16, 4, 1, 1, 32, batch_first=True)
    with pytest.raises(ValueError, match="stack_norms=True"):
        interop.load_torch_transformer(model, transformer)

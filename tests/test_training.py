"""Functional models built from the blocks train with model.fit."""

import keras
import numpy as np
import pytest

from keras_tfm import DecoderBlock, EncoderBlock, PositionalEmbedding

VOCAB, LENGTH, WIDTH = 12, 8, 16


def classifier():
    tokens = keras.Input((LENGTH,), dtype="int32")
    x = PositionalEmbedding(VOCAB, LENGTH, WIDTH, mask_zero=True)(tokens)
    x = EncoderBlock(2, 32, dropout=0.0)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(2)(x))


def classification_data(count=128):
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, VOCAB, size=(count, LENGTH))
    tokens[:, 6:] = 0  # padding
    labels = (tokens[:, 0] > tokens[:, 1]).astype("int32")
    return tokens, labels


def seq2seq():
    source = keras.Input((LENGTH,), dtype="int32", name="encoder_tokens")
    target = keras.Input((LENGTH,), dtype="int32", name="decoder_tokens")
    encoded = PositionalEmbedding(VOCAB, LENGTH, WIDTH, mask_zero=True)(source)
    encoded = EncoderBlock(2, 32, dropout=0.0)(encoded)
    decoded = PositionalEmbedding(VOCAB, LENGTH, WIDTH, mask_zero=True)(target)
    decoded = DecoderBlock(2, 32, dropout=0.0)(decoded, encoded)
    logits = keras.layers.Dense(VOCAB)(decoded)
    return keras.Model([source, target], logits)


def reverse_task(count=128):
    """Copy the source backwards: the decoder must read the encoder."""
    rng = np.random.default_rng(1)
    source = rng.integers(3, VOCAB, size=(count, LENGTH))
    reversed_source = source[:, ::-1]
    start = np.full((count, 1), 1)
    decoder_input = np.concatenate([start, reversed_source[:, :-1]], axis=1)
    return (source, decoder_input), reversed_source


TASKS = {
    "encoder_classifier": (classifier, classification_data),
    "encoder_decoder": (seq2seq, reverse_task),
}


@pytest.mark.parametrize("jit_compile", [True, False])
@pytest.mark.parametrize("task", TASKS)
def test_loss_falls(task, jit_compile):
    if jit_compile and keras.backend.backend() == "torch":
        # torch.compile spent about 90 s compiling this training step on a
        # 2-core CPU; test_attention.py compiles a prediction with it.
        pytest.skip("torch.compile training is too slow for the CI budget")
    build, make_data = TASKS[task]
    model = build()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    inputs, targets = make_data()
    history = model.fit(inputs, targets, epochs=8, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses

"""Train a tiny encoder-decoder to reverse digit strings, then decode.

The smallest end-to-end use of keras_tfm: embeddings, an encoder block, a
decoder block with cross-attention, `model.fit`, and greedy decoding. The
data is generated here, so nothing is downloaded.

    python examples/reverse_demo.py [--epochs 12]
"""

import argparse

import keras
import numpy as np

from keras_tfm import DecoderBlock, EncoderBlock, PositionalEmbedding

PAD, START = 0, 1
DIGITS = np.arange(2, 12)  # token ids of the digits 0-9
VOCAB, LENGTH, WIDTH = 12, 8, 64


def make_data(count, rng):
    """Source: 8 random digits. Target: the same digits, reversed."""
    source = rng.choice(DIGITS, size=(count, LENGTH))
    target = source[:, ::-1]
    decoder_input = np.concatenate(
        [np.full((count, 1), START), target[:, :-1]], axis=1
    )
    return {"encoder_tokens": source, "decoder_tokens": decoder_input}, target


def build_model():
    source = keras.Input((LENGTH,), dtype="int32", name="encoder_tokens")
    target = keras.Input((LENGTH,), dtype="int32", name="decoder_tokens")
    encoded = PositionalEmbedding(VOCAB, LENGTH, WIDTH, mask_zero=True)(source)
    encoded = EncoderBlock(num_heads=4, ff_dim=128, dropout=0.0)(encoded)
    decoded = PositionalEmbedding(VOCAB, LENGTH, WIDTH, mask_zero=True)(target)
    decoded = DecoderBlock(num_heads=4, ff_dim=128, dropout=0.0)(
        decoded, encoded
    )
    logits = keras.layers.Dense(VOCAB, name="logits")(decoded)
    return keras.Model([source, target], logits)


def greedy_decode(model, source):
    """Feeds the model its own predictions one position at a time."""
    decoder_tokens = np.zeros((len(source), LENGTH), "int32")
    decoder_tokens[:, 0] = START
    for position in range(LENGTH):
        logits = model.predict(
            {"encoder_tokens": source, "decoder_tokens": decoder_tokens},
            verbose=0,
        )
        next_tokens = logits[:, position].argmax(-1)
        if position + 1 < LENGTH:
            decoder_tokens[:, position + 1] = next_tokens
    return np.concatenate([decoder_tokens[:, 1:], next_tokens[:, None]], 1)


def digits(tokens):
    return "".join(str(token - DIGITS[0]) for token in tokens)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    train_inputs, train_targets = make_data(4096, rng)
    test_inputs, test_targets = make_data(256, rng)

    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    print(f"Backend: {keras.backend.backend()}")
    model.fit(
        train_inputs,
        train_targets,
        validation_data=(test_inputs, test_targets),
        epochs=args.epochs,
        batch_size=64,
        verbose=2,
    )

    predictions = greedy_decode(model, test_inputs["encoder_tokens"])
    exact = (predictions == test_targets).all(axis=1).mean()
    print(f"\nHeld-out exact match (greedy decoding): {exact:.1%}")
    for source, predicted in zip(
        test_inputs["encoder_tokens"][:3], predictions[:3], strict=True
    ):
        print(f"  {digits(source)} -> {digits(predicted)}")


if __name__ == "__main__":
    main()

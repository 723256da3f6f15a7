"""Train a small byte-level language model on Python's own source code.

Real text that ships with every Python install: the standard library's
`.py` files. A `models.causal_lm` with rotary position embeddings learns to
predict the next byte, then writes Python-looking text from a few prompts
with `keras_tfm.generation` (top-k sampling, key/value cache).

    python examples/generate_text.py               # about 10 minutes
    python examples/generate_text.py --text my.txt # your own UTF-8 text
"""

import glob
import os
import sysconfig
import time

import keras
import keras_hub
import numpy as np
from common import (
    DISTRIBUTE_ARGUMENT,
    batch_split,
    parse_arguments,
    progress_verbosity,
    save_figure,
    training_callbacks,
    use_distribution,
)

from keras_tfm import generation, models

SEQUENCE_LENGTH = 128
NUM_HEADS = 4
PROMPTS = ["def ", "class Stream", "import os\n\n", "    return "]


def standard_library_source(max_bytes):
    root = sysconfig.get_paths()["stdlib"]
    pieces, total = [], 0
    for path in sorted(glob.glob(os.path.join(root, "*.py"))):
        with open(path, encoding="utf-8", errors="ignore") as file:
            pieces.append(file.read())
        total += len(pieces[-1])
        if total >= max_bytes:
            break
    return "\n".join(pieces)[:max_bytes]


def training_windows(ids, count, rng):
    """Random windows; the target is the window shifted by one byte."""
    starts = rng.integers(0, len(ids) - SEQUENCE_LENGTH - 1, size=count)
    windows = np.stack([ids[s : s + SEQUENCE_LENGTH + 1] for s in starts])
    return windows[:, :-1], windows[:, 1:]


def complete(model, tokenizer, prompts, seed, new_bytes):
    """Each prompt followed by `new_bytes` sampled bytes (top-k, k=5).

    Decoding uses the key/value cache of `generation.generate`, compiled once.
    """
    encoded = [np.asarray(tokenizer(prompt), "int32") for prompt in prompts]
    # Under --distribute the batch of prompts must split evenly: repeat them.
    rows = -(-len(prompts) // batch_split()) * batch_split()
    encoded = [encoded[row % len(prompts)] for row in range(rows)]
    start = time.perf_counter()
    generated = generation.generate(
        model,
        encoded,
        max_new_tokens=new_bytes,
        sampler="top_k",
        k=5,
        temperature=0.8,
        seed=seed,
    )[: len(prompts)]
    seconds = time.perf_counter() - start
    print(f"\nGenerated {generated.size} bytes in {seconds:.1f} s "
          "(compilation included)")  # fmt: skip
    return [
        prompt + tokenizer.detokenize(row)
        for prompt, row in zip(prompts, generated, strict=True)
    ]


def plot_bits_per_byte(history):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for key, label in (("loss", "training"), ("val_loss", "held out")):
        axis.plot(epochs, np.array(history[key]) / np.log(2), "o-", label=label)
    axis.set_xlabel("epoch")
    axis.set_ylabel("bits per byte")
    axis.legend()
    figure.tight_layout()
    return figure


def main():
    args = parse_arguments(
        __doc__.splitlines()[0],
        epochs=8,
        text={"default": None, "help": "a UTF-8 text file to learn"},
        distribute=DISTRIBUTE_ARGUMENT,
    )
    use_distribution(args.distribute, NUM_HEADS)
    if args.text:
        with open(args.text, encoding="utf-8") as file:
            text = file.read()
    else:
        text = standard_library_source(200_000 if args.quick else 3_000_000)
    tokenizer = keras_hub.tokenizers.ByteTokenizer(lowercase=False)
    ids = np.asarray(tokenizer(text), "int32")
    rng = np.random.default_rng(args.seed)
    train_x, train_y = training_windows(ids, 256 if args.quick else 8192, rng)
    test_x, test_y = training_windows(ids, 64 if args.quick else 512, rng)
    print(f"{len(ids):,} bytes of text, {len(train_x)} training windows")

    model = models.causal_lm(
        vocab_size=256,
        sequence_length=SEQUENCE_LENGTH,
        num_layers=1 if args.quick else 3,
        embed_dim=64 if args.quick else 128,
        num_heads=NUM_HEADS,
        ff_dim=256 if not args.quick else 128,
        attention={"rotary": True},
        dropout=0.0,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        train_x,
        train_y,
        validation_data=(test_x, test_y),
        epochs=args.epochs,
        batch_size=32,
        callbacks=training_callbacks(args),
        verbose=progress_verbosity(),
    )
    bits = history.history["val_loss"][-1] / np.log(2)
    figure = plot_bits_per_byte(history.history)
    save_figure(figure, args.output_dir, "bits_per_byte")
    print(f"\nHeld-out loss: {bits:.2f} bits per byte (uniform: 8.00)")
    samples = complete(
        model, tokenizer, PROMPTS, args.seed, 24 if args.quick else 96
    )
    for prompt, sample in zip(PROMPTS, samples, strict=True):
        print(f"\n--- prompt {prompt!r}\n{sample.rstrip(chr(0))}")


if __name__ == "__main__":
    main()

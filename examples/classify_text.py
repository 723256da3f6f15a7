"""Classify Python standard-library docstrings by the package they document.

Real text that ships with every Python install: the docstrings of functions
and classes in eight standard-library packages (asyncio, email, http,
importlib, logging, multiprocessing, tkinter, xml), labelled with their
package. `models.text_classifier` is compared with a bag-of-words logistic
regression trained on the same split in the same script.

    python examples/classify_text.py               # about 3 minutes
    python examples/classify_text.py --texts my.tsv

`--texts` takes one example per line: the label, a tab, then the text.
"""

import keras
import numpy as np
from common import (
    DOCSTRING_PACKAGES,
    parse_arguments,
    progress_verbosity,
    read_labelled_texts,
    save_figure,
    standard_library_docstrings,
    training_callbacks,
    word_piece_tokenizer,
)

from keras_tfm import models

SEQUENCE_LENGTH = 128


def bag_of_words_baseline(train_ids, train_y, test_ids, test_y, vocab_size):
    """Logistic regression on which word pieces occur in each text."""

    def multi_hot(ids):
        bags = np.zeros((len(ids), vocab_size), "float32")
        rows = np.repeat(np.arange(len(ids)), ids.shape[1])
        bags[rows, ids.ravel()] = 1.0
        bags[:, 0] = 0.0  # padding
        return bags

    num_classes = int(train_y.max()) + 1
    model = keras.Sequential(
        [keras.Input((vocab_size,)), keras.layers.Dense(num_classes)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(multi_hot(train_ids), train_y, epochs=30, verbose=0)
    return model.evaluate(multi_hot(test_ids), test_y, verbose=0)[1]


def plot_confusion(labels, true, predicted):
    import matplotlib.pyplot as plt

    counts = np.zeros((len(labels), len(labels)), int)
    np.add.at(counts, (true, predicted), 1)
    figure, axis = plt.subplots(figsize=(6, 5))
    axis.imshow(counts, cmap="Blues")
    for (row, column), count in np.ndenumerate(counts):
        axis.text(column, row, count, ha="center", va="center", fontsize=8)
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted package")
    axis.set_ylabel("true package")
    axis.set_title("text_classifier on the test docstrings")
    figure.tight_layout()
    return figure


def main():
    args = parse_arguments(
        __doc__.splitlines()[0],
        epochs=20,
        texts={"default": None, "help": "label<TAB>text lines"},
    )
    examples = (
        read_labelled_texts(args.texts)
        if args.texts
        else standard_library_docstrings(DOCSTRING_PACKAGES)
    )
    np.random.default_rng(args.seed).shuffle(examples)
    if args.quick:
        examples = examples[:400]
    labels = sorted({label for label, _ in examples})
    y = np.array([labels.index(label) for label, _ in examples])
    texts = [text for _, text in examples]
    split = int(len(examples) * 0.8)
    tokenizer = word_piece_tokenizer(
        texts[:split], vocabulary_size=4000, sequence_length=SEQUENCE_LENGTH
    )
    ids = np.asarray(tokenizer(texts), "int32")
    train_ids, test_ids, train_y, test_y = (
        ids[:split],
        ids[split:],
        y[:split],
        y[split:],
    )
    vocab_size = tokenizer.vocabulary_size()
    print(
        f"{len(train_ids)} training texts, {len(test_ids)} test texts, "
        f"{len(labels)} classes, vocabulary of {vocab_size} word pieces"
    )

    model = models.text_classifier(
        vocab_size=vocab_size,
        sequence_length=SEQUENCE_LENGTH,
        num_classes=len(labels),
        num_layers=1 if args.quick else 2,
        embed_dim=64,
        num_heads=4,
        ff_dim=128,
        dropout=0.2,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(5e-4, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        train_ids,
        train_y,
        validation_data=(test_ids, test_y),
        epochs=args.epochs,
        batch_size=32,
        callbacks=training_callbacks(args, monitor="val_accuracy"),
        verbose=progress_verbosity(),
    )
    accuracy = model.evaluate(test_ids, test_y, verbose=0)[1]
    predicted = model.predict(test_ids, verbose=0).argmax(-1)
    figure = plot_confusion(labels, test_y, predicted)
    save_figure(figure, args.output_dir, "confusion")
    baseline = bag_of_words_baseline(
        train_ids, train_y, test_ids, test_y, vocab_size
    )
    majority = np.mean(test_y == np.bincount(train_y).argmax())
    print("\nTest accuracy:")
    print(f"  keras_tfm text_classifier        {accuracy:.1%}")
    print(f"  bag-of-words logistic regression {baseline:.1%}")
    print(f"  majority class                   {majority:.1%}")


if __name__ == "__main__":
    main()

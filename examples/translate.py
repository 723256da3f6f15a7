"""Translate dates written in words into ISO dates with a seq2seq Transformer.

The paper's task in small: "the twenty-fifth of march, two thousand three"
-> "2003-03-25". Sentence pairs are generated in code (so nothing is
downloaded), tokenised with one shared keras-hub WordPiece vocabulary, learned
by `models.seq2seq_transformer` with tied embeddings, and decoded greedily.

    python examples/translate.py                 # about 4 minutes on 2 cores
    python examples/translate.py --pairs spa.txt # your own tab-separated pairs

`--pairs` reads one pair per line, source and target separated by a tab (the
keras.io / Anki `spa.txt` format; further columns are ignored).
"""

import re

import keras
import numpy as np
from common import (
    DISTRIBUTE_ARGUMENT,
    parse_arguments,
    progress_verbosity,
    save_figure,
    training_callbacks,
    use_distribution,
    whole_batches,
    word_piece_tokenizer,
)

from keras_tfm import generation, models
from keras_tfm.visualize import plot_attention

MONTHS = [
    "january", "february", "march", "april", "may", "june", "july",
    "august", "september", "october", "november", "december",
]  # fmt: skip
ONES = [
    "", "one", "two", "three", "four", "five", "six", "seven", "eight",
    "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
    "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy",
        "eighty", "ninety"]  # fmt: skip
ORDINALS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[START]", "[END]"]
SEQUENCE_LENGTH = 24
NUM_HEADS = 4
BATCH_SIZE = 64


def number_words(number):
    """0 < number < 100 in words: 25 -> "twenty-five"."""
    if number < 20:
        return ONES[number]
    tens, ones = divmod(number, 10)
    return TENS[tens] + (f"-{ONES[ones]}" if ones else "")


def ordinal_words(number):
    """25 -> "twenty-fifth", 20 -> "twentieth"."""
    words = number_words(number)
    head, _, last = words.rpartition("-")
    if last in ORDINALS:
        last = ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head}-{last}" if head else last


def ordinal_digits(number):
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{'th' if 10 <= number % 100 <= 20 else suffix}"


def year_words(year):
    """1998 -> "nineteen ninety-eight", 2003 -> "two thousand three"."""
    century, rest = divmod(year, 100)
    if century == 20 and rest < 10:
        return "two thousand" + (f" {ONES[rest]}" if rest else "")
    if rest == 0:
        return f"{number_words(century)} hundred"
    if rest < 10:
        return f"{number_words(century)} oh {ONES[rest]}"
    return f"{number_words(century)} {number_words(rest)}"


def random_date_pair(rng):
    year = int(rng.integers(1900, 2100))
    month = int(rng.integers(1, 13))
    day = int(rng.integers(1, 29 if month == 2 else 31))
    name = MONTHS[month - 1]
    spoken_year = year_words(year) if rng.random() < 0.5 else str(year)
    source = rng.choice(
        [
            f"the {ordinal_words(day)} of {name}, {spoken_year}",
            f"{name} {day}, {spoken_year}",
            f"{day} {name} {spoken_year}",
            f"{name} the {ordinal_words(day)}, {spoken_year}",
            f"{ordinal_digits(day)} of {name} {spoken_year}",
            f"{name[:3]} {day} {year}",
        ]
    )
    return str(source), f"{year}-{month:02d}-{day:02d}"


def date_pairs(count, seed):
    rng = np.random.default_rng(seed)
    return [random_date_pair(rng) for _ in range(count)]


def read_pairs(path):
    with open(path, encoding="utf-8") as file:
        rows = [line.rstrip("\n").split("\t") for line in file]
    return [(row[0], row[1]) for row in rows if len(row) >= 2]


def encode(tokenizer, pairs):
    """Token ids for the encoder, the decoder input, and the target."""
    start, end = (tokenizer.token_to_id(t) for t in ("[START]", "[END]"))
    source = np.asarray(tokenizer([s for s, _ in pairs]), "int32")
    target = np.asarray(tokenizer([t for _, t in pairs]), "int32")
    # [START] t1 t2 ... for the decoder input, t1 t2 ... [END] as the label.
    lengths = (target != 0).sum(axis=1)
    decoder_input = np.concatenate(
        [np.full((len(pairs), 1), start, "int32"), target[:, :-1]], axis=1
    )
    labels = target.copy()
    labels[np.arange(len(pairs)), np.minimum(lengths, SEQUENCE_LENGTH - 1)] = (
        end
    )
    inputs = {"encoder_tokens": source, "decoder_tokens": decoder_input}
    return inputs, labels


def greedy_translate(model, tokenizer, encoder_tokens, max_length):
    """Translates with greedy decoding until [END] or `max_length` tokens.

    `generation.generate` decodes with a key/value cache: each step runs the
    decoder on the newest token only.
    """
    start, end = (tokenizer.token_to_id(t) for t in ("[START]", "[END]"))
    generated = generation.generate(
        model,
        {
            "encoder_tokens": encoder_tokens,
            "decoder_tokens": np.full((len(encoder_tokens), 1), start),
        },
        max_new_tokens=max_length - 1,
        end_token_id=end,
    )
    return [detokenize(tokenizer, row[row != end]) for row in generated]


def detokenize(tokenizer, ids):
    """Text as a person writes it: WordPiece splits punctuation into pieces
    of its own, and joining pieces with spaces gives "1989 - 06 - 17"."""
    ids = np.asarray(ids)
    text = str(keras.ops.convert_to_numpy(tokenizer.detokenize(ids[ids > 0])))
    text = re.sub(r" ?([-/:]) ?", r"\1", text.strip())
    return re.sub(r" ([,.;!?])", r"\1", text)


def same_text(a, b):
    """WordPiece puts spaces around punctuation: compare without spaces."""
    return "".join(a.split()) == "".join(b.split())


def plot_cross_attention(model, tokenizer, inputs, index=0):
    """What the last decoder block reads from the source, per target piece,
    on one held-out pair (teacher forcing), averaged over heads."""
    block = model.decoder_blocks[-1]
    inputs = {name: array[index : index + 1] for name, array in inputs.items()}
    # The last block's inputs: the previous block's output, the encoder's
    # and the source's padding mask.
    decoder_hidden, encoder_output, _ = keras.Model(model.inputs, block.input)(
        inputs
    )
    source, target = inputs["encoder_tokens"], inputs["decoder_tokens"]
    scores = block(
        decoder_hidden,
        encoder_output,
        padding_mask=target != 0,
        context_padding_mask=source != 0,
        return_attention_scores=True,
    ).cross_attention_scores
    source_length, target_length = (source != 0).sum(), (target != 0).sum()
    scores = keras.ops.convert_to_numpy(scores)[0].mean(axis=0)
    pieces = [tokenizer.id_to_token(int(i)) for i in source[0, :source_length]]
    targets = [tokenizer.id_to_token(int(i)) for i in target[0, :target_length]]
    return plot_attention(
        scores[:target_length, :source_length],
        targets,
        pieces,
        title="Cross-attention of the last decoder block (mean of heads)",
    )


def main():
    args = parse_arguments(
        __doc__.splitlines()[0],
        epochs=6,
        pairs={"default": None, "help": "tab-separated sentence pairs"},
        distribute=DISTRIBUTE_ARGUMENT,
    )
    use_distribution(args.distribute, NUM_HEADS)
    if args.pairs:
        pairs = read_pairs(args.pairs)
        np.random.default_rng(args.seed).shuffle(pairs)
    else:
        pairs = date_pairs(640 if args.quick else 24000, args.seed)
    held_out = max(len(pairs) // 10, 1)
    train_pairs = whole_batches(pairs[:-held_out], BATCH_SIZE)
    test_pairs = whole_batches(pairs[-held_out:], BATCH_SIZE)
    # One vocabulary for both languages, so the embeddings can be tied.
    tokenizer = word_piece_tokenizer(
        [text for pair in train_pairs for text in pair],
        vocabulary_size=1000,
        sequence_length=SEQUENCE_LENGTH,
        reserved_tokens=SPECIAL_TOKENS,
    )
    train_inputs, train_labels = encode(tokenizer, train_pairs)
    test_inputs, test_labels = encode(tokenizer, test_pairs)
    print(
        f"{len(train_pairs)} training pairs, {len(test_pairs)} held out, "
        f"vocabulary of {tokenizer.vocabulary_size()} word pieces"
    )

    width = 32 if args.quick else 64
    model = models.seq2seq_transformer(
        vocab_size=tokenizer.vocabulary_size(),
        sequence_length=SEQUENCE_LENGTH,
        num_layers=1 if args.quick else 2,
        embed_dim=width,
        num_heads=NUM_HEADS,
        ff_dim=2 * width,
        dropout=0.1,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=0
        ),
    )
    model.fit(
        train_inputs,
        train_labels,
        validation_data=(test_inputs, test_labels),
        epochs=args.epochs,
        batch_size=BATCH_SIZE,
        callbacks=training_callbacks(args),
        verbose=progress_verbosity(),
    )

    target_length = min(
        int((test_labels > 0).sum(axis=1).max()) + 1, SEQUENCE_LENGTH
    )
    translations = greedy_translate(
        model, tokenizer, test_inputs["encoder_tokens"], target_length
    )
    exact = np.mean(
        [
            same_text(translation, target)
            for translation, (_, target) in zip(
                translations, test_pairs, strict=True
            )
        ]
    )
    print(f"\nHeld-out exact match: {exact:.1%} of {len(test_pairs)} pairs")
    for (source, target), translation in list(
        zip(test_pairs, translations, strict=True)
    )[:5]:
        print(f"  {source!r} -> {translation!r} (expected {target!r})")
    figure = plot_cross_attention(model, tokenizer, test_inputs)
    save_figure(figure, args.output_dir, "cross_attention")


if __name__ == "__main__":
    main()

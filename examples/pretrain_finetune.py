"""Pretrain an encoder on masked words, fine-tune it on a few labels, export.

The BERT recipe on text that ships with Python. `models.masked_lm` learns to
predict masked word pieces in the standard library's docstrings; its encoder
is then fine-tuned to tell which of eight packages a docstring documents,
from a few labelled examples per package. The same classifier trained from
scratch on the same labels shows what the pretraining brought. The
fine-tuned classifier is exported for serving and the export, reloaded in a
fresh process without Keras, gives the same predictions.

    python examples/pretrain_finetune.py          # about 11 minutes
    python examples/pretrain_finetune.py --pretraining-texts my.txt \\
        --texts my.tsv

`--pretraining-texts` takes one text per line; `--texts` one labelled example
per line: the label, a tab, then the text.
"""

import os
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from common import (
    DOCSTRING_PACKAGES,
    parse_arguments,
    progress_verbosity,
    read_labelled_texts,
    standard_library_docstrings,
    training_callbacks,
    word_piece_tokenizer,
)

from keras_tfm import models

SEQUENCE_LENGTH = 64
MASKED_PER_SEQUENCE = 10  # 15% of 64 positions, rounded up
BATCH_SIZE = 32
LABELS_PER_CLASS = 25
TEST_FRACTION = 0.4
FINE_TUNING_EPOCHS = 20
ENCODER = {"num_layers": 2, "embed_dim": 128, "num_heads": 4, "ff_dim": 256}
QUICK_ENCODER = {"num_layers": 1, "embed_dim": 32, "num_heads": 4, "ff_dim": 64}
RESERVED_TOKENS = ("[PAD]", "[UNK]", "[MASK]")

# What `model.export` writes, per backend (measured with this script).
EXPORT_FORMATS = {
    "tensorflow": ["tf_saved_model", "onnx"],
    "jax": ["tf_saved_model"],
    "torch": ["torch"],
}
SUFFIXES = {"tf_saved_model": "", "onnx": ".onnx", "torch": ".pt2"}
# And why the others are left out (Keras 3.15).
NOT_EXPORTED = {
    "tensorflow": {"torch": "Keras writes .pt2 files from PyTorch only"},
    "jax": {
        "onnx": "Keras needs the jax2onnx package, not installed here",
        "torch": "Keras writes .pt2 files from PyTorch only",
    },
    "torch": {
        "tf_saved_model": "Keras's exporter fails on this model",
        "onnx": "Keras's TorchScript exporter fails on LayerNormalization "
        "with a variable batch size",
    },
}


def warmup_then_decay(peak, total_steps):
    """Linear warm-up over the first tenth of training, then cosine decay."""
    warmup_steps = max(1, total_steps // 10)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        warmup_target=peak,
        warmup_steps=warmup_steps,
        decay_steps=max(1, total_steps - warmup_steps),
    )


def optimizer(peak, total_steps):
    """AdamW with gradient clipping and a warm-up + decay schedule (BERT)."""
    return keras.optimizers.AdamW(
        warmup_then_decay(peak, total_steps), weight_decay=0.01, clipnorm=1.0
    )


def masked_batches(token_ids, tokenizer, seed, shuffle=True):
    """A `tf.data` pipeline of masked batches, new masks every epoch.

    keras-hub's `MaskedLMMaskGenerator` picks 15% of the real tokens and
    replaces 80% of those with `[MASK]`, 10% with a random token and leaves
    10%. Its outputs are the model's inputs, targets and sample weights.
    `tf.data` feeds `fit` on every backend.
    """
    masker = keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=tokenizer.vocabulary_size(),
        mask_selection_rate=0.15,
        mask_selection_length=MASKED_PER_SEQUENCE,
        mask_token_id=tokenizer.token_to_id("[MASK]"),
        unselectable_token_ids=[tokenizer.token_to_id("[PAD]")],
    )

    def mask(batch):
        masked = masker(batch)
        inputs = {
            "tokens": masked["token_ids"],
            "mask_positions": masked["mask_positions"],
        }
        return inputs, masked["mask_ids"], masked["mask_weights"]

    dataset = tf.data.Dataset.from_tensor_slices(token_ids)
    if shuffle:
        dataset = dataset.shuffle(len(token_ids), seed=seed)
    return (
        dataset.batch(BATCH_SIZE)
        .map(mask, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def pretrain(token_ids, tokenizer, encoder_sizes, args):
    """Masked-language-model pretraining; returns the model."""
    split = int(len(token_ids) * 0.95)
    train = masked_batches(token_ids[:split], tokenizer, args.seed)
    validation = masked_batches(
        token_ids[split:], tokenizer, args.seed, shuffle=False
    )
    model = models.masked_lm(
        tokenizer.vocabulary_size(), SEQUENCE_LENGTH, **encoder_sizes
    )
    steps = args.epochs * int(np.ceil(split / BATCH_SIZE))
    model.compile(
        optimizer=optimizer(1e-3, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="masked_accuracy")
        ],
    )
    model.fit(
        train,
        validation_data=validation,
        epochs=args.epochs,
        callbacks=training_callbacks(args),
        verbose=progress_verbosity(),
    )
    accuracy = model.evaluate(validation, verbose=0, return_dict=True)
    print(
        "Masked-token accuracy on held-out texts: "
        f"{accuracy['masked_accuracy']:.1%}"
    )
    return model


def fine_tune(classifier, train, test, seed):
    """Trains `classifier` on the few labels; returns its test accuracy."""
    (train_ids, train_y), (test_ids, test_y) = train, test
    steps = FINE_TUNING_EPOCHS * int(np.ceil(len(train_ids) / BATCH_SIZE))
    classifier.compile(
        optimizer=optimizer(3e-4, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    keras.utils.set_random_seed(seed)  # the same batches for both models
    classifier.fit(
        train_ids,
        train_y,
        epochs=FINE_TUNING_EPOCHS,
        batch_size=BATCH_SIZE,
        verbose=0,
    )
    return classifier.evaluate(test_ids, test_y, verbose=0)[1]


def export_options(export_format):
    """`model.export` arguments beyond the defaults, per format."""
    if export_format != "torch":
        return {}
    import torch

    # torch.export fixes every dimension unless told which ones vary.
    return {
        "input_signature": [
            keras.InputSpec(shape=(None, SEQUENCE_LENGTH), dtype="int32")
        ],
        "dynamic_shapes": {0: torch.export.Dim("batch")},
    }


def export_and_check(classifier, token_ids, output_dir):
    """Exports `classifier` in each format this backend supports, reloads
    each in a fresh process (examples/serve.py, no Keras) and compares."""
    inputs_path = os.path.join(output_dir, "serving_inputs.npy")
    np.save(inputs_path, token_ids)
    expected = keras.ops.convert_to_numpy(classifier(token_ids))
    results = {}
    for export_format in EXPORT_FORMATS[keras.backend.backend()]:
        path = os.path.join(
            output_dir, f"classifier_export{SUFFIXES[export_format]}"
        )
        classifier.export(
            path,
            format=export_format,
            verbose=False,
            **export_options(export_format),
        )
        outputs_path = os.path.join(output_dir, f"served_{export_format}.npy")
        subprocess.run(
            [
                sys.executable,
                os.path.join(os.path.dirname(__file__), "serve.py"),
                export_format,
                path,
                inputs_path,
                outputs_path,
            ],
            check=True,
        )
        served = np.load(outputs_path)
        results[export_format] = (
            np.abs(served - expected).max(),
            np.mean(served.argmax(-1) == expected.argmax(-1)),
        )
    return results


def labelled_split(examples, seed, labels_per_class):
    """A few labelled training examples per class and a large test set."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    test = order[: int(len(order) * TEST_FRACTION)]
    train, taken = [], {}
    for index in order[len(test) :]:
        label = examples[index][0]
        if taken.get(label, 0) < labels_per_class:
            train.append(index)
            taken[label] = taken.get(label, 0) + 1
    return train, test


def main():
    args = parse_arguments(
        __doc__.splitlines()[0],
        epochs=30,
        pretraining_texts={"default": None, "help": "one text per line"},
        texts={"default": None, "help": "label<TAB>text lines"},
    )
    docstrings = standard_library_docstrings()
    if args.pretraining_texts:
        with open(args.pretraining_texts, encoding="utf-8") as file:
            unlabelled = [line.strip() for line in file if line.strip()]
    else:
        unlabelled = [text for _, text in docstrings]
    examples = (
        read_labelled_texts(args.texts)
        if args.texts
        else [(p, text) for p, text in docstrings if p in DOCSTRING_PACKAGES]
    )
    train, test = labelled_split(examples, args.seed, LABELS_PER_CLASS)
    # Pretraining never sees the texts the classifiers are tested on.
    test_texts = {examples[index][1] for index in test}
    unlabelled = [text for text in unlabelled if text not in test_texts]
    encoder_sizes = QUICK_ENCODER if args.quick else ENCODER
    if args.quick:
        unlabelled, test = unlabelled[:256], test[:64]

    tokenizer = word_piece_tokenizer(
        unlabelled, 4000, SEQUENCE_LENGTH, reserved_tokens=RESERVED_TOKENS
    )
    print(
        f"Pretraining on {len(unlabelled)} texts, fine-tuning on "
        f"{len(train)} labelled texts, testing on {len(test)}; vocabulary of "
        f"{tokenizer.vocabulary_size()} word pieces"
    )
    pretrained = pretrain(
        np.asarray(tokenizer(unlabelled), "int32"),
        tokenizer,
        encoder_sizes,
        args,
    )

    labels = sorted({label for label, _ in examples})

    def encode(indices):
        ids = tokenizer([examples[index][1] for index in indices])
        y = [labels.index(examples[index][0]) for index in indices]
        return np.asarray(ids, "int32"), np.asarray(y)

    train_data, test_data = encode(train), encode(test)
    classifier_options = {
        "vocab_size": tokenizer.vocabulary_size(),
        "sequence_length": SEQUENCE_LENGTH,
        "num_classes": len(labels),
    }
    fine_tuned = models.text_classifier(
        **classifier_options, encoder=models.masked_lm_encoder(pretrained)
    )
    scratch = models.text_classifier(**classifier_options, **encoder_sizes)
    fine_tuned_accuracy = fine_tune(
        fine_tuned, train_data, test_data, args.seed
    )
    scratch_accuracy = fine_tune(scratch, train_data, test_data, args.seed)
    majority = np.mean(test_data[1] == np.bincount(train_data[1]).argmax())
    print(f"\nTest accuracy with {len(train)} labels ({len(test)} texts):")
    print(f"  pretrained encoder, fine-tuned {fine_tuned_accuracy:.1%}")
    print(f"  same classifier from scratch   {scratch_accuracy:.1%}")
    print(f"  majority class                 {majority:.1%}")

    exported = export_and_check(fine_tuned, test_data[0], args.output_dir)
    print("\nExported classifier, reloaded in a fresh process:")
    for export_format, (difference, agreement) in exported.items():
        print(
            f"  {export_format:<15} same predicted class {agreement:.1%}, "
            f"largest logit difference {difference:.1e}"
        )
    for export_format, reason in NOT_EXPORTED[keras.backend.backend()].items():
        print(f"  {export_format:<15} not exported: {reason}")


if __name__ == "__main__":
    main()

"""A Hugging Face checkpoint in keras_tfm: load, use, fine-tune, write back.

Loads a local checkpoint directory (`config.json`, safetensors weights and
the `tokenizer.json` it ships with) into a keras_tfm model, generates text
(a causal LM: GPT-2, Llama, Mistral) or classifies (a BERT sequence
classifier), fine-tunes it briefly with `model.fit` on the standard
library's docstrings, writes it back with `interop.to_huggingface`, and
reloads what it wrote with `transformers` to show the same output.
Tokenization stays outside the Keras model, with the `tokenizers` package.

    python examples/huggingface.py --checkpoint path/to/gpt2   # a snapshot
    python examples/huggingface.py     # a small random GPT-2, made offline

Without `--checkpoint` it makes a small random GPT-2 with `transformers`
and a byte-level BPE tokenizer learned here: everything runs offline, and
the text it writes is gibberish until fine-tuned.
"""

import os

import keras
import numpy as np
from common import (
    parse_arguments,
    progress_verbosity,
    standard_library_docstrings,
)

from keras_tfm import generation, interop, models

LENGTH = 48  # tokens per training window


def make_random_checkpoint(directory, texts, quick):
    """A random GPT-2 and a BPE tokenizer learned from `texts`, saved as a
    Hugging Face snapshot."""
    import tokenizers
    import transformers

    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
        add_prefix_space=False
    )
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300 if quick else 1000,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    config = transformers.GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=128,
        n_embd=64 if quick else 128,
        n_layer=2,
        n_head=4,
        # The tokenizer learned here has no special tokens.
        bos_token_id=None,
        eos_token_id=None,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    print(
        "No --checkpoint: made a small random GPT-2 checkpoint with "
        f"transformers (offline) in {directory}; it writes gibberish."
    )


def training_windows(token_ids, count, rng):
    starts = rng.integers(0, len(token_ids) - LENGTH - 1, size=count)
    windows = np.stack([token_ids[s : s + LENGTH + 1] for s in starts])
    return windows[:, :-1], windows[:, 1:]


def complete(model, tokenizer, prompt, new_tokens):
    """`prompt` and its greedy continuation, up to the checkpoint's end
    token (`generate` pads after it)."""
    ids = tokenizer.encode(prompt).ids
    generated = generation.generate(model, [ids], max_new_tokens=new_tokens)
    tokens = generated[0].tolist()
    ends = model.special_token_ids.get("eos")
    ends = ends if isinstance(ends, list) else [ends]
    ended = [i for i, token in enumerate(tokens) if token in ends]
    return prompt + tokenizer.decode(tokens[: ended[0] + 1 if ended else None])


def causal_lm_session(model, tokenizer, texts, args):
    print(
        f"Before fine-tuning: {complete(model, tokenizer, args.prompt, 12)!r}"
    )
    token_ids = np.array(tokenizer.encode(" ".join(texts)).ids, "int32")
    rng = np.random.default_rng(args.seed)
    inputs, targets = training_windows(token_ids, args.windows, rng)
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        inputs,
        targets,
        batch_size=8,
        epochs=args.epochs,
        verbose=progress_verbosity(),
    )
    print(f"After fine-tuning: {complete(model, tokenizer, args.prompt, 12)!r}")
    return np.array([tokenizer.encode(args.prompt).ids], "int32")


def classifier_session(model, tokenizer, args):
    """Fine-tunes a BERT classifier to tell docstrings' packages apart."""
    packages = ["email", "logging", "xml", "http"][: model.num_classes]
    examples = standard_library_docstrings(packages)
    rng = np.random.default_rng(args.seed)
    picked = rng.permutation(len(examples))[: args.windows]
    texts = [examples[i][1] for i in picked]
    labels = np.array([packages.index(examples[i][0]) for i in picked])
    tokenizer.enable_truncation(LENGTH)
    tokenizer.enable_padding(length=LENGTH, pad_id=0)
    tokens = np.array([e.ids for e in tokenizer.encode_batch(texts)], "int32")
    inputs = {"tokens": tokens, "segment_ids": np.zeros_like(tokens)}
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        inputs,
        labels,
        batch_size=8,
        epochs=args.epochs,
        verbose=progress_verbosity(),
    )
    return {name: value[:2] for name, value in inputs.items()}


def reload_with_transformers(model, directory, inputs):
    """Writes `model` back and compares `transformers`' logits with ours."""
    import torch
    import transformers

    interop.to_huggingface(model, directory)
    if isinstance(model, models.CausalLM):
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(directory)
        torch_inputs = {"input_ids": torch.tensor(inputs)}
    else:
        reloaded = transformers.AutoModelForSequenceClassification
        reloaded = reloaded.from_pretrained(directory)
        torch_inputs = {
            "input_ids": torch.tensor(inputs["tokens"]),
            "token_type_ids": torch.tensor(inputs["segment_ids"]),
            "attention_mask": torch.tensor(inputs["tokens"] != 0),
        }
    with torch.no_grad():
        theirs = reloaded.eval()(**torch_inputs).logits.numpy()
    ours = keras.ops.convert_to_numpy(model(inputs))
    difference = np.abs(theirs - ours).max() / np.abs(ours).max()
    print(
        f"Written to {directory} and reloaded with transformers: logits "
        f"differ by {difference:.1e} of their scale"
    )


def main():
    args = parse_arguments(
        __doc__.splitlines()[0],
        epochs=2,
        checkpoint={"default": None, "help": "a local Hugging Face snapshot"},
        prompt={"default": "Return the", "help": "the text to continue"},
        windows={"type": int, "default": None, "help": "training examples"},
        learning_rate={"type": float, "default": 1e-3},
    )
    args.windows = args.windows or (32 if args.quick else 512)
    os.makedirs(args.output_dir, exist_ok=True)
    texts = [doc for _, doc in standard_library_docstrings(["json", "email"])]
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = os.path.join(args.output_dir, "random-gpt2")
        make_random_checkpoint(checkpoint, texts, args.quick)

    import tokenizers

    tokenizer = tokenizers.Tokenizer.from_file(
        os.path.join(checkpoint, "tokenizer.json")
    )
    model = interop.from_huggingface(checkpoint)
    print(
        f"Loaded {checkpoint} as a {type(model).__name__} with "
        f"{model.count_params():,} weights"
    )
    if isinstance(model, models.CausalLM):
        inputs = causal_lm_session(model, tokenizer, texts, args)
    elif isinstance(model, models.TextClassifier):
        inputs = classifier_session(model, tokenizer, args)
    else:
        raise SystemExit(
            f"This example generates or classifies; a {type(model).__name__}"
            " loads with interop.from_huggingface but is not shown here."
        )
    model.save(os.path.join(args.output_dir, "best.keras"))
    reload_with_transformers(
        model, os.path.join(args.output_dir, "fine-tuned"), inputs
    )


if __name__ == "__main__":
    main()

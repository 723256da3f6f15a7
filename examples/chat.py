"""Chat with a checkpoint in the terminal, each reply streamed as it comes.

Loads a local Hugging Face snapshot of an instruct model (Qwen2.5-Instruct,
Llama 3.x-Instruct, Mistral-Instruct, ...): its weights with
`interop.from_huggingface`, its tokenizer and chat template with
`interop.load_tokenizer`. The conversation is rendered with the
checkpoint's own chat template at every turn, and the reply is shown piece
by piece with `generation.stream` (whole characters only). Type a message
and press Enter; Ctrl-D quits.

    python examples/chat.py --checkpoint path/to/Qwen2.5-0.5B-Instruct
    python examples/chat.py          # a small random model, made offline

Without `--checkpoint` it makes a small random Llama-style checkpoint, a
byte-level BPE tokenizer learned from the standard library's docstrings
and a ChatML chat template, in a temporary directory: everything runs
offline, and the replies are gibberish.
"""

import json
import os
import tempfile

from common import parse_arguments, standard_library_docstrings

from keras_tfm import generation, interop, models
from keras_tfm.interop import load_tokenizer

CHATML = (
    "{% for message in messages %}"
    "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(texts, vocab_size):
    """A byte-level BPE tokenizer (GPT-2's and Llama 3's scheme)."""
    import tokenizers

    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
        add_prefix_space=False
    )
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def make_random_checkpoint(directory, quick):
    """A random Llama-style model, a BPE tokenizer and a chat template,
    saved as a Hugging Face snapshot."""
    texts = [doc for _, doc in standard_library_docstrings(["json"])]
    tokenizer = train_tokenizer(texts, 400 if quick else 2000)
    end = tokenizer.token_to_id("<|im_end|>")
    model = models.CausalLM(
        vocab_size=tokenizer.get_vocab_size(),
        sequence_length=256 if quick else 1024,
        num_layers=1 if quick else 4,
        embed_dim=32 if quick else 256,
        num_heads=2 if quick else 4,
        ff_dim=64 if quick else 768,
        norm="rms",
        output_bias=False,
        attention={"rotary": True, "use_bias": False},
        feed_forward={"activation": "swiglu", "use_bias": False},
        special_token_ids={"eos": end},
    )
    interop.to_huggingface(model, directory, model_type="llama")
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    config = {"eos_token": "<|im_end|>", "chat_template": CHATML}
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as file:
        json.dump(config, file)
    print(
        "No --checkpoint: made a small random model with a BPE tokenizer "
        f"and a chat template in {directory}; its replies are gibberish."
    )


def fit_conversation(messages, tokenizer, limit):
    """`messages` without their oldest turns (the system prompt stays),
    so that the rendered prompt takes at most `limit` tokens."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system) :]
    while len(turns) > 1:
        ids = tokenizer.apply_chat_template(system + turns, tokenize=True)
        if len(ids) <= limit:
            break
        turns = turns[2:] if len(turns) > 2 else turns[1:]
    return system + turns


def chat(model, tokenizer, args):
    """Reads messages until end of input; streams each reply."""
    messages = [{"role": "system", "content": args.system}]
    messages = messages if args.system else []
    limit = model.sequence_length - args.max_new_tokens
    print("Type a message and press Enter; Ctrl-D quits.")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        messages = fit_conversation(messages, tokenizer, limit)
        print("model> ", end="", flush=True)
        reply = ""
        for piece in generation.stream(
            model, messages, args.max_new_tokens, tokenizer=tokenizer,
            sampler=args.sampler, temperature=args.temperature,
            seed=args.seed,
        ):  # fmt: skip
            print(piece, end="", flush=True)
            reply += piece
        print()
        messages.append({"role": "assistant", "content": reply})


def main():
    args = parse_arguments(
        __doc__.splitlines()[0],
        epochs=0,
        checkpoint={"default": None, "help": "a local Hugging Face snapshot"},
        system={"default": None, "help": "a system prompt"},
        max_new_tokens={"type": int, "default": 256},
        sampler={"default": "top_p", "choices": ["greedy", "top_k", "top_p"]},
        temperature={"type": float, "default": 0.7},
    )
    with tempfile.TemporaryDirectory() as temporary:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = temporary
            make_random_checkpoint(checkpoint, args.quick)
        model = interop.from_huggingface(checkpoint)
        tokenizer = load_tokenizer(checkpoint)
        print(f"Loaded {checkpoint}: {model.count_params():,} weights")
    if args.quick:
        args.max_new_tokens = min(args.max_new_tokens, 16)
    chat(model, tokenizer, args)


if __name__ == "__main__":
    main()

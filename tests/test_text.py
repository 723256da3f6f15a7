"""Text in, text out: checkpoint tokenizers, chat templates, generation
from text and streams of whole characters.

The tokenizers are trained here, offline: a byte-level BPE (GPT-2's
scheme) on text with multi-byte characters, and a WordPiece one (BERT's).
Where `transformers` is installed, it is the reference for the rendered
chat prompt, for decoding, and for the text greedy generation gives.
"""

import json
import shutil
import sys

import numpy as np
import pytest

from keras_tfm import generation, models
from keras_tfm.generation.text import TextStream
from keras_tfm.interop.tokenizer import load_tokenizer

tokenizers = pytest.importorskip("tokenizers")

SENTENCES = [
    "The Transformer reads text, one token after another.",
    "A naïve café in 東京 serves tea 🙂 and cake.",
    "Attention is all you need: queries, keys and values.",
    "Généralement, le modèle prédit le mot suivant.",
    "Streams show whole characters: ü, ß, 東, 京 and 🙂.",
]
MULTI_BYTE = "naïve café 東京 🙂"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{%- set ns = namespace(turns=0) -%}\n"
    "{{ bos_token }}\n"
    "{%- for message in messages %}\n"
    "{%- if message.role not in ['system', 'user', 'assistant'] %}\n"
    "{{ raise_exception('Unknown role: ' + message.role) }}\n"
    "{%- endif %}\n"
    "{%- set ns.turns = ns.turns + 1 %}\n"
    "<|im_start|>{{ message.role }}\n"
    "{{ message.content }}\n"
    "{%- if message.meta is defined %} {{ message.meta | tojson }}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}\n"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Où est 東京?", "meta": {"city": "東京"}},
]


def train_bpe():
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
        add_prefix_space=False
    )
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIAL,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    return tokenizer


def train_wordpiece():
    tokenizer = tokenizers.Tokenizer(
        tokenizers.models.WordPiece(unk_token="[UNK]")
    )
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = tokenizers.decoders.WordPiece()
    trainer = tokenizers.trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[SEP]"]
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    return tokenizer


def write_json(path, value):
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    """A snapshot's tokenizer files: BPE, a chat template, two end ids."""
    directory = tmp_path_factory.mktemp("bpe")
    tokenizer = train_bpe()
    tokenizer.save(str(directory / "tokenizer.json"))
    write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<|endoftext|>",
            "eos_token": {"__type": "AddedToken", "content": "<|im_end|>"},
            "pad_token": None,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    endoftext = tokenizer.token_to_id("<|endoftext|>")
    write_json(
        directory / "generation_config.json", {"eos_token_id": [endoftext]}
    )
    return directory


@pytest.fixture(scope="module")
def wordpiece_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("wordpiece")
    train_wordpiece().save(str(directory / "tokenizer.json"))
    write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": True,
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "eos_token": "[SEP]",
        },
    )
    return directory


def random_lm(vocab_size, seed=3):
    import keras

    keras.utils.set_random_seed(seed)
    return models.causal_lm(
        vocab_size=vocab_size,
        sequence_length=128,
        num_layers=1,
        embed_dim=32,
        num_heads=2,
        ff_dim=64,
    )


@pytest.fixture(scope="module")
def bpe_lm(bpe_dir):
    tokenizer = load_tokenizer(bpe_dir)
    return random_lm(tokenizer.vocab_size), tokenizer


def test_load_tokenizer_reads_special_tokens_and_end_ids(bpe_dir):
    tokenizer = load_tokenizer(bpe_dir)
    im_end = tokenizer.token_to_id("<|im_end|>")
    endoftext = tokenizer.token_to_id("<|endoftext|>")
    # generation_config.json's end ids first, then the end token's.
    assert tokenizer.end_token_ids == (endoftext, im_end)
    assert tokenizer.special_token_ids["bos"] == endoftext
    assert tokenizer.special_token_ids["pad"] is None
    assert tokenizer.special_tokens["eos_token"] == "<|im_end|>"
    assert tokenizer.padding_side == "right"


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_text_round_trip(kind, bpe_dir, wordpiece_dir):
    tokenizer = load_tokenizer(bpe_dir if kind == "bpe" else wordpiece_dir)
    # WordPiece keeps no spaces: its decoder puts one between words, which
    # the clean-up removes before ".", ",", "!" and "?" only.
    texts = [s for s in SENTENCES if kind == "bpe" or ":" not in s]
    rows = tokenizer.encode_batch(texts)
    assert rows == [tokenizer.encode(s) for s in texts]
    assert tokenizer.decode_batch(rows) == texts
    assert tokenizer(texts[1]) == rows[1]


def test_multi_byte_characters_span_several_tokens(bpe_dir):
    tokenizer = load_tokenizer(bpe_dir)
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode("🙂 東")]
    assert "\ufffd" in "".join(pieces)  # split bytes, the case to handle


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_stream_of_known_text_yields_whole_characters(
    kind, bpe_dir, wordpiece_dir
):
    tokenizer = load_tokenizer(bpe_dir if kind == "bpe" else wordpiece_dir)
    ids = tokenizer.encode(SENTENCES[4])
    row = TextStream(tokenizer, end_token_ids=(), stop_strings=())
    pieces = [row.add(token) for token in ids]
    pieces.append(row.close())
    assert "".join(pieces) == tokenizer.decode(ids)
    assert all("\ufffd" not in piece for piece in pieces), pieces
    assert sum(bool(piece) for piece in pieces) > 5  # shown as it comes


def test_stream_holds_back_a_possible_stop_string(bpe_dir):
    tokenizer = load_tokenizer(bpe_dir)
    row = TextStream(tokenizer, (), stop_strings=("serves tea",))
    pieces = [row.add(token) for token in tokenizer.encode(SENTENCES[1])]
    assert row.done
    assert "".join(pieces) == "A naïve café in 東京 "
    assert all("serv" not in piece for piece in pieces)


def cut_at_end(tokens, end_ids):
    ends = [i for i, t in enumerate(tokens) if t in end_ids]
    return [int(t) for t in (tokens[: ends[0]] if ends else tokens)]


def id_stream(model, ids, max_new_tokens):
    """The new ids of one prompt, from the id API (with no end id)."""
    steps = generation.stream(model, [ids], max_new_tokens, end_token_id=None)
    return [int(step[0]) for step in steps]


# Each new prompt shape compiles the generation loop again (XLA), so the
# tests below share these prompts and lengths.
PROMPTS = [MULTI_BYTE, "The Transformer reads a much longer prompt"]
NEW = 12


def test_batched_text_equals_one_at_a_time(bpe_lm):
    model, tokenizer = bpe_lm
    batched = generation.generate(model, PROMPTS, NEW, tokenizer=tokenizer)
    alone = [
        generation.generate(model, p, NEW, tokenizer=tokenizer) for p in PROMPTS
    ]
    assert isinstance(batched, list) and isinstance(alone[0], str)
    assert batched == alone
    ids = generation.generate(
        model, [tokenizer.encode(PROMPTS[0])], NEW,
        end_token_id=tokenizer.end_token_ids,
    )  # fmt: skip
    expected = cut_at_end(ids[0], tokenizer.end_token_ids)
    assert alone[0] == tokenizer.decode(expected)


def test_several_end_ids_and_stop_strings(bpe_lm):
    model, tokenizer = bpe_lm
    tokens = id_stream(model, tokenizer.encode(MULTI_BYTE), NEW)
    assert len(set(tokens[:6])) >= 3, tokens  # a varied continuation
    ends = [tokens[5], tokens[3]]
    expected = tokenizer.decode(cut_at_end(tokens, ends))
    for generate in (generation.generate, generation.stream):
        text = generate(
            model, MULTI_BYTE, NEW, tokenizer=tokenizer, end_token_id=ends
        )
        assert "".join(text) == expected
    full = tokenizer.decode(cut_at_end(tokens, tokenizer.end_token_ids))
    stop = full[len(full) // 2 :][:2]
    expected = full[: full.find(stop)]
    for stops in (stop, ["never there", stop]):
        for generate in (generation.generate, generation.stream):
            text = generate(
                model, MULTI_BYTE, NEW, tokenizer=tokenizer, stop_strings=stops
            )
            assert "".join(text) == expected


def test_stream_pieces_add_up_to_generated_text(bpe_lm):
    model, tokenizer = bpe_lm
    texts = generation.generate(model, PROMPTS, NEW, tokenizer=tokenizer)
    steps = list(generation.stream(model, PROMPTS, NEW, tokenizer=tokenizer))
    assert all(len(step) == 2 for step in steps)
    assert ["".join(column) for column in zip(*steps, strict=True)] == texts
    pieces = list(
        generation.stream(model, PROMPTS[0], NEW, tokenizer=tokenizer)
    )
    assert "".join(pieces) == texts[0]
    assert all(isinstance(piece, str) and piece for piece in pieces)
    # Only the last piece may end in a character left incomplete.
    assert not any(piece.endswith("\ufffd") for piece in pieces[:-1])


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_stream_of_random_ids_adds_up_to_their_text(
    kind, bpe_dir, wordpiece_dir
):
    """Any ids, as an untrained model writes them: bytes that never make a
    character, WordPiece's "##" pieces after punctuation, special tokens."""
    tokenizer = load_tokenizer(bpe_dir if kind == "bpe" else wordpiece_dir)
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids = rng.integers(0, tokenizer.vocab_size, size=30).tolist()
        row = TextStream(tokenizer, end_token_ids=(), stop_strings=())
        pieces = [row.add(token) for token in ids]
        pieces.append(row.close())
        assert "".join(pieces) == tokenizer.decode(ids)
        assert not any(piece.endswith("\ufffd") for piece in pieces[:-1])


def test_chat_messages_are_rendered_with_the_template(bpe_lm):
    model, tokenizer = bpe_lm
    prompt = tokenizer.apply_chat_template(MESSAGES)
    assert prompt == (
        "<|endoftext|><|im_start|>system\nYou answer briefly.<|im_end|>\n"
        '<|im_start|>user\nOù est 東京? {"city": "東京"}<|im_end|>\n'
        "<|im_start|>assistant\n"
    )
    ids = tokenizer.apply_chat_template(MESSAGES, tokenize=True)
    assert ids == tokenizer.encode(prompt, add_special_tokens=False)
    assert ids.count(tokenizer.token_to_id("<|im_start|>")) == 3
    reply = generation.generate(model, MESSAGES, NEW, tokenizer=tokenizer)
    tokens = generation.generate(
        model, [ids], NEW, end_token_id=tokenizer.end_token_ids
    )[0]
    assert reply == tokenizer.decode(
        cut_at_end(tokens, tokenizer.end_token_ids)
    )
    jinja2 = pytest.importorskip("jinja2")
    with pytest.raises(jinja2.exceptions.TemplateError, match="tool"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}])


def test_chat_template_is_sandboxed(bpe_dir):
    jinja2 = pytest.importorskip("jinja2")
    tokenizer = load_tokenizer(bpe_dir)
    tokenizer.chat_template = "{{ messages.append(1) }}"
    with pytest.raises(jinja2.exceptions.SecurityError):
        tokenizer.apply_chat_template(MESSAGES)
    tokenizer.chat_template = "{% set ns = namespace() %}{% set ns._x = 1 %}"
    with pytest.raises(jinja2.exceptions.SecurityError, match="underscore"):
        tokenizer.apply_chat_template(MESSAGES)


def test_errors_name_what_is_missing(tmp_path, bpe_dir, monkeypatch):
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(
        (bpe_dir / "tokenizer.json").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.end_token_ids == ()
    with pytest.raises(ValueError, match="no chat template"):
        tokenizer.apply_chat_template(MESSAGES)
    model = random_lm(tokenizer.vocab_size)
    with pytest.raises(ValueError, match="tokenizer="):
        generation.generate(model, "some text", 4)
    with pytest.raises(ValueError, match="stop_strings"):
        generation.generate(
            model, "text", 4, tokenizer=tokenizer, stop_strings=[""]
        )
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r"keras_tfm\[text\]"):
        load_tokenizer(bpe_dir)


# `transformers` as the reference: the same prompt and the same text.


@pytest.fixture(scope="module")
def gpt2_checkpoint(bpe_dir, tmp_path_factory):
    """A random GPT-2 written by transformers, with the BPE tokenizer."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    import torch

    directory = tmp_path_factory.mktemp("gpt2")
    shutil.copytree(bpe_dir, directory, dirs_exist_ok=True)

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=load_tokenizer(bpe_dir).vocab_size,
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


def test_same_prompt_and_text_as_transformers(gpt2_checkpoint):
    import torch
    import transformers

    from keras_tfm.interop import from_huggingface

    theirs = transformers.AutoTokenizer.from_pretrained(gpt2_checkpoint)
    ours = load_tokenizer(gpt2_checkpoint)
    prompt = ours.apply_chat_template(MESSAGES)
    assert prompt == theirs.apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True
    )
    model = from_huggingface(gpt2_checkpoint)
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        gpt2_checkpoint
    ).eval()
    prompts = [MESSAGES, MULTI_BYTE]
    texts = generation.generate(model, prompts, NEW, tokenizer=ours)
    for prompt, text in zip(prompts, texts, strict=True):
        if isinstance(prompt, str):
            ids = theirs(prompt)["input_ids"]
        else:
            ids = theirs.apply_chat_template(
                prompt, add_generation_prompt=True, return_dict=False
            )
        with torch.no_grad():
            output = reference.generate(
                torch.tensor([ids]), max_new_tokens=NEW, do_sample=False,
                eos_token_id=list(ours.end_token_ids), pad_token_id=0,
            )  # fmt: skip
        new_ids = output[0, len(ids) :]
        assert text == theirs.decode(new_ids, skip_special_tokens=True)


def test_wordpiece_decodes_as_transformers(wordpiece_dir):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(wordpiece_dir)
    ours = load_tokenizer(wordpiece_dir)
    for sentence in SENTENCES:
        ids = ours.encode(sentence)
        assert ids == theirs(sentence)["input_ids"]
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)

"""A checkpoint's tokenizer: `tokenizer.json` with its special tokens and
chat template.

`load_tokenizer(directory)` reads what a Hugging Face snapshot ships beside
its weights (`tokenizer.json`, `tokenizer_config.json`,
`special_tokens_map.json`, `chat_template.jinja`, `generation_config.json`,
`config.json`) with the `tokenizers` package, and renders chat templates
with `jinja2` as `transformers` does (`keras_tfm.interop.chat`). Neither
`torch` nor `transformers` is needed.
"""

import json
import os

from keras_tfm.extras import require
from keras_tfm.interop import chat
from keras_tfm.interop.huggingface.core import read_json
from keras_tfm.interop.huggingface.fields import special_token_ids

__all__ = ["Tokenizer", "load_tokenizer"]

# The special tokens `transformers` names, which chat templates read.
SPECIAL_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
# transformers' `clean_up_tokenization`, in its order.
CLEAN_UP = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
# Decoders that only ever append to the text of fewer tokens: a stream may
# show every whole character at once. Others (WordPiece's joins, ...) may
# rewrite the last word.
APPENDING_DECODERS = (
    "ByteLevel",
    "ByteFallback",
    "Fuse",
    "Metaspace",
    "Replace",
    "Strip",
)


def load_tokenizer(directory):
    """Loads the tokenizer of a Hugging Face checkpoint directory.

    Reads `tokenizer.json` with the `tokenizers` package, the special tokens
    and padding side of `tokenizer_config.json` (and
    `special_tokens_map.json`), the chat template (`chat_template.jinja`, or
    `tokenizer_config.json`'s `chat_template`), and the end ids: those of
    `generation_config.json` (Llama 3 lists several), else `config.json`'s,
    and the id of the end token.

    Args:
        directory: The checkpoint directory (a local snapshot).

    Returns:
        A `Tokenizer`, which `generation.generate` and `generation.stream`
        take as `tokenizer=` to turn text in and text out.

    Raises:
        ImportError: When the `tokenizers` package is not installed (it
            names the extra that installs it).
        ValueError: When `directory` holds no `tokenizer.json`.

    Example:

    ```python
    import os
    import tokenizers
    from keras_tfm import interop

    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
        add_prefix_space=False
    )
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    tokenizer.train_from_iterator(
        ["naïve café"],
        tokenizers.trainers.BpeTrainer(
            vocab_size=300,
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    os.makedirs("snapshot", exist_ok=True)
    tokenizer.save("snapshot/tokenizer.json")

    tokenizer = interop.load_tokenizer("snapshot")
    ids = tokenizer.encode("naïve café")
    print(tokenizer.decode(ids))  # naïve café
    ```
    """
    tokenizers = require("tokenizers", "text", "keras_tfm.interop.tokenizer")
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.exists(path):
        raise ValueError(
            "`directory` must hold the checkpoint's tokenizer.json (the "
            "`tokenizers` format that `transformers` saves). Received: "
            f"directory={directory!r}, which has no tokenizer.json"
        )
    config = _read_json(directory, "tokenizer_config.json")
    with open(path, encoding="utf-8") as file:
        decoder = json.load(file).get("decoder")
    return Tokenizer(
        tokenizers.Tokenizer.from_file(path),
        special_tokens=_special_tokens(directory, config),
        end_token_ids=_end_token_ids(directory),
        chat_template=_chat_template(directory, config),
        padding_side=config.get("padding_side", "right"),
        clean_up_spaces=bool(config.get("clean_up_tokenization_spaces")),
        appending=_is_appending(decoder),
    )


class Tokenizer:
    """A checkpoint's tokenizer: text to ids and back, and chat templates.

    Made by `load_tokenizer`. It wraps a `tokenizers.Tokenizer` (the
    `backend` attribute) and adds what the checkpoint's other files say:
    the special tokens, their ids, the end ids that stop generation, and
    the chat template.

    Args:
        backend: A `tokenizers.Tokenizer`.
        special_tokens: Dict of `"bos_token"`, `"eos_token"`, ... to their
            text, as `transformers`' `special_tokens_map`.
        end_token_ids: Ids that end a generated sequence, beside the end
            token's own.
        chat_template: The Jinja chat template, or None.
        padding_side: `"right"` or `"left"`, as the checkpoint says.
        clean_up_spaces: Whether `decode` removes the spaces a WordPiece
            tokenizer leaves before punctuation (`transformers`'
            `clean_up_tokenization_spaces`).
        appending: Whether the decoder only appends text as ids are added
            (byte-level and SentencePiece decoders do), so that a stream
            shows every character as soon as it is whole.

    Call arguments:
        text: A string, or a list of strings, to encode, as `encode` and
            `encode_batch`.

    Returns:
        The ids of `text`: a list of ints, or a list of lists.

    Example:

    ```python
    import tokenizers
    from keras_tfm.interop.tokenizer import Tokenizer

    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({"[UNK]": 0, "hi": 1}, unk_token="[UNK]")
    )
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = Tokenizer(backend, chat_template="{{ messages[0].content }}")
    print(tokenizer("hi"))  # [1]
    print(tokenizer.apply_chat_template([{"role": "user", "content": "hi"}]))
    ```
    """

    def __init__(
        self,
        backend,
        special_tokens=None,
        end_token_ids=(),
        chat_template=None,
        padding_side="right",
        clean_up_spaces=False,
        appending=True,
    ):
        self.backend = backend
        self.special_tokens = dict(special_tokens or {})
        self.chat_template = chat_template
        self.padding_side = padding_side
        self.clean_up_spaces = clean_up_spaces
        self.appending = appending
        self.special_token_ids = {
            "pad": self.token_to_id(self.special_tokens.get("pad_token")),
            "bos": self.token_to_id(self.special_tokens.get("bos_token")),
            "eos": _unique(
                [*end_token_ids, self.special_tokens.get("eos_token")],
                self.token_to_id,
            ),
        }

    def __call__(self, text):
        if isinstance(text, str):
            return self.encode(text)
        return self.encode_batch(text)

    @property
    def end_token_ids(self):
        """The ids that end a generated sequence (a tuple, maybe empty)."""
        return tuple(self.special_token_ids["eos"])

    @property
    def vocab_size(self):
        return self.backend.get_vocab_size()

    def token_to_id(self, token):
        """The id of a token's text (None for None or an unknown token)."""
        return None if token is None else self.backend.token_to_id(token)

    def encode(self, text, add_special_tokens=True):
        """The ids of `text`, with the start token and the like that the
        tokenizer's post-processor adds when `add_special_tokens`."""
        return self.backend.encode(
            text, add_special_tokens=add_special_tokens
        ).ids

    def encode_batch(self, texts, add_special_tokens=True):
        """The ids of each text, as a list of lists (no padding)."""
        encodings = self.backend.encode_batch(
            list(texts), add_special_tokens=add_special_tokens
        )
        return [encoding.ids for encoding in encodings]

    def decode(self, ids, skip_special_tokens=True):
        """The text of `ids`, without special tokens by default."""
        text = self.backend.decode(
            [int(i) for i in ids], skip_special_tokens=skip_special_tokens
        )
        if self.clean_up_spaces and self._model_type() != "BPE":
            for before, after in CLEAN_UP:
                text = text.replace(before, after)
        return text

    def decode_batch(self, rows, skip_special_tokens=True):
        return [self.decode(row, skip_special_tokens) for row in rows]

    def apply_chat_template(
        self, messages, add_generation_prompt=True, tokenize=False, **kwargs
    ):
        """Renders a conversation with the checkpoint's chat template.

        Args:
            messages: A list of dicts with `"role"` and `"content"`.
            add_generation_prompt: Whether to end with the start of the
                assistant's turn, for generating its reply.
            tokenize: Whether to return ids (encoded without adding special
                tokens: the template writes them) instead of text.
            **kwargs: More variables for the template; they override the
                special tokens (`bos_token`, ...) it sees by default.

        Returns:
            The prompt text, or its ids when `tokenize`.
        """
        if self.chat_template is None:
            raise ValueError(
                "This tokenizer has no chat template: its checkpoint ships "
                "no chat_template.jinja and no `chat_template` in "
                "tokenizer_config.json (base models usually have none). "
                "Give the prompt as text, or set `tokenizer.chat_template`."
            )
        text = chat.render(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens, **kwargs},
        )
        if tokenize:
            return self.encode(text, add_special_tokens=False)
        return text

    def _model_type(self):
        return type(self.backend.model).__name__


def _read_json(directory, name):
    return read_json(directory, name, required=False) or {}


def _token_text(value):
    """A special token's text: configs write a string or an AddedToken
    dict with its `content`."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _special_tokens(directory, config):
    """`transformers`' `special_tokens_map`: tokenizer_config.json's,
    completed by special_tokens_map.json's."""
    found = _read_json(directory, "special_tokens_map.json")
    found = {**found, **{k: v for k, v in config.items() if v is not None}}
    tokens = {name: _token_text(found.get(name)) for name in SPECIAL_TOKENS}
    return {name: text for name, text in tokens.items() if text is not None}


def _end_token_ids(directory):
    """The checkpoint's end ids as a list: generation_config.json's, else
    config.json's, read as the model's `special_token_ids` are."""
    end = special_token_ids(
        _read_json(directory, "config.json"),
        _read_json(directory, "generation_config.json"),
    )["eos"]
    if end is None:
        return []
    return end if isinstance(end, list) else [end]


def _chat_template(directory, config):
    """chat_template.jinja, else tokenizer_config.json's template (a string
    or a list of named templates, of which the "default")."""
    path = os.path.join(directory, "chat_template.jinja")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as file:
            return file.read()
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {entry["name"]: entry["template"] for entry in template}
        template = named.get("default")
    return template


def _is_appending(decoder):
    """Whether a tokenizer.json `decoder` only appends text."""
    if decoder is None:
        return False
    if decoder.get("type") == "Sequence":
        return all(_is_appending(part) for part in decoder["decoders"])
    return decoder.get("type") in APPENDING_DECODERS


def _unique(values, to_id):
    """Ids (ints, or token texts turned into ids), in order, once each."""
    ids = []
    for value in values:
        value = to_id(value) if isinstance(value, str) else value
        if value is not None and value not in ids:
            ids.append(int(value))
    return ids

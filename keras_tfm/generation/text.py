"""Text in, text out: `generate` and `stream` given a `tokenizer`.

Prompts are text, lists of texts, or chat conversations (lists of
`{"role": ..., "content": ...}` messages, rendered with the tokenizer's
chat template). They are encoded, decoded as token ids by the id API, and
the new ids are decoded back to text, cut at the first end id and at the
first stop string.

A stream decodes all of a row's new ids at every step and yields the part
of the text that is new and can no longer change: whole characters only (a
byte-level token may hold half of one, which decodes to U+FFFD until the
next token completes it), nothing that could be the start of a stop string,
and, for decoders that may rewrite the last word (WordPiece's joins and
space clean-up), nothing after the last space. What is held back is
yielded at the end, so the pieces add up to `generate`'s text.
"""

import os
import re

from keras_tfm.generation.prompts import as_id_tuple

# A trailing word and the whitespace before it: what a decoder that joins
# or cleans up tokens may still rewrite.
_LAST_WORD = re.compile(r"\s\S*\Z")


def encode_prompts(tokenizer, prompts):
    """`(single, rows)`: whether one prompt was given, and the token ids of
    each prompt (text, or a conversation through the chat template)."""
    single = isinstance(prompts, str) or is_conversation(prompts)
    items = [prompts] if single else prompts
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(
            "With a `tokenizer`, the prompt must be a string, a list of "
            "strings, a conversation (a list of {'role': ..., 'content': "
            "...} dicts) or a list of conversations. Received: "
            f"{type(prompts).__name__}"
        )
    rows = []
    for item in items:
        if isinstance(item, str):
            rows.append(tokenizer.encode(item))
        elif is_conversation(item):
            rows.append(tokenizer.apply_chat_template(item, tokenize=True))
        else:
            raise ValueError(
                "With a `tokenizer`, each prompt must be a string or a "
                f"conversation. Received: {item!r}"
            )
    return single, rows


def is_conversation(value):
    """Whether `value` is a list of chat messages (dicts with a role)."""
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(m, dict) and "role" in m for m in value)
    )


def is_text(prompts):
    """Whether `prompts` is text or chat rather than token ids."""
    if isinstance(prompts, str) or is_conversation(prompts):
        return True
    return (
        isinstance(prompts, (list, tuple))
        and len(prompts) > 0
        and all(isinstance(p, str) or is_conversation(p) for p in prompts)
    )


def check_text_arguments(prompts, tokenizer, stop_strings):
    """Raises for text without a tokenizer; `stop_strings` as a tuple."""
    if tokenizer is None and (is_text(prompts) or stop_strings):
        raise ValueError(
            "Text prompts and `stop_strings` need `tokenizer=`, such as "
            "`interop.load_tokenizer(checkpoint_directory)`. Received: "
            f"tokenizer=None with a {type(prompts).__name__} prompt"
        )
    if isinstance(stop_strings, str):
        stop_strings = (stop_strings,)
    stop_strings = tuple(stop_strings or ())
    if not all(isinstance(s, str) and s for s in stop_strings):
        raise ValueError(
            "`stop_strings` must be a string or a list of non-empty "
            f"strings. Received: stop_strings={stop_strings!r}"
        )
    return stop_strings


def prepare(model, prompts, tokenizer, stop_strings, end_token_id):
    """`(single, rows, end_token_ids, stop_strings)`, checked: whether one
    prompt was given, each prompt's ids, the end ids as a tuple (`"auto"`
    takes both the model's `special_token_ids["eos"]` and the tokenizer's
    end ids) and the stop strings as a tuple."""
    stop_strings = check_text_arguments(prompts, tokenizer, stop_strings)
    single, rows = encode_prompts(tokenizer, prompts)
    if end_token_id == "auto":
        model_ids = getattr(model, "special_token_ids", {}).get("eos")
        end_token_id = [*as_id_tuple(model_ids), *tokenizer.end_token_ids]
    end_token_ids = tuple(dict.fromkeys(as_id_tuple(end_token_id)))
    return single, rows, end_token_ids, stop_strings


def finish(tokenizer, tokens, end_token_ids, stop_strings):
    """The text of one row's new tokens, cut at its first end id and then
    at its first stop string."""
    tokens = [int(token) for token in tokens]
    for index, token in enumerate(tokens):
        if token in end_token_ids:
            tokens = tokens[:index]
            break
    return cut_at_stop(tokenizer.decode(tokens), stop_strings)[0]


def cut_at_stop(text, stop_strings):
    """`(text, stopped)`: the text before its first stop string."""
    found = [text.find(s) for s in stop_strings]
    found = [position for position in found if position >= 0]
    if not found:
        return text, False
    return text[: min(found)], True


class TextStream:
    """One row of a text stream: its new ids in, stable text pieces out.

    Args:
        tokenizer: The `interop.tokenizer.Tokenizer`.
        end_token_ids: Ids that end the row.
        stop_strings: Strings that end the row's text (not included).
    """

    def __init__(self, tokenizer, end_token_ids, stop_strings):
        self.tokenizer = tokenizer
        self.end_token_ids = end_token_ids
        self.stop_strings = stop_strings
        self.tokens = []
        self.shown = ""
        self.done = False

    def add(self, token):
        """The new stable text after `token` ("" if none)."""
        if self.done:
            return ""
        if int(token) in self.end_token_ids:
            return self.close()
        self.tokens.append(int(token))
        text, stopped = cut_at_stop(
            self.tokenizer.decode(self.tokens), self.stop_strings
        )
        if stopped:
            return self.close(text)
        return self._show(self._stable(text))

    def close(self, text=None):
        """Ends the row: everything held back, up to `text`'s end."""
        if self.done:
            return ""
        self.done = True
        if text is None:
            text, _ = cut_at_stop(
                self.tokenizer.decode(self.tokens), self.stop_strings
            )
        # A decoder that rewrote shown text: show what follows the part
        # both agree on.
        start = len(os.path.commonprefix([self.shown, text]))
        return self._show(text, start)

    def _stable(self, text):
        """The start of `text` that no later token can change."""
        text = text.rstrip("\ufffd")
        if not self.tokenizer.appending:
            text = _LAST_WORD.sub("", text)
        held = max(
            (n for s in self.stop_strings for n in range(1, len(s))
             if text.endswith(s[:n])),
            default=0,
        )  # fmt: skip
        return text[: len(text) - held]

    def _show(self, text, start=None):
        start = len(self.shown) if start is None else start
        if start == len(self.shown) and not text.startswith(self.shown):
            return ""  # wait until the decoder agrees again
        piece = text[start:]
        self.shown = self.shown[:start] + piece
        return piece


def texts(tokens, single, tokenizer, end_token_ids, stop_strings):
    """The text of each row of new `tokens`: a string for one prompt, a
    list of strings for several."""
    found = [
        finish(tokenizer, row, end_token_ids, stop_strings) for row in tokens
    ]
    return found[0] if single else found


def stream_text(token_stream, single, tokenizer, end_token_ids, stop_strings):
    """Text pieces from `token_stream` (the id API's `stream`): a string
    per step for one prompt, a list of strings (one per prompt) for
    several, until every row has ended."""
    streams = None
    for tokens in token_stream:
        if streams is None:
            streams = [
                TextStream(tokenizer, end_token_ids, stop_strings)
                for _ in tokens
            ]
        pieces = [
            row.add(token) for row, token in zip(streams, tokens, strict=True)
        ]
        yield from _pieces(pieces, single)
        if all(row.done for row in streams):
            return
    if streams is not None:
        yield from _pieces([row.close() for row in streams], single)


def _pieces(pieces, single):
    if single:
        if pieces[0]:
            yield pieces[0]
    elif any(pieces):
        yield pieces

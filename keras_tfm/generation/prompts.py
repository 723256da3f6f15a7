"""Prompts and options of `generate` and `stream`: checked, padding
removed, special ids resolved from the model."""

import keras
import numpy as np
from keras import ops

from keras_tfm.layers.validation import check_choice, check_positive_int

SAMPLERS = ("greedy", "top_k", "top_p", "beam")
TORCH_STEPS = ("auto", "eager", "export", "compile")


def prepare_prompts(model, prompt_tokens, max_new_tokens, pad_token_id):
    """`(rows, lengths, encoder_inputs)`, checked: each prompt's tokens
    without padding, their lengths, and the encoder's inputs if any."""
    prompt_tokens, encoder_inputs = split_prompt(prompt_tokens)
    check_model(model, encoder_inputs)
    rows = compact_rows("prompt_tokens", prompt_tokens, pad_token_id)
    for name, value in encoder_inputs.items():
        if len(value) != len(rows):
            raise ValueError(
                f"`{name}` and `decoder_tokens` must have the same batch "
                f"size. Received: {len(value)} and {len(rows)}"
            )
    lengths = np.array([len(row) for row in rows])
    check_length(model, lengths.max() + max_new_tokens)
    return rows, lengths, encoder_inputs


def with_decoder_start(model, prompt_tokens):
    """A prompt dict without `"decoder_tokens"` starts each target from
    the model's `decoder_start_token_id`, where it has one."""
    start = getattr(model, "decoder_start_token_id", None)
    if (
        not isinstance(prompt_tokens, dict)
        or "decoder_tokens" in prompt_tokens
        or start is None
        or not prompt_tokens
    ):
        return prompt_tokens
    batch_size = len(next(iter(prompt_tokens.values())))
    return {**prompt_tokens, "decoder_tokens": [[start]] * batch_size}


def forced_ids(model, forced_bos_token_id, forced_eos_token_id):
    """`(bos, eos)`: the ids forced first and last, `"auto"` taking the
    model's `forced_bos_token_id` and `forced_eos_token_id`."""
    ids = []
    for name, value in (
        ("forced_bos_token_id", forced_bos_token_id),
        ("forced_eos_token_id", forced_eos_token_id),
    ):
        if value == "auto":
            value = getattr(model, name, None)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer)
        ):
            raise ValueError(
                f"`{name}` must be a token id, None or 'auto'. Received: "
                f"{name}={value!r}"
            )
        ids.append(None if value is None else int(value))
    return tuple(ids)


def check_sampling(sampler, temperature, k, p, num_beams):
    check_choice("sampler", sampler, SAMPLERS)
    check_positive_int("k", k)
    check_positive_int("num_beams", num_beams)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"`p` must be in (0, 1]. Received: p={p}")
    if not temperature > 0:
        raise ValueError(
            f"`temperature` must be positive. Received: temperature="
            f"{temperature}"
        )


def check_beam_options(length_penalty, early_stopping):
    """Refuses a length penalty that is not a number, or an
    `early_stopping` other than True, False or "never"."""
    if isinstance(length_penalty, bool) or not isinstance(
        length_penalty, int | float
    ):
        raise ValueError(
            "`length_penalty` must be a number. Received: "
            f"length_penalty={length_penalty!r}"
        )
    if early_stopping not in (True, False, "never"):
        raise ValueError(
            "`early_stopping` must be True, False or 'never'. Received: "
            f"early_stopping={early_stopping!r}"
        )


def check_torch_step(torch_step):
    """The step mode to use: `"auto"` resolved for this backend and device."""
    check_choice("torch_step", torch_step, TORCH_STEPS)
    if keras.backend.backend() != "torch":
        if torch_step != "auto":
            raise ValueError(
                f"`torch_step` applies to the PyTorch backend; on "
                f"{keras.backend.backend()} the whole loop is compiled with "
                f"XLA. Received: torch_step={torch_step!r}"
            )
        return None
    return "export" if torch_step == "auto" else torch_step


def special_ids(model, prompt_tokens, pad_token_id, end_token_id):
    """`(pad_token_id, end_token_ids)` with `"auto"` resolved from the
    model's `special_token_ids`: the padding id to strip from prompts (None
    for lists, which are never stripped) and a tuple of end ids or None."""
    known = getattr(model, "special_token_ids", {})
    if pad_token_id == "auto":
        pad_token_id = known.get("pad", 0)
    prompts = prompt_tokens
    if isinstance(prompts, dict):
        prompts = prompts.get("decoder_tokens")
    if isinstance(prompts, (list, tuple)):
        pad_token_id = None
    if end_token_id == "auto":
        end_token_id = known.get("eos")
    return pad_token_id, as_id_tuple(end_token_id) or None


def as_id_tuple(ids):
    """An id, a list of ids or None as a tuple (empty for None)."""
    if ids is None:
        return ()
    return tuple(ids) if isinstance(ids, (list, tuple)) else (ids,)


def pad_after_end(outputs, end_token_ids, pad_token_id):
    """Replaces every token after a row's first end token with padding."""
    if end_token_ids is None:
        return outputs
    is_end = np.isin(outputs, end_token_ids)
    after_end = np.cumsum(is_end, axis=1) - is_end > 0
    return np.where(after_end, pad_token_id, outputs)


def compact_rows(name, tokens, pad_token_id):
    """Each row's tokens without padding, as a list of int arrays."""
    if isinstance(tokens, np.ndarray) or ops.is_tensor(tokens):
        tokens = ops.convert_to_numpy(tokens)
        if tokens.ndim != 2:
            raise ValueError(
                f"`{name}` must be a 2D array (batch, prompt_length) or a "
                f"list of token lists. Received: shape={tokens.shape}"
            )
    rows = [np.asarray(row) for row in tokens]
    if not rows:
        raise ValueError(f"`{name}` is empty: it must hold one prompt or more.")
    for index, row in enumerate(rows):
        if not np.issubdtype(row.dtype, np.integer):
            raise ValueError(
                f"`{name}` must hold integer token ids. Received row {index} "
                f"of dtype {row.dtype}"
            )
    if pad_token_id is not None:
        rows = [row[row != pad_token_id] for row in rows]
    for index, row in enumerate(rows):
        if row.size == 0:
            raise ValueError(
                f"`{name}` row {index} is empty (only padding, id "
                f"{pad_token_id}): every prompt needs at least one token, "
                "such as a start token."
            )
    return rows


def split_prompt(prompt_tokens):
    """`(decoder prompt, encoder inputs)`: a dict prompt holds the decoder's
    under `"decoder_tokens"` and the rest is for the encoder."""
    if not isinstance(prompt_tokens, dict):
        return prompt_tokens, {}
    if "decoder_tokens" not in prompt_tokens:
        raise ValueError(
            "A dict of prompts needs the key 'decoder_tokens' (the start of "
            "each target), beside the encoder's inputs such as "
            f"'encoder_tokens'. Received keys: {sorted(prompt_tokens)}"
        )
    encoder_inputs = {
        name: np.asarray(value)
        for name, value in prompt_tokens.items()
        if name != "decoder_tokens"
    }
    return prompt_tokens["decoder_tokens"], encoder_inputs


def check_model(model, encoder_inputs):
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a Keras model. Received: {type(model).__name__}"
        )
    # A functional model's inputs say whether a prompt must be a dict.
    try:
        expected = model.input
    except (AttributeError, ValueError):  # not called yet: nothing to check
        expected = None
    if isinstance(expected, dict) and not encoder_inputs:
        raise ValueError(
            f"`model` takes the inputs {sorted(expected)}, so "
            "`prompt_tokens` must be a dict with keys 'encoder_tokens' and "
            "'decoder_tokens' (the source and the start of the target). "
            "Received token ids only."
        )


def can_use_cache(model):
    return hasattr(model, "initial_cache") and hasattr(model, "call_with_cache")


def check_length(model, length):
    limit = getattr(model, "sequence_length", None)
    if limit is not None and length > limit:
        raise ValueError(
            "The longest prompt plus `max_new_tokens` must fit the "
            f"model's `sequence_length` ({limit}). Received a total of "
            f"{length}; lower `max_new_tokens`."
        )

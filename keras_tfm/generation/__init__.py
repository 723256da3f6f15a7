"""Autoregressive generation with a key/value cache.

`generate()` decodes from any model that implements the decoding contract
below (`models.CausalLM` and `models.Seq2SeqTransformer` do). Each step runs
the decoder on one new position and attends to the keys and values cached
from earlier steps, instead of running the model over the whole sequence
again.

The decoding contract: a Keras model gets cached generation by having

- `initial_cache(batch_size, max_length, **encoder_inputs)`: an empty cache,
  any nested structure (tuple, dict) of tensors whose first axis is the
  batch. `encoder_inputs` are the prompt dict's entries other than
  `"decoder_tokens"` (an encoder-decoder model encodes them here, once).
- `call_with_cache(tokens, cache, cache_index)`: the logits
  `(batch, n, vocab)` of the `n` tokens at positions `cache_index` on,
  and the updated cache, as `(logits, cache)`. The prompt is prefilled by one
  call at `cache_index=0`, and each step is a call with one token. A model
  with sliding-window attention layers, whose caches are rolling buffers
  that keep the latest positions only, is prefilled by whole chunks of the
  shortest prompt instead, the rest of it step by step.
- optionally `sequence_length`, the longest sequence it takes.

Calling the model itself (`model(tokens)`, or `model(prompt dict)`) must
give the same logits for the whole sequence: that is the uncached path.

The sampling loop is keras-hub's (`keras_hub.samplers`), but for beam
search, which follows `transformers.generate` (`generation.beam`), and the
whole loop, prefill included, is compiled once per input shape through
Keras's own `predict_on_batch` (XLA on TensorFlow and JAX; eager on
PyTorch, where nothing recompiles). A model's `decoder_start_token_id`,
`forced_bos_token_id` and `forced_eos_token_id` (an imported translation
checkpoint's) start its targets and force their first and last tokens, as
transformers does.
"""

import keras
import numpy as np

from keras_tfm.generation import text
from keras_tfm.generation.loop import (
    make_sampler,
    model_cache,
    run_loop,
    step_function,
    stream_steps,
)
from keras_tfm.generation.prompts import (
    can_use_cache,
    check_beam_options,
    check_sampling,
    check_torch_step,
    forced_ids,
    pad_after_end,
    prepare_prompts,
    special_ids,
    with_decoder_start,
)
from keras_tfm.layers.validation import check_positive_int

__all__ = ["generate", "stream"]


def generate(
    model,
    prompt_tokens,
    max_new_tokens,
    sampler="greedy",
    temperature=1.0,
    k=10,
    p=0.9,
    num_beams=4,
    end_token_id="auto",
    pad_token_id="auto",
    seed=None,
    use_cache=True,
    torch_step="auto",
    tokenizer=None,
    stop_strings=None,
    length_penalty=1.0,
    early_stopping=False,
    forced_bos_token_id="auto",
    forced_eos_token_id="auto",
):
    """Generates tokens (or text) after each prompt.

    Prompts of different lengths are batched together. Give them as a list of
    token-id lists, which are taken as they are, or as one array padded with
    `pad_token_id` on the left, on the right, or both: padding is removed
    from an array and each prompt is continued from its own last token, so
    a prompt gives the same output alone or in a batch (for `"greedy"` and
    `"beam"`; random samplers draw differently per batch).

    Args:
        model: A `models.CausalLM` (prompts are token ids), a
            `models.Seq2SeqTransformer` (prompts are a dict with
            `"encoder_tokens"`, the source, or `"encoder_features"` for a
            speech encoder, and `"decoder_tokens"`, the start of the
            target, by default the model's `decoder_start_token_id`), or
            any model
            with the decoding contract of this module. Another Keras model
            mapping tokens `(batch, seq)` to logits `(batch, seq, vocab)` is
            decoded without a cache.
        prompt_tokens: Int token ids `(batch, prompt_length)` or a list of
            lists; for a seq2seq model the dict described above. With a
            `tokenizer`: a string, a conversation (a list of
            `{"role": ..., "content": ...}` messages, rendered with the
            tokenizer's chat template), or a list of either.
        max_new_tokens: Number of tokens to generate after each prompt.
        sampler: `"greedy"`, `"top_k"`, `"top_p"` or `"beam"` (as
            `transformers.generate` runs it with `num_beams`: finished
            hypotheses ranked by their length-penalised score).
        temperature: Divides the logits before sampling; higher is more
            random.
        k: Number of most likely tokens `"top_k"` samples from.
        p: Probability mass `"top_p"` samples from, in `(0, 1]`.
        num_beams: Beams of `"beam"` search.
        end_token_id: The token, or list of tokens, that ends a sequence.
            It is kept in the output and followed by `pad_token_id`;
            decoding stops once every sequence has ended. `"auto"` takes the
            model's `special_token_ids["eos"]` (an imported checkpoint's),
            else none; `None` for none.
        pad_token_id: The padding id of an array of prompts, and of the
            output. `"auto"` takes the model's `special_token_ids["pad"]`
            (None for a checkpoint without one: nothing is removed), or 0
            for a model that records none. `None` removes nothing (T5's
            decoder starts with its padding id); the output is then padded
            with 0. Lists of prompts are never stripped.
        seed: Optional int that makes `"top_k"` and `"top_p"` reproducible.
        use_cache: `False` runs the whole model at every step (for
            comparison; the output is the same, only slower).
        torch_step: How the PyTorch backend runs the cached decode
            steps: `"eager"` (Keras layers called as usual), `"export"`
            (the one-token step traced once per input shape with
            `torch.export`, which leaves Keras's Python out, and
            rewritten to run faster; the prefill, run once, stays eager),
            `"compile"` (the exported step
            compiled by `torch.compile`), or `"auto"`, the fastest on
            this machine (see the generation guide). A step that fails to
            trace runs eagerly, with one warning. Other backends compile the
            whole loop with XLA and take `"auto"` only.
        tokenizer: An `interop.load_tokenizer(directory)` tokenizer: the
            prompts are text and the result is text. `end_token_id="auto"`
            then also takes the tokenizer's end ids.
        stop_strings: A string or a list of strings (with a `tokenizer`):
            each text ends before the first one it holds.
        length_penalty: `"beam"`: a finished hypothesis scores its summed
            log-probabilities divided by its generated length to this
            power (transformers' default 1.0).
        early_stopping: `"beam"`: `False`, `True` or `"never"`, as in
            transformers (see `generation.beam.BeamSearch`).
        forced_bos_token_id: An id every target generated from one start
            token gets as its first token (mBART's or NLLB's target
            language), None, or `"auto"`: the model's
            `forced_bos_token_id` (an imported checkpoint's), else none.
        forced_eos_token_id: An id forced as each row's last new token
            (BART's end id), None, or `"auto"`: the model's
            `forced_eos_token_id`, else none.

    Returns:
        A NumPy int array `(batch, max_new_tokens)`: the tokens generated
        after each prompt. With a `tokenizer`, the text generated after
        each prompt, cut before its end token and stop string: a string for
        one prompt (or conversation), a list of strings for a list.

    Example:

    ```python
    from keras_tfm import generation, models

    model = models.causal_lm(
        vocab_size=50, sequence_length=16, num_layers=1, embed_dim=16,
        num_heads=2, ff_dim=32,
    )
    new_tokens = generation.generate(
        model, [[5, 6, 7], [8, 9]], max_new_tokens=4
    )  # (2, 4)
    ```
    """
    if tokenizer is not None or stop_strings or text.is_text(prompt_tokens):
        return _text(
            generate, text.texts, model, prompt_tokens, max_new_tokens,
            tokenizer, stop_strings, end_token_id, sampler=sampler,
            temperature=temperature, k=k, p=p, num_beams=num_beams,
            pad_token_id=pad_token_id, seed=seed, use_cache=use_cache,
            torch_step=torch_step, length_penalty=length_penalty,
            early_stopping=early_stopping,
            forced_bos_token_id=forced_bos_token_id,
            forced_eos_token_id=forced_eos_token_id,
        )  # fmt: skip
    check_positive_int("max_new_tokens", max_new_tokens)
    check_sampling(sampler, temperature, k, p, num_beams)
    check_beam_options(length_penalty, early_stopping)
    torch_step = check_torch_step(torch_step)
    prompt_tokens = with_decoder_start(model, prompt_tokens)
    pad_token_id, end_token_ids = special_ids(
        model, prompt_tokens, pad_token_id, end_token_id
    )
    rows, lengths, encoder_inputs = prepare_prompts(
        model, prompt_tokens, max_new_tokens, pad_token_id
    )
    pad_token_id = pad_token_id or 0
    use_cache = use_cache and can_use_cache(model)
    options = {
        "use_cache": use_cache,
        "torch_step": torch_step,
        "temperature": temperature,
        "k": k,
        "p": p,
        "num_beams": num_beams,
        "end_token_ids": end_token_ids,
        "length_penalty": length_penalty,
        "early_stopping": early_stopping,
        "forced_ids": forced_ids(
            model, forced_bos_token_id, forced_eos_token_id
        ),
    }
    # Beam search keeps exact per-prompt results only when the batch's
    # prompts start generating at the same position, so it runs one group
    # of equal lengths at a time.
    groups = (
        [np.flatnonzero(lengths == n) for n in np.unique(lengths)]
        if sampler == "beam"
        else [np.arange(len(rows))]
    )
    outputs = np.full((len(rows), max_new_tokens), pad_token_id, "int32")
    for group in groups:
        buffer = np.full(
            (len(group), lengths[group].max() + max_new_tokens),
            _filler_id(pad_token_id, end_token_ids),
            "int32",
        )
        for position, row in enumerate(group):
            buffer[position, : lengths[row]] = rows[row]
        inputs = {
            **{name: value[group] for name, value in encoder_inputs.items()},
            "tokens": buffer,
            "prompt_lengths": lengths[group],
        }
        tokens = run_loop(model, sampler, inputs, seed, options)
        for position, row in enumerate(group):
            start = lengths[row]
            outputs[row] = tokens[position, start : start + max_new_tokens]
    return pad_after_end(outputs, end_token_ids, pad_token_id)


def stream(
    model,
    prompt_tokens,
    max_new_tokens,
    sampler="greedy",
    temperature=1.0,
    k=10,
    p=0.9,
    end_token_id="auto",
    pad_token_id="auto",
    seed=None,
    torch_step="auto",
    tokenizer=None,
    stop_strings=None,
    forced_bos_token_id="auto",
    forced_eos_token_id="auto",
):
    """Yields generated tokens (or text) as they are produced.

    The same decoding as `generate` (the key/value cache, keras-hub's
    samplers, the same prompts and options), run as a Python loop over the
    model's prefill and decode steps so that an application can show text
    as it appears. On PyTorch the steps are traced as `torch_step` says; on
    TensorFlow and JAX they run eagerly (`generate` compiles its whole loop
    and is faster when nothing needs to be shown before the end). Greedy
    streaming yields exactly `generate`'s tokens.

    Args:
        model: A model with the decoding contract of this module
            (`models.CausalLM`, `models.Seq2SeqTransformer`, ...).
        prompt_tokens: As for `generate`.
        max_new_tokens: Number of tokens to generate after each prompt.
        sampler: `"greedy"`, `"top_k"` or `"top_p"` (beam search cannot
            stream: its best sequence is known only at the end).
        temperature: As for `generate`.
        k: As for `generate`.
        p: As for `generate`.
        end_token_id: As for `generate`; a row that has
            ended yields `pad_token_id`, and the stream stops once every
            row has ended.
        pad_token_id: As for `generate`.
        seed: As for `generate`.
        torch_step: As for `generate`.
        tokenizer: As for `generate`: the prompts are text and the stream
            yields text.
        stop_strings: As for `generate`; the stream stops there.
        forced_bos_token_id: As for `generate`.
        forced_eos_token_id: As for `generate`.

    Returns:
        A generator of NumPy int arrays `(batch,)`: the first new token of
        every prompt, then the second, and so on. With a `tokenizer`, a
        generator of text pieces that add up to `generate`'s text: strings
        for one prompt, lists of strings (one per prompt, `""` for none
        yet) for a list. A piece holds whole characters only: the bytes of
        a character split over tokens wait for its last token, and text
        that may begin a stop string waits until it cannot.

    Example:

    ```python
    from keras_tfm import generation, models

    model = models.causal_lm(
        vocab_size=50, sequence_length=16, num_layers=1, embed_dim=16,
        num_heads=2, ff_dim=32,
    )
    for tokens in generation.stream(model, [[5, 6, 7]], max_new_tokens=4):
        print(tokens)  # one new token per prompt, as soon as it exists
    ```
    """
    if tokenizer is not None or stop_strings or text.is_text(prompt_tokens):
        return _text(
            stream, text.stream_text, model, prompt_tokens, max_new_tokens,
            tokenizer, stop_strings, end_token_id, sampler=sampler,
            temperature=temperature, k=k, p=p, pad_token_id=pad_token_id,
            seed=seed, torch_step=torch_step,
            forced_bos_token_id=forced_bos_token_id,
            forced_eos_token_id=forced_eos_token_id,
        )  # fmt: skip
    check_positive_int("max_new_tokens", max_new_tokens)
    prompt_tokens = with_decoder_start(model, prompt_tokens)
    if sampler == "beam":
        raise ValueError(
            "`stream` cannot use `sampler='beam'`: beam search knows its "
            "best sequence only at the end. Use `generate`."
        )
    check_sampling(sampler, temperature, k, p, num_beams=1)
    torch_step = check_torch_step(torch_step)
    if not can_use_cache(model):
        raise ValueError(
            "`stream` decodes with the model's `initial_cache` and "
            "`call_with_cache` (see `keras_tfm.generation`); "
            f"{type(model).__name__} has neither."
        )
    pad_token_id, end_token_ids = special_ids(
        model, prompt_tokens, pad_token_id, end_token_id
    )
    rows, lengths, encoder_inputs = prepare_prompts(
        model, prompt_tokens, max_new_tokens, pad_token_id
    )
    pad_token_id = pad_token_id or 0
    sampler = make_sampler(sampler, temperature, k, p, num_beams=1)
    if getattr(sampler, "seed_generator", None) is not None:
        sampler.seed_generator = keras.random.SeedGenerator(seed)
    step = step_function(model, torch_step, model_cache(model))
    return stream_steps(
        model, step, sampler, rows, lengths, encoder_inputs,
        max_new_tokens, end_token_ids, pad_token_id,
        forced_ids(model, forced_bos_token_id, forced_eos_token_id),
    )  # fmt: skip


def _filler_id(pad_token_id, end_token_ids):
    """The id that fills the positions still to generate: not an end id,
    which keras-hub's samplers would take for a row that has ended (a
    checkpoint's padding id 0 is often its end id too)."""
    taken = set(end_token_ids or ())
    return next(
        i for i in (pad_token_id, *range(len(taken) + 1)) if i not in taken
    )


def _text(
    decode, finish, model, prompts, max_new_tokens, tokenizer, stop_strings,
    end_token_id, **options,
):  # fmt: skip
    """`generate` or `stream` (`decode`) for text: the prompts encoded,
    decoded as ids, and the new ids turned into text by `finish`."""
    single, rows, end_token_ids, stop_strings = text.prepare(
        model, prompts, tokenizer, stop_strings, end_token_id
    )
    tokens = decode(
        model, rows, max_new_tokens, end_token_id=end_token_ids or None,
        **options,
    )  # fmt: skip
    return finish(tokens, single, tokenizer, end_token_ids, stop_strings)

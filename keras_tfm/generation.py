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
  call at `cache_index=0`, and each step is a call with one token.
- optionally `sequence_length`, the longest sequence it takes.

Calling the model itself (`model(tokens)`, or `model(prompt dict)`) must
give the same logits for the whole sequence: that is the uncached path.

The sampling loop is keras-hub's (`keras_hub.samplers`), and the whole
loop, prefill included, is compiled once per input shape through Keras's
own `predict_on_batch` (XLA on TensorFlow and JAX; eager on PyTorch, where
nothing recompiles).
"""

import warnings

import keras
import numpy as np
from keras import ops

from keras_tfm.extras import require
from keras_tfm.layers.validation import check_choice, check_positive_int

__all__ = ["generate", "stream"]

SAMPLERS = ("greedy", "top_k", "top_p", "beam")
TORCH_STEPS = ("auto", "eager", "export", "compile")

# The attribute of a model that holds its compiled loops, so that calling
# `generate` again reuses the compiled program. Keras's saving skips
# attributes that start with "__", so the loops never enter a `.keras` file.
_LOOPS_ATTRIBUTE = "__keras_tfm_generation_loops"


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
):
    """Generates tokens after each prompt.

    Prompts of different lengths are batched together. Give them as a list of
    token-id lists, which are taken as they are, or as one array padded with
    `pad_token_id` on the left, on the right, or both: padding is removed
    from an array and each prompt is continued from its own last token, so
    a prompt gives the same output alone or in a batch (for `"greedy"` and
    `"beam"`; random samplers draw differently per batch).

    Args:
        model: A `models.CausalLM` (prompts are token ids), a
            `models.Seq2SeqTransformer` (prompts are a dict with
            `"encoder_tokens"`, the source, and `"decoder_tokens"`, the
            start of the target, usually its start token), or any model
            with the decoding contract of this module. Another Keras model
            mapping tokens `(batch, seq)` to logits `(batch, seq, vocab)` is
            decoded without a cache.
        prompt_tokens: Int token ids `(batch, prompt_length)` or a list of
            lists; for a seq2seq model the dict described above.
        max_new_tokens: Number of tokens to generate after each prompt.
        sampler: `"greedy"`, `"top_k"`, `"top_p"` or `"beam"`.
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
        torch_step: How the PyTorch backend runs the cached prefill and
            decode steps: `"eager"` (Keras layers called as usual),
            `"export"` (traced once per input shape with `torch.export`,
            which leaves Keras's Python out), `"compile"` (the exported
            step compiled by `torch.compile`), or `"auto"`, the fastest on
            this machine (see the generation guide). A step that fails to
            trace runs eagerly, with one warning. Other backends compile the
            whole loop with XLA and take `"auto"` only.

    Returns:
        A NumPy int array `(batch, max_new_tokens)`: the tokens generated
        after each prompt.

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
    check_positive_int("max_new_tokens", max_new_tokens)
    _check_sampling(sampler, temperature, k, p, num_beams)
    torch_step = _check_torch_step(torch_step)
    pad_token_id, end_token_ids = _special_ids(
        model, prompt_tokens, pad_token_id, end_token_id
    )
    rows, lengths, encoder_inputs = _prepare_prompts(
        model, prompt_tokens, max_new_tokens, pad_token_id
    )
    pad_token_id = pad_token_id or 0
    use_cache = use_cache and _can_use_cache(model)
    options = {
        "use_cache": use_cache,
        "torch_step": torch_step,
        "temperature": temperature,
        "k": k,
        "p": p,
        "num_beams": num_beams,
        "end_token_ids": end_token_ids,
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
            pad_token_id,
            "int32",
        )
        for position, row in enumerate(group):
            buffer[position, : lengths[row]] = rows[row]
        inputs = {
            **{name: value[group] for name, value in encoder_inputs.items()},
            "tokens": buffer,
            "prompt_lengths": lengths[group],
        }
        tokens = _run_loop(model, sampler, inputs, seed, options)
        for position, row in enumerate(group):
            start = lengths[row]
            outputs[row] = tokens[position, start : start + max_new_tokens]
    return _pad_after_end(outputs, end_token_ids, pad_token_id)


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
):
    """Yields generated tokens as they are produced, one step at a time.

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

    Returns:
        A generator of NumPy int arrays `(batch,)`: the first new token of
        every prompt, then the second, and so on.

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
    check_positive_int("max_new_tokens", max_new_tokens)
    if sampler == "beam":
        raise ValueError(
            "`stream` cannot use `sampler='beam'`: beam search knows its "
            "best sequence only at the end. Use `generate`."
        )
    _check_sampling(sampler, temperature, k, p, num_beams=1)
    torch_step = _check_torch_step(torch_step)
    if not _can_use_cache(model):
        raise ValueError(
            "`stream` decodes with the model's `initial_cache` and "
            "`call_with_cache` (see `keras_tfm.generation`); "
            f"{type(model).__name__} has neither."
        )
    pad_token_id, end_token_ids = _special_ids(
        model, prompt_tokens, pad_token_id, end_token_id
    )
    rows, lengths, encoder_inputs = _prepare_prompts(
        model, prompt_tokens, max_new_tokens, pad_token_id
    )
    pad_token_id = pad_token_id or 0
    sampler = _make_sampler(sampler, temperature, k, p, num_beams=1)
    if getattr(sampler, "seed_generator", None) is not None:
        sampler.seed_generator = keras.random.SeedGenerator(seed)
    step = _step_function(model, torch_step, _model_cache(model))
    return _stream_steps(
        model, step, sampler, rows, lengths, encoder_inputs,
        max_new_tokens, end_token_ids, pad_token_id,
    )  # fmt: skip


def _stream_steps(
    model, step, sampler, rows, lengths, encoder_inputs, max_new_tokens,
    end_token_ids, pad_token_id,
):  # fmt: skip
    """The generator behind `stream`.

    Every row runs through the same positions: from the shortest prompt on,
    a row copies its own prompt until it ends, then samples. A row's k-th
    new token is yielded once every row has one.
    """
    batch_size, total = len(rows), lengths.max() + max_new_tokens
    tokens = np.full((batch_size, total), pad_token_id, "int32")
    for row, prompt in enumerate(rows):
        tokens[row, : len(prompt)] = prompt
    start = lengths.min()
    cache = model.initial_cache(batch_size, total, **encoder_inputs)
    _, cache = step(ops.convert_to_tensor(tokens[:, :start]), cache, 0)
    ended = np.zeros(batch_size, bool)
    for index in range(start, total):
        token = ops.convert_to_tensor(tokens[:, index - 1 : index])
        logits, cache = step(token, cache, index - 1)
        probabilities = sampler.compute_probabilities(logits[:, 0])
        sampled = ops.convert_to_numpy(sampler.get_next_token(probabilities))
        generating = index >= lengths
        tokens[generating, index] = sampled[generating]
        # The k-th new token of every row exists once the longest prompt
        # has produced its own.
        new_index = index - lengths.max()
        if 0 <= new_index < max_new_tokens:
            new_tokens = tokens[np.arange(batch_size), lengths + new_index]
            new_tokens = np.where(ended, pad_token_id, new_tokens)
            yield new_tokens
            if end_token_ids is not None:
                ended |= np.isin(new_tokens, end_token_ids)
                if ended.all():
                    return


def _prepare_prompts(model, prompt_tokens, max_new_tokens, pad_token_id):
    """`(rows, lengths, encoder_inputs)`, checked: each prompt's tokens
    without padding, their lengths, and the encoder's inputs if any."""
    prompt_tokens, encoder_inputs = _split_prompt(prompt_tokens)
    _check_model(model, encoder_inputs)
    rows = _compact_rows("prompt_tokens", prompt_tokens, pad_token_id)
    for name, value in encoder_inputs.items():
        if len(value) != len(rows):
            raise ValueError(
                f"`{name}` and `decoder_tokens` must have the same batch "
                f"size. Received: {len(value)} and {len(rows)}"
            )
    lengths = np.array([len(row) for row in rows])
    _check_length(model, lengths.max() + max_new_tokens)
    return rows, lengths, encoder_inputs


def _check_sampling(sampler, temperature, k, p, num_beams):
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


def _check_torch_step(torch_step):
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


def _run_loop(model, sampler, inputs, seed, options):
    """The token buffer after the compiled loop has filled it."""
    loop = _generation_loop(
        model,
        sampler,
        input_shapes=tuple(value.shape for value in inputs.values()),
        **options,
    )
    loop.reseed(seed)
    return np.asarray(loop.predict_on_batch(inputs))


def _special_ids(model, prompt_tokens, pad_token_id, end_token_id):
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
    if end_token_id is None or isinstance(end_token_id, (list, tuple)):
        end_token_ids = tuple(end_token_id) if end_token_id else None
    else:
        end_token_ids = (end_token_id,)
    return pad_token_id, end_token_ids


def _pad_after_end(outputs, end_token_ids, pad_token_id):
    """Replaces every token after a row's first end token with padding."""
    if end_token_ids is None:
        return outputs
    is_end = np.isin(outputs, end_token_ids)
    after_end = np.cumsum(is_end, axis=1) - is_end > 0
    return np.where(after_end, pad_token_id, outputs)


def _compact_rows(name, tokens, pad_token_id):
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


def _split_prompt(prompt_tokens):
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


def _check_model(model, encoder_inputs):
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


def _can_use_cache(model):
    return hasattr(model, "initial_cache") and hasattr(model, "call_with_cache")


def _check_length(model, length):
    limit = getattr(model, "sequence_length", None)
    if limit is not None and length > limit:
        raise ValueError(
            "The longest prompt plus `max_new_tokens` must fit the "
            f"model's `sequence_length` ({limit}). Received a total of "
            f"{length}; lower `max_new_tokens`."
        )


class _GenerationLoop(keras.Model):
    """Prefill and keras-hub's sampling loop as one Keras model.

    Being a model lets `predict_on_batch` compile the whole loop per input
    shape on each backend, with the decoded model's weights (and the
    sampler's random state) passed in as state rather than baked in as
    constants.
    """

    def __init__(self, model, use_cache, sampler, end_token_ids, step):
        super().__init__(name="generation_loop")
        self.wrapped_model = model
        self.use_cache = use_cache
        # The model's `call_with_cache`, or on PyTorch its traced version.
        self.call_with_cache = step
        self.sampler = sampler
        # Tracked, so that the random state advances between calls.
        self.seed_generator = getattr(sampler, "seed_generator", None)
        self.end_token_ids = end_token_ids
        self.built = True

    def reseed(self, seed):
        if self.seed_generator is not None:
            fresh = keras.random.SeedGenerator(seed)
            self.seed_generator.state.assign(fresh.state.value)

    def call(self, inputs):
        tokens = inputs["tokens"]
        encoder_inputs = {
            name: value
            for name, value in inputs.items()
            if name not in ("tokens", "prompt_lengths")
        }
        # The sampler overwrites no prompt token and starts at the shortest
        # prompt; longer prompts are copied through until they end.
        positions = ops.arange(ops.shape(tokens)[1])[None, :]
        prompt_lengths = ops.cast(inputs["prompt_lengths"], "int32")
        prompt_mask = positions < prompt_lengths[:, None]
        if self.use_cache:
            next_logits, cache = self._cached_step(tokens, encoder_inputs)
        else:
            next_logits, cache = self._uncached_step(encoder_inputs)
        return self.sampler(
            next_logits,
            tokens,
            cache=cache,
            index=ops.min(prompt_lengths),
            mask=prompt_mask,
            stop_token_ids=self.end_token_ids,
            model=self,
        )

    def _cached_step(self, tokens, encoder_inputs):
        """The sampler's step function and the prefilled cache."""
        model = self.wrapped_model
        batch_size, max_length = ops.shape(tokens)[0], ops.shape(tokens)[1]
        cache = model.initial_cache(batch_size, max_length, **encoder_inputs)
        _, cache = self.call_with_cache(tokens, cache, 0)

        def next_logits(tokens, cache, index):
            # Beam search calls this with `num_beams` rows per prompt.
            token = ops.slice(tokens, (0, index - 1), (ops.shape(tokens)[0], 1))
            logits, cache = self.call_with_cache(token, cache, index - 1)
            return logits[:, 0, :], None, cache

        return next_logits, cache

    def _uncached_step(self, encoder_inputs):
        """The sampler's step function running the whole model, and the
        encoder inputs as its cache."""

        def next_logits(tokens, cache, index):
            inputs = {**cache, "decoder_tokens": tokens} if cache else tokens
            logits = self.wrapped_model(inputs)
            return ops.take(logits, index - 1, axis=1), None, cache

        return next_logits, encoder_inputs


def _make_sampler(sampler, temperature, k, p, num_beams):
    samplers = require("keras_hub.samplers", "nlp", "keras_tfm.generation")
    if sampler == "greedy":
        return samplers.GreedySampler()
    if sampler == "top_k":
        return samplers.TopKSampler(k=k, temperature=temperature)
    if sampler == "top_p":
        return samplers.TopPSampler(p=p, temperature=temperature)
    return samplers.BeamSampler(num_beams=num_beams, temperature=temperature)


def _generation_loop(model, sampler, **options):
    """The compiled loop for this model, sampler and input shapes.

    One loop per input shape: TensorFlow would otherwise retrace a second
    shape with unknown dimensions, which keras-hub's beam search rejects.
    """
    key = (sampler, *sorted(options.items()))
    loops = _model_cache(model)
    if key not in loops:
        loop = _GenerationLoop(
            model,
            options["use_cache"],
            _make_sampler(
                sampler,
                options["temperature"],
                options["k"],
                options["p"],
                options["num_beams"],
            ),
            options["end_token_ids"],
            _step_function(model, options["torch_step"], loops),
        )
        # XLA on TensorFlow and JAX; torch.compile would recompile as the
        # loop's index changes, and eager PyTorch runs the step as is.
        loop.compile(jit_compile=keras.backend.backend() != "torch")
        loops[key] = loop
    return loops[key]


def _model_cache(model):
    """The dict of compiled loops and traced steps kept on `model`."""
    loops = getattr(model, _LOOPS_ATTRIBUTE, None)
    if loops is None:
        loops = {}
        # Set past Keras's attribute tracking: the loops are a cache that
        # lives and dies with the model, not one of its layers (a global
        # cache would keep every model it has seen alive).
        object.__setattr__(model, _LOOPS_ATTRIBUTE, loops)
    return loops


def _step_function(model, torch_step, loops):
    """What the loop calls for a cached step: `model.call_with_cache`, or
    on PyTorch its `_TorchStep`, one per mode and model."""
    if torch_step in (None, "eager") or not _can_use_cache(model):
        return getattr(model, "call_with_cache", None)
    key = ("torch_step", torch_step)
    if key not in loops:
        loops[key] = _TorchStep(model, compile_program=torch_step == "compile")
    return loops[key]


class _TorchStep:
    """A model's `call_with_cache`, traced once per input shape on PyTorch.

    `torch.export` in non-strict mode runs Keras's Python once and records
    only the tensor operations, so a traced step no longer pays Keras's
    per-layer call overhead; with `compile_program`, `torch.compile` then
    fuses the recorded program. The model is traced as a sub-module, so the
    program reads its current weights: training after a trace is seen. A
    trace that fails makes every later call run eagerly, after one warning.
    """

    def __init__(self, model, compile_program):
        self.model = model
        self.compile_program = compile_program
        self.programs = {}
        self.failed = False

    def __call__(self, tokens, cache, cache_index):
        if self.failed:
            return self.model.call_with_cache(tokens, cache, cache_index)
        import torch

        # On the tokens' device: a program traced with the index on one
        # device refuses it on another, and callers pass a Python int
        # (`stream`) or a tensor on the accelerator (`generate`'s loop).
        index = torch.as_tensor(
            cache_index, dtype=torch.int32, device=tokens.device
        )
        key = tuple(
            tuple(tensor.shape)
            for tensor in keras.tree.flatten((tokens, cache))
        )
        if key not in self.programs:
            try:
                self.programs[key] = self._trace(tokens, cache, index)
            except Exception as error:  # any tracing failure: run eagerly
                self.failed = True
                warnings.warn(
                    "keras_tfm.generation could not trace the decode step "
                    f"with torch.export ({type(error).__name__}: {error}); "
                    "decoding runs eagerly instead.",
                    stacklevel=2,
                )
                return self.model.call_with_cache(tokens, cache, cache_index)
        return self.programs[key](tokens, cache, index)

    def _trace(self, tokens, cache, index):
        import torch

        model = self.model

        class Step(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, tokens, cache, index):
                return self.model.call_with_cache(tokens, cache, index)

        with torch.no_grad():
            program = torch.export.export(
                Step(), (tokens, cache, index), strict=False
            ).module()
        if self.compile_program:
            program = torch.compile(program)
        return program

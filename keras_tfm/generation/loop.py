"""The compiled generation loop (keras-hub's samplers inside one Keras
model) and the step-by-step loop behind `stream`."""

import math

import keras
import numpy as np
from keras import ops

from keras_tfm.extras import require
from keras_tfm.generation.prompts import can_use_cache
from keras_tfm.generation.torch_step import TorchStep
from keras_tfm.layers.attention import MultiHeadSelfAttention

# The attribute of a model that holds its compiled loops, so that calling
# `generate` again reuses the compiled program. Keras's saving skips
# attributes that start with "__", so the loops never enter a `.keras` file.
_LOOPS_ATTRIBUTE = "__keras_tfm_generation_loops"


def forced_logits(logits, index, last_index, forced_ids):
    """`logits` `(batch, vocab)` of position `index`, with every id but the
    forced one at minus infinity where transformers forces one: the
    `forced_bos_token_id` at position 1, the `forced_eos_token_id` at each
    row's `last_index`. `forced_ids`: `(bos, eos)`, each an id or None."""
    forced_bos, forced_eos = forced_ids
    if forced_bos is None and forced_eos is None:
        return logits
    logits = ops.cast(logits, "float32")
    ids = ops.arange(ops.shape(logits)[-1])[None, :]

    def only(token_id):
        return ops.where(ids == token_id, 0.0, -float("inf"))

    if forced_bos is not None:
        logits = ops.where(index == 1, only(forced_bos), logits)
    if forced_eos is not None:
        at_end = ops.reshape(index == last_index, (-1, 1))
        logits = ops.where(at_end, only(forced_eos), logits)
    return logits


def stream_steps(
    model, step, sampler, rows, lengths, encoder_inputs, max_new_tokens,
    end_token_ids, pad_token_id, forced_ids=(None, None),
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
    # The positions before the first step's; a rolling (sliding-window)
    # cache must not hold a position beyond the one it decodes next.
    if start > 1:
        _, cache = step(ops.convert_to_tensor(tokens[:, : start - 1]), cache, 0)
    ended = np.zeros(batch_size, bool)
    for index in range(start, total):
        token = ops.convert_to_tensor(tokens[:, index - 1 : index])
        logits, cache = step(token, cache, index - 1)
        logits = forced_logits(
            logits[:, 0], index, lengths + max_new_tokens - 1, forced_ids
        )
        probabilities = sampler.compute_probabilities(logits)
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


def run_loop(model, sampler, inputs, seed, options):
    """The token buffer after the compiled loop has filled it."""
    loop = generation_loop(
        model,
        sampler,
        input_shapes=tuple(value.shape for value in inputs.values()),
        prefill_length=int(np.max(inputs["prompt_lengths"])),
        **options,
    )
    loop.reseed(seed)
    return np.asarray(loop.predict_on_batch(inputs))


class GenerationLoop(keras.Model):
    """Prefill and keras-hub's sampling loop as one Keras model.

    Being a model lets `predict_on_batch` compile the whole loop per input
    shape on each backend, with the decoded model's weights (and the
    sampler's random state) passed in as state rather than baked in as
    constants.
    """

    def __init__(
        self, model, use_cache, sampler, end_token_ids, step, forced_ids,
        prefill_length,
    ):  # fmt: skip
        super().__init__(name="generation_loop")
        self.wrapped_model = model
        self.use_cache = use_cache
        # The longest prompt: what the prefill runs over. A static size, so
        # that XLA compiles it; the positions still to generate are left
        # out of it (they were a third of the work at 64 new tokens).
        self.prefill_length = prefill_length
        # The model's `call_with_cache`, or on PyTorch its traced version.
        self.call_with_cache = step
        self.sampler = sampler
        # Tracked, so that the random state advances between calls.
        self.seed_generator = getattr(sampler, "seed_generator", None)
        self.end_token_ids = end_token_ids
        self.forced_ids = forced_ids
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
        start = ops.min(prompt_lengths)
        if self.use_cache:
            step, cache, start = self._cached_step(
                tokens, encoder_inputs, start
            )
        else:
            step, cache = self._uncached_step(encoder_inputs)
        # Each row's last new token; beam search runs prompts of one
        # length, so its rows (`num_beams` per prompt) share it.
        from keras_tfm.generation.beam import BeamSearch  # needs keras-hub

        last_index = ops.shape(tokens)[1] - 1
        if not isinstance(self.sampler, BeamSearch):
            last_index = last_index - ops.max(prompt_lengths) + prompt_lengths

        def next_logits(tokens, cache, index):
            logits, hidden_states, cache = step(tokens, cache, index)
            logits = forced_logits(logits, index, last_index, self.forced_ids)
            return logits, hidden_states, cache

        return self.sampler(
            next_logits,
            tokens,
            cache=cache,
            index=start,
            mask=prompt_mask,
            stop_token_ids=self.end_token_ids,
            model=self,
        )

    def _cached_step(self, tokens, encoder_inputs, start):
        """The sampler's step function, the prefilled cache and the index
        the sampler starts at (`start`, the shortest prompt's length, or
        earlier)."""
        model = self.wrapped_model
        batch_size, max_length = ops.shape(tokens)[0], ops.shape(tokens)[1]
        cache = model.initial_cache(batch_size, max_length, **encoder_inputs)
        if sliding_window_of(model) is None:
            # One call over the longest prompt: the positions past `start`
            # (shorter prompts' filler) are decoded again, step by step,
            # over what it wrote.
            prompts = ops.slice(
                tokens, (0, 0), (batch_size, self.prefill_length)
            )
            _, cache = self.call_with_cache(prompts, cache, 0)
        else:
            cache, start = self._prefill_in_chunks(tokens, cache, start)

        def next_logits(tokens, cache, index):
            # Beam search calls this with `num_beams` rows per prompt.
            token = ops.slice(tokens, (0, index - 1), (ops.shape(tokens)[0], 1))
            logits, cache = self.call_with_cache(token, cache, index - 1)
            return logits[:, 0, :], None, cache

        return next_logits, cache, start

    def _prefill_in_chunks(self, tokens, cache, start):
        """`(cache, index)`: the cache holding the positions before
        `index - 1`, written by whole chunks of prompt tokens.

        A rolling (sliding-window) cache keeps the latest positions only,
        so a prefill must not write the padding past the shortest prompt:
        it writes every whole chunk before `start - 1`, and the sampler
        decodes the rest of the prompt step by step. Chunks of about
        `sqrt(max_length)` positions balance the number of chunk calls
        against those steps; their shape is static, as XLA needs.
        """
        batch_size, max_length = ops.shape(tokens)[0], ops.shape(tokens)[1]
        chunk = max(1, math.isqrt(max_length))
        chunks = (start - 1) // chunk

        def prefill(index, cache):
            position = index * chunk
            part = ops.slice(tokens, (0, position), (batch_size, chunk))
            _, cache = self.call_with_cache(part, cache, position)
            return index + 1, cache

        _, cache = ops.while_loop(
            lambda index, cache: index < chunks, prefill, (0, cache)
        )
        return cache, chunks * chunk + 1

    def _uncached_step(self, encoder_inputs):
        """The sampler's step function running the whole model, and the
        encoder inputs as its cache."""

        def next_logits(tokens, cache, index):
            inputs = {**cache, "decoder_tokens": tokens} if cache else tokens
            logits = self.wrapped_model(inputs)
            return ops.take(logits, index - 1, axis=1), None, cache

        return next_logits, encoder_inputs


def make_sampler(
    sampler, temperature, k, p, num_beams, length_penalty=1.0,
    early_stopping=False,
):  # fmt: skip
    samplers = require("keras_hub.samplers", "nlp", "keras_tfm.generation")
    if sampler == "greedy":
        return samplers.GreedySampler()
    if sampler == "top_k":
        return samplers.TopKSampler(k=k, temperature=temperature)
    if sampler == "top_p":
        return samplers.TopPSampler(p=p, temperature=temperature)
    from keras_tfm.generation.beam import BeamSearch  # needs keras-hub

    return BeamSearch(
        num_beams, length_penalty, early_stopping, temperature=temperature
    )


def generation_loop(model, sampler, **options):
    """The compiled loop for this model, sampler and input shapes.

    One loop per input shape: TensorFlow would otherwise retrace a second
    shape with unknown dimensions, which keras-hub's beam search rejects.
    """
    key = (sampler, *sorted(options.items()))
    loops = model_cache(model)
    if key not in loops:
        loop = GenerationLoop(
            model,
            options["use_cache"],
            make_sampler(
                sampler,
                options["temperature"],
                options["k"],
                options["p"],
                options["num_beams"],
                options["length_penalty"],
                options["early_stopping"],
            ),
            options["end_token_ids"],
            step_function(model, options["torch_step"], loops),
            options["forced_ids"],
            options["prefill_length"],
        )
        # XLA on TensorFlow and JAX; torch.compile would recompile as the
        # loop's index changes, and eager PyTorch runs the step as is.
        loop.compile(jit_compile=keras.backend.backend() != "torch")
        loops[key] = loop
    return loops[key]


def sliding_window_of(model):
    """The smallest sliding window of `model`'s self-attention layers, or
    None when none slides (its cache then holds every position)."""
    windows = [
        layer.sliding_window
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, MultiHeadSelfAttention)
        and layer.sliding_window is not None
    ]
    return min(windows, default=None)


def model_cache(model):
    """The dict of compiled loops and traced steps kept on `model`."""
    loops = getattr(model, _LOOPS_ATTRIBUTE, None)
    if loops is None:
        loops = {}
        # Set past Keras's attribute tracking: the loops are a cache that
        # lives and dies with the model, not one of its layers (a global
        # cache would keep every model it has seen alive).
        object.__setattr__(model, _LOOPS_ATTRIBUTE, loops)
    return loops


def step_function(model, torch_step, loops):
    """What the loop calls for a cached step: `model.call_with_cache`, or
    on PyTorch its `TorchStep`, one per mode and model."""
    if torch_step in (None, "eager") or not can_use_cache(model):
        return getattr(model, "call_with_cache", None)
    key = ("torch_step", torch_step)
    if key not in loops:
        loops[key] = TorchStep(model, compile_program=torch_step == "compile")
    return loops[key]

"""Autoregressive generation with a key/value cache.

`generate()` decodes from a `models.causal_lm` or `models.seq2seq_transformer`
model. Each step runs the decoder on one new position and attends to the
keys and values cached from earlier steps, instead of running the model over
the whole sequence again. The sampling loop is keras-hub's
(`keras_hub.samplers`), and the whole loop, prefill included, is compiled
once per input shape through Keras's own `predict_on_batch` (XLA on
TensorFlow and JAX; eager on PyTorch, where nothing recompiles).
"""

import keras
import numpy as np
from keras import ops

from keras_tfm.layers.validation import check_choice, check_positive_int

__all__ = ["generate"]

SAMPLERS = ("greedy", "top_k", "top_p", "beam")

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
    end_token_id=None,
    pad_token_id=0,
    seed=None,
    use_cache=True,
):
    """Generates tokens after each prompt.

    Prompts of different lengths are batched together. Give them as a list of
    token-id lists, or as one array padded with `pad_token_id` on the left,
    on the right, or both: padding is removed and each prompt is continued
    from its own last token, so a prompt gives the same output alone or in a
    batch (for `"greedy"` and `"beam"`; random samplers draw differently per
    batch).

    Args:
        model: A model from `models.causal_lm` (prompts are token ids) or
            `models.seq2seq_transformer` (prompts are a dict with
            `"encoder_tokens"`, the source, and `"decoder_tokens"`, the
            start of the target, usually its start token). Any other Keras
            model mapping tokens `(batch, seq)` to logits
            `(batch, seq, vocab)` is decoded without a cache.
        prompt_tokens: Int token ids `(batch, prompt_length)` or a list of
            lists; for a seq2seq model the dict described above.
        max_new_tokens: Number of tokens to generate after each prompt.
        sampler: `"greedy"`, `"top_k"`, `"top_p"` or `"beam"`.
        temperature: Divides the logits before sampling; higher is more
            random.
        k: Number of most likely tokens `"top_k"` samples from.
        p: Probability mass `"top_p"` samples from, in `(0, 1]`.
        num_beams: Beams of `"beam"` search.
        end_token_id: Optional token that ends a sequence. It is kept in the
            output and followed by `pad_token_id`; decoding stops once every
            sequence has ended.
        pad_token_id: The padding id of `prompt_tokens` and of the output.
        seed: Optional int that makes `"top_k"` and `"top_p"` reproducible.
        use_cache: `False` runs the whole model at every step (for
            comparison; the output is the same, only slower).

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
    decoder = _CachedDecoder(model, use_cache)
    prompt_tokens, encoder_tokens = decoder.split_prompt(prompt_tokens)
    rows = _compact_rows("prompt_tokens", prompt_tokens, pad_token_id)
    if encoder_tokens is not None:
        encoder_tokens = np.asarray(encoder_tokens)
        if len(encoder_tokens) != len(rows):
            raise ValueError(
                "`encoder_tokens` and `decoder_tokens` must have the same "
                f"batch size. Received: {len(encoder_tokens)} and {len(rows)}"
            )
    lengths = np.array([len(row) for row in rows])
    decoder.check_length(lengths.max() + max_new_tokens)
    options = {
        "temperature": temperature,
        "k": k,
        "p": p,
        "num_beams": num_beams,
        "end_token_id": end_token_id,
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
        inputs = {"tokens": buffer, "prompt_lengths": lengths[group]}
        if encoder_tokens is not None:
            inputs["encoder_tokens"] = encoder_tokens[group]
        tokens = _run_loop(decoder, sampler, inputs, seed, options)
        for position, row in enumerate(group):
            start = lengths[row]
            outputs[row] = tokens[position, start : start + max_new_tokens]
    return _pad_after_end(outputs, end_token_id, pad_token_id)


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


def _run_loop(decoder, sampler, inputs, seed, options):
    """The token buffer after the compiled loop has filled it."""
    loop = _generation_loop(
        decoder,
        sampler,
        input_shapes=tuple(value.shape for value in inputs.values()),
        **options,
    )
    loop.reseed(seed)
    return np.asarray(loop.predict_on_batch(inputs))


def _pad_after_end(outputs, end_token_id, pad_token_id):
    """Replaces every token after a row's first end token with padding."""
    if end_token_id is None:
        return outputs
    is_end = outputs == end_token_id
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
    rows = [row[row != pad_token_id] for row in rows]
    for index, row in enumerate(rows):
        if row.size == 0:
            raise ValueError(
                f"`{name}` row {index} is empty (only padding, id "
                f"{pad_token_id}): every prompt needs at least one token, "
                "such as a start token."
            )
    return rows


class _CachedDecoder:
    """A builder model's layers, run one position at a time with caches.

    Finds the layers by the names the builders give them. The cached pass
    skips dropout layers, which are the identity at inference.
    """

    def __init__(self, model, use_cache):
        if not isinstance(model, keras.Model):
            raise ValueError(
                "`model` must be a Keras model. Received: "
                f"{type(model).__name__}"
            )
        self.model = model
        names = {layer.name for layer in model.layers}
        self.is_seq2seq = "encoder_block_0" in names
        self.use_cache = use_cache and "decoder_block_0" in names

        def find(*candidates):
            for name in candidates:
                if name in names:
                    return model.get_layer(name)
            return None

        def stack(prefix):
            count = 0
            while f"{prefix}_block_{count}" in names:
                count += 1
            return [
                model.get_layer(f"{prefix}_block_{i}") for i in range(count)
            ]

        self.embedding = find("decoder_embedding", "embedding")
        self.source_embedding = find("encoder_embedding", "embedding")
        self.encoder_blocks = stack("encoder")
        self.decoder_blocks = stack("decoder")
        self.encoder_norm = find("encoder_norm")
        self.decoder_norm = find("decoder_norm")
        self.output_projection = find("logits")

    def split_prompt(self, prompt_tokens):
        """`(decoder prompt, encoder tokens or None)`."""
        if not self.is_seq2seq:
            return prompt_tokens, None
        if not isinstance(prompt_tokens, dict) or set(prompt_tokens) != {
            "encoder_tokens",
            "decoder_tokens",
        }:
            raise ValueError(
                "For a seq2seq model, `prompt_tokens` must be a dict with "
                "keys 'encoder_tokens' and 'decoder_tokens'. Received: "
                f"{type(prompt_tokens).__name__}"
            )
        return prompt_tokens["decoder_tokens"], prompt_tokens["encoder_tokens"]

    def check_length(self, length):
        limit = getattr(self.embedding, "sequence_length", None)
        if limit is not None and length > limit:
            raise ValueError(
                "The longest prompt plus `max_new_tokens` must fit the "
                f"model's `sequence_length` ({limit}). Received a total of "
                f"{length}; lower `max_new_tokens`."
            )

    def logits(self, tokens, encoder_tokens):
        """The model's own full forward pass."""
        if self.is_seq2seq:
            return self.model(
                {"encoder_tokens": encoder_tokens, "decoder_tokens": tokens}
            )
        return self.model(tokens)

    def encode(self, encoder_tokens):
        """`(context, context_padding_mask)` of a seq2seq model."""
        padding_mask = ops.not_equal(encoder_tokens, 0)
        x = self.source_embedding(encoder_tokens)
        for block in self.encoder_blocks:
            x = block(x, padding_mask=padding_mask)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return x, padding_mask

    def initial_cache(self, tokens, encoder_tokens):
        """Caches for `tokens`' whole buffer, filled by one prefill pass."""
        batch_size, max_length = ops.shape(tokens)[0], ops.shape(tokens)[1]
        cache = {"self": []}
        if self.is_seq2seq:
            context, context_mask = self.encode(encoder_tokens)
            cache["cross"] = [
                block.compute_cross_attention_cache(context)
                for block in self.decoder_blocks
            ]
            cache["context_mask"] = context_mask
        x = self.embedding(tokens)
        for index, block in enumerate(self.decoder_blocks):
            x, block_cache = block(
                x,
                cache=block.initial_cache(batch_size, max_length),
                **self._cross_attention_arguments(cache, index),
            )
            cache["self"].append(block_cache)
        return cache

    def step(self, tokens, cache, index):
        """Logits for position `index` from the token at `index - 1`."""
        position = index - 1
        token = ops.slice(tokens, (0, position), (ops.shape(tokens)[0], 1))
        x = self.embedding(token, start_index=position)
        new_cache = {**cache, "self": []}
        for layer_index, block in enumerate(self.decoder_blocks):
            x, block_cache = block(
                x,
                cache=cache["self"][layer_index],
                cache_index=position,
                **self._cross_attention_arguments(cache, layer_index),
            )
            new_cache["self"].append(block_cache)
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        if self.output_projection is None:
            logits = self.embedding(x, reverse=True)
        else:
            logits = self.output_projection(x)
        return logits[:, 0, :], new_cache

    @staticmethod
    def _cross_attention_arguments(cache, layer_index):
        if "cross" not in cache:
            return {}
        return {
            "cross_attention_cache": cache["cross"][layer_index],
            "context_padding_mask": cache["context_mask"],
        }


class _GenerationLoop(keras.Model):
    """Prefill and keras-hub's sampling loop as one Keras model.

    Being a model lets `predict_on_batch` compile the whole loop per input
    shape on each backend, with the decoder's weights (and the sampler's
    random state) passed in as state rather than baked in as constants.
    """

    def __init__(self, decoder, sampler, end_token_id):
        super().__init__(name="generation_loop")
        self.decoder = decoder
        # Held directly too: Keras tracks the weights of a model attribute,
        # not of one inside a plain object like `decoder`.
        self.wrapped_model = decoder.model
        self.sampler = sampler
        # Tracked, so that the random state advances between calls.
        self.seed_generator = getattr(sampler, "seed_generator", None)
        self.end_token_id = end_token_id
        self.built = True

    def reseed(self, seed):
        if self.seed_generator is not None:
            fresh = keras.random.SeedGenerator(seed)
            self.seed_generator.state.assign(fresh.state.value)

    def call(self, inputs):
        tokens = inputs["tokens"]
        encoder_tokens = inputs.get("encoder_tokens")
        # The sampler overwrites no prompt token and starts at the shortest
        # prompt; longer prompts are copied through until they end.
        positions = ops.arange(ops.shape(tokens)[1])[None, :]
        prompt_lengths = ops.cast(inputs["prompt_lengths"], "int32")
        prompt_mask = positions < prompt_lengths[:, None]
        if self.decoder.use_cache:
            cache = self.decoder.initial_cache(tokens, encoder_tokens)

            def next_logits(tokens, cache, index):
                logits, cache = self.decoder.step(tokens, cache, index)
                return logits, None, cache

        else:
            cache = {} if encoder_tokens is None else {"source": encoder_tokens}

            def next_logits(tokens, cache, index):
                logits = self.decoder.logits(tokens, cache.get("source"))
                logits = ops.take(logits, index - 1, axis=1)
                return logits, None, cache

        return self.sampler(
            next_logits,
            tokens,
            cache=cache,
            index=ops.min(prompt_lengths),
            mask=prompt_mask,
            stop_token_ids=(
                None if self.end_token_id is None else (self.end_token_id,)
            ),
            model=self,
        )


def _make_sampler(sampler, temperature, k, p, num_beams):
    try:
        from keras_hub import samplers
    except ImportError as error:
        raise ImportError(
            "keras_tfm.generation samples with keras-hub's samplers: "
            "`pip install keras-tfm[nlp]` (or `keras-hub`)."
        ) from error
    if sampler == "greedy":
        return samplers.GreedySampler()
    if sampler == "top_k":
        return samplers.TopKSampler(k=k, temperature=temperature)
    if sampler == "top_p":
        return samplers.TopPSampler(p=p, temperature=temperature)
    return samplers.BeamSampler(num_beams=num_beams, temperature=temperature)


def _generation_loop(decoder, sampler, **options):
    """The compiled loop for this model, sampler and input shapes.

    One loop per input shape: TensorFlow would otherwise retrace a second
    shape with unknown dimensions, which keras-hub's beam search rejects.
    """
    key = (decoder.use_cache, sampler, *sorted(options.items()))
    loops = getattr(decoder.model, _LOOPS_ATTRIBUTE, None)
    if loops is None:
        loops = {}
        # Set past Keras's attribute tracking: the loops are a cache that
        # lives and dies with the model, not one of its layers (a global
        # cache would keep every model it has seen alive).
        object.__setattr__(decoder.model, _LOOPS_ATTRIBUTE, loops)
    if key not in loops:
        loop = _GenerationLoop(
            decoder,
            _make_sampler(
                sampler,
                options["temperature"],
                options["k"],
                options["p"],
                options["num_beams"],
            ),
            options["end_token_id"],
        )
        # XLA on TensorFlow and JAX; torch.compile would recompile as the
        # loop's index changes, and eager PyTorch runs the step as is.
        loop.compile(jit_compile=keras.backend.backend() != "torch")
        loops[key] = loop
    return loops[key]

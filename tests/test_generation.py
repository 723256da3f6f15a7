"""Key/value caches and `keras_tfm.generation`: cached equals uncached.

The layer tests run on the machine's default attention path (explicit on
CPU TensorFlow and JAX, fused on PyTorch), so each path is covered by the
suite's three runs without compiling both eagerly on every backend.
"""

import zipfile

import keras
import numpy as np
import pytest
from keras import ops

from keras_tfm import (
    DecoderBlock,
    EncoderBlock,
    MultiHeadSelfAttention,
    PositionalEmbedding,
    generation,
    models,
)
from tests.conftest import random_inputs, to_numpy

VOCAB = 40


def decode_in_chunks(layer, x, chunks, **call_options):
    """Runs `layer` over `x` chunk by chunk with a cache; concatenated."""
    cache = layer.initial_cache(x.shape[0], x.shape[1])
    outputs, start = [], 0
    for end in chunks:
        output, cache = layer.call_with_cache(
            x[:, start:end], cache, start, **call_options
        )
        outputs.append(to_numpy(output))
        start = end
    return np.concatenate(outputs, axis=1)


@pytest.mark.parametrize(
    "options",
    [{"causal": True}, {"causal": True, "rotary": True, "num_kv_heads": 2}],
)
def test_cached_self_attention_equals_full_sequence(options):
    layer = MultiHeadSelfAttention(4, **options)
    x = random_inputs(2, 7, 16)
    full = to_numpy(layer(x))
    np.testing.assert_allclose(
        decode_in_chunks(layer, x, [4, 5, 7]), full, atol=1e-5
    )


def test_cached_decoder_block_equals_full_sequence():
    block = DecoderBlock(2, 16, dropout=0, norm_first=True)
    x = random_inputs(2, 6, 8)
    context = random_inputs(2, 5, 8, seed=1)
    context_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    full = block(x, context, context_padding_mask=context_mask)
    cached = decode_in_chunks(
        block,
        x,
        [3, 4, 6],
        cross_attention_cache=block.compute_cross_attention_cache(context),
        context_padding_mask=context_mask,
    )
    np.testing.assert_allclose(cached, to_numpy(full), atol=1e-5)


def test_a_cache_of_the_wrong_shape_is_rejected():
    layer = MultiHeadSelfAttention(4, causal=True)
    x = random_inputs(2, 3, 16)
    with pytest.raises(ValueError, match="must be built before"):
        layer.initial_cache(2, 8)
    layer(x)
    with pytest.raises(ValueError, match="`cache` must have shape"):
        layer.call_with_cache(x, np.zeros((2, 2, 8, 3, 4), "float32"), 0)


def seeded_model(builder, **config):
    """Module fixtures are built before the per-test seed: seeding here keeps
    their weights independent of which tests ran first in this worker."""
    keras.utils.set_random_seed(0)
    return builder(**config)


@pytest.fixture(scope="module")
def language_model():
    return seeded_model(
        models.causal_lm,
        vocab_size=VOCAB,
        sequence_length=24,
        num_layers=2,
        embed_dim=16,
        num_heads=2,
        ff_dim=32,
        num_kv_heads=1,
        rotary=True,
    )


@pytest.fixture(scope="module")
def translator():
    return seeded_model(
        models.seq2seq_transformer,
        vocab_size=VOCAB,
        sequence_length=16,
        num_layers=2,
        embed_dim=16,
        num_heads=2,
        ff_dim=32,
    )


PROMPTS = [[5, 6, 7, 8], [9, 10]]


def test_cached_step_logits_equal_the_full_forward_pass(language_model):
    tokens = np.array([[5, 6, 7, 8, 9, 10]], "int32")
    full = to_numpy(language_model(tokens))
    cache = language_model.initial_cache(1, tokens.shape[1])
    prefill, cache = language_model.call_with_cache(tokens[:, :4], cache, 0)
    np.testing.assert_allclose(to_numpy(prefill), full[:, :4], atol=1e-4)
    for index in range(4, tokens.shape[1]):
        logits, cache = language_model.call_with_cache(
            tokens[:, index : index + 1], cache, index
        )
        np.testing.assert_allclose(
            to_numpy(logits)[:, 0], full[:, index], atol=1e-4
        )


def test_cached_greedy_decoding_gives_the_uncached_tokens(language_model):
    cached = generation.generate(language_model, PROMPTS, 6)
    uncached = generation.generate(language_model, PROMPTS, 6, use_cache=False)
    assert cached.shape == (2, 6)
    np.testing.assert_array_equal(cached, uncached)


def test_batched_and_padded_prompts_give_each_prompt_alone(language_model):
    batched = generation.generate(language_model, PROMPTS, 6)
    left_padded = np.array([[5, 6, 7, 8], [0, 0, 9, 10]])
    np.testing.assert_array_equal(
        generation.generate(language_model, left_padded, 6), batched
    )
    alone = generation.generate(language_model, [PROMPTS[1]], 6)
    np.testing.assert_array_equal(alone[0], batched[1])


def test_top_k_of_one_and_one_beam_are_greedy(language_model):
    greedy = generation.generate(language_model, PROMPTS, 6)
    for options in (
        {"sampler": "top_k", "k": 1},
        {"sampler": "beam", "num_beams": 1},
    ):
        np.testing.assert_array_equal(
            generation.generate(language_model, PROMPTS, 6, **options), greedy
        )


@pytest.mark.parametrize("sampler", ["top_k", "top_p"])
def test_a_seed_reproduces_samples(language_model, sampler):
    def sample(seed):
        return generation.generate(
            language_model, PROMPTS, 8, sampler=sampler, temperature=3.0,
            seed=seed,
        )  # fmt: skip

    first = sample(seed=7)
    np.testing.assert_array_equal(sample(seed=7), first)
    assert not np.array_equal(sample(seed=8), first)


def test_beam_search_with_cache_equals_without(language_model):
    prompts = [[5, 6, 7], [9, 10, 11]]  # one length: one compiled group
    options = {"sampler": "beam", "num_beams": 3}
    np.testing.assert_array_equal(
        generation.generate(language_model, prompts, 5, **options),
        generation.generate(
            language_model, prompts, 5, use_cache=False, **options
        ),
    )


def test_output_after_the_end_token_is_padding(language_model):
    greedy = generation.generate(language_model, PROMPTS, 6)
    end_token = int(greedy[0, 1])
    outputs = generation.generate(
        language_model, PROMPTS, 6, end_token_id=end_token
    )
    row = list(greedy[0])
    first_end = row.index(end_token)
    np.testing.assert_array_equal(
        outputs[0, : first_end + 1], row[: first_end + 1]
    )
    assert (outputs[0, first_end + 1 :] == 0).all()


def test_seq2seq_cached_decoding_equals_uncached(translator):
    prompts = {
        "encoder_tokens": np.array([[5, 6, 7, 0], [8, 9, 10, 11]]),
        "decoder_tokens": np.array([[1], [1]]),
    }
    cached = generation.generate(translator, prompts, 5)
    np.testing.assert_array_equal(
        cached, generation.generate(translator, prompts, 5, use_cache=False)
    )
    alone = generation.generate(
        translator,
        {"encoder_tokens": [[5, 6, 7]], "decoder_tokens": [[1]]},
        5,
    )
    np.testing.assert_array_equal(alone[0], cached[0])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            {"prompt_tokens": np.array([[5, 0], [0, 0]])},
            "`prompt_tokens` row 1 is empty",
        ),
        ({"prompt_tokens": []}, "`prompt_tokens` is empty"),
        ({"prompt_tokens": [[0.5, 2.0]]}, "integer token ids"),
        ({"max_new_tokens": 0}, "`max_new_tokens`"),
        ({"max_new_tokens": 30}, "`max_new_tokens`"),
        ({"sampler": "top_k", "k": 0}, "`k`"),
        ({"sampler": "top_p", "p": 0.0}, "`p` must be in"),
        ({"sampler": "top_p", "p": 1.5}, "`p` must be in"),
        ({"sampler": "nucleus"}, "`sampler`"),
        ({"temperature": 0}, "`temperature`"),
        ({"num_beams": 0}, "`num_beams`"),
    ],
)
def test_bad_arguments_raise_a_clear_error(language_model, arguments, message):
    call = {"prompt_tokens": PROMPTS, "max_new_tokens": 4, **arguments}
    with pytest.raises(ValueError, match=message):
        generation.generate(language_model, **call)


def test_lists_are_never_stripped_and_arrays_use_the_models_padding_id(
    language_model,
):
    # Id 0 is a real token in GPT-2 and Llama 3: a list keeps it.
    as_list = generation.generate(language_model, [[0, 5, 0]], 4)
    as_array = generation.generate(
        language_model, np.array([[0, 5, 0]]), 4, pad_token_id=None
    )
    np.testing.assert_array_equal(as_list, as_array)
    stripped = generation.generate(language_model, np.array([[0, 5, 0]]), 4)
    np.testing.assert_array_equal(
        stripped, generation.generate(language_model, [[5]], 4)
    )
    # A model that records a checkpoint without a padding id strips nothing,
    # and stops at its own end token by default.
    end = int(as_list[0, 1])
    language_model.special_token_ids = {"pad": None, "eos": [end]}
    try:
        recorded = generation.generate(language_model, np.array([[0, 5, 0]]), 4)
    finally:
        language_model.special_token_ids = {}
    expected = as_list[0].copy()
    expected[list(expected).index(end) + 1 :] = 0
    np.testing.assert_array_equal(recorded[0], expected)


def test_a_model_saved_after_generating_holds_only_its_own_weights(
    language_model, tmp_path
):
    generation.generate(language_model, PROMPTS, 2)
    path = tmp_path / "model.keras"
    language_model.save(path)
    weights_file = zipfile.ZipFile(path).read("model.weights.h5")
    assert b"generation_loop" not in weights_file
    reloaded = keras.models.load_model(path)
    assert len(reloaded.weights) == len(language_model.weights)


def test_a_seq2seq_model_needs_both_prompts(translator):
    with pytest.raises(ValueError, match="'encoder_tokens' and"):
        generation.generate(translator, PROMPTS, 4)


@keras.saving.register_keras_serializable(package="keras_tfm_tests")
class UserTranslator(keras.Model):
    """An encoder-decoder written with the blocks, not by a builder: it has
    its own names and layout, and only the decoding contract."""

    def __init__(self, vocab_size=VOCAB, width=16, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = 12
        self.source_embedding = PositionalEmbedding(
            vocab_size, self.sequence_length, width, mask_zero=True
        )
        self.target_embedding = PositionalEmbedding(
            vocab_size, self.sequence_length, width, position="sinusoidal"
        )
        self.encoder = EncoderBlock(2, 32, dropout=0)
        self.decoder = DecoderBlock(2, 32, dropout=0, num_kv_heads=1)
        self.to_logits = keras.layers.Dense(vocab_size)

    def call(self, inputs):
        source = inputs["encoder_tokens"]
        context = self.encoder(self.source_embedding(source))
        x = self.target_embedding(inputs["decoder_tokens"])
        x = self.decoder(x, context, context_padding_mask=source != 0)
        return self.to_logits(x)

    def initial_cache(self, batch_size, max_length, encoder_tokens):
        context = self.encoder(self.source_embedding(encoder_tokens))
        return {
            "self": self.decoder.initial_cache(batch_size, max_length),
            "cross": self.decoder.compute_cross_attention_cache(context),
            "source_mask": ops.not_equal(encoder_tokens, 0),
        }

    def call_with_cache(self, tokens, cache, cache_index):
        x = self.target_embedding(tokens, start_index=cache_index)
        x, self_cache = self.decoder.call_with_cache(
            x,
            cache["self"],
            cache_index,
            cross_attention_cache=cache["cross"],
            context_padding_mask=cache["source_mask"],
        )
        return self.to_logits(x), {**cache, "self": self_cache}


def test_a_model_of_ones_own_gets_cached_generation():
    model = UserTranslator()
    prompts = {
        "encoder_tokens": np.array([[5, 6, 7, 0], [8, 9, 10, 11]]),
        "decoder_tokens": [[1], [1, 12, 13]],
    }
    model({"encoder_tokens": prompts["encoder_tokens"][:, :2],
           "decoder_tokens": np.ones((2, 1), "int32")})  # fmt: skip
    cached = generation.generate(model, prompts, 5)
    np.testing.assert_array_equal(
        cached, generation.generate(model, prompts, 5, use_cache=False)
    )
    # Its own `sequence_length` bounds the request.
    with pytest.raises(ValueError, match=r"`sequence_length` \(12\)"):
        generation.generate(model, prompts, 10)


def test_class_decoding_equals_the_model_on_the_whole_sequence(translator):
    source = np.array([[5, 6, 7, 0], [8, 9, 10, 11]])
    target = np.array([[1, 12, 13, 14, 15], [1, 16, 17, 18, 19]])
    full = to_numpy(
        translator({"encoder_tokens": source, "decoder_tokens": target})
    )
    cache = translator.initial_cache(2, 5, encoder_tokens=source)
    prefill, cache = translator.call_with_cache(target[:, :3], cache, 0)
    step, cache = translator.call_with_cache(target[:, 3:4], cache, 3)
    np.testing.assert_allclose(to_numpy(prefill), full[:, :3], atol=1e-4)
    np.testing.assert_allclose(to_numpy(step), full[:, 3:4], atol=1e-4)
    with pytest.raises(ValueError, match="encoder_tokens=None"):
        translator.initial_cache(2, 5)


def test_streaming_yields_generate_tokens_step_by_step(language_model):
    expected = generation.generate(language_model, PROMPTS, 6)
    steps = list(generation.stream(language_model, PROMPTS, 6))
    assert len(steps) == 6 and all(step.shape == (2,) for step in steps)
    np.testing.assert_array_equal(np.stack(steps, axis=1), expected)
    end_token = int(expected[1, 2])
    ended = generation.generate(
        language_model, PROMPTS, 6, end_token_id=end_token
    )
    steps = list(
        generation.stream(language_model, PROMPTS, 6, end_token_id=end_token)
    )
    np.testing.assert_array_equal(
        np.stack(steps, axis=1), ended[:, : len(steps)]
    )
    assert (ended[:, len(steps) :] == 0).all()  # stopped once all ended


def test_streaming_a_translation(translator):
    prompts = {
        "encoder_tokens": np.array([[5, 6, 7, 0], [8, 9, 10, 11]]),
        "decoder_tokens": np.array([[1], [1]]),
    }
    steps = list(generation.stream(translator, prompts, 5))
    np.testing.assert_array_equal(
        np.stack(steps, axis=1), generation.generate(translator, prompts, 5)
    )


def test_streaming_errors(language_model):
    with pytest.raises(ValueError, match="sampler='beam'"):
        next(generation.stream(language_model, PROMPTS, 4, sampler="beam"))
    plain = keras.Sequential(
        [keras.Input((None,)), keras.layers.Embedding(50, 3)]
    )
    with pytest.raises(ValueError, match="has neither"):
        next(generation.stream(plain, PROMPTS, 4))


torch_only = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="torch_step is PyTorch's"
)


@torch_only
@pytest.mark.parametrize("mode", ["export", "compile"])
def test_traced_steps_equal_the_eager_step(language_model, mode):
    from keras_tfm.generation.torch_step import TorchStep

    tokens = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    traced = TorchStep(language_model, compile_program=mode == "compile")
    results = []
    for step in (language_model.call_with_cache, traced):
        cache = language_model.initial_cache(2, 8)
        prefill, cache = step(ops.convert_to_tensor(tokens[:, :5]), cache, 0)
        logits, _ = step(ops.convert_to_tensor(tokens[:, 5:6]), cache, 5)
        results.append((to_numpy(prefill), to_numpy(logits)))
    for eager, traced_result in zip(*results, strict=True):
        np.testing.assert_allclose(traced_result, eager, atol=1e-5)
    greedy = generation.generate(language_model, PROMPTS, 6, torch_step=mode)
    np.testing.assert_array_equal(
        greedy,
        generation.generate(language_model, PROMPTS, 6, torch_step="eager"),
    )


@torch_only
@pytest.mark.parametrize("parts", [2, 3])
def test_parallel_matmul_equals_the_product(parts):
    import torch

    from keras_tfm.generation.torch_step import parallel_matmul

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 12, generator=generator)
    embedding = torch.randn(18, 12, generator=generator)
    # A kernel, a transposed (tied-embedding) kernel, a kernel whose sizes
    # `parts` does not divide, and EinsumDense's two contractions.
    for inputs, kernel, contracted in [
        (x, torch.randn(12, 6, generator=generator), 1),
        (x, embedding.T, 1),
        (x, torch.randn(12, 7, generator=generator)[:, :5], 1),
        (x, torch.randn(12, 3, 4, generator=generator), 1),
        (x.reshape(2, 1, 3, 4), torch.randn(3, 4, 5, generator=generator), 2),
    ]:
        expected = torch.tensordot(inputs, kernel, dims=contracted)
        outputs = parallel_matmul(inputs, kernel, contracted, parts)
        assert outputs.shape == expected.shape
        assert outputs.stride()[-1] == 1
        torch.testing.assert_close(outputs, expected)


def test_contracted_dims_reads_projection_equations():
    from keras_tfm.generation.torch_step import _contracted_dims

    assert _contracted_dims("btd,dnh->btnh") == 1
    assert _contracted_dims("btah,ahd->btd") == 2
    assert _contracted_dims("btnh,nhd->btd") == 2
    assert _contracted_dims("btnh,bsnh->bnts") is None  # no weight
    assert _contracted_dims("bthd,dnh->btn") is None
    assert _contracted_dims("ab,bc,cd->ad") is None


@torch_only
def test_a_traced_step_is_simplified(language_model):
    import torch

    from keras_tfm.generation.torch_step import TorchStep, parallel_matmul

    traced = TorchStep(language_model, compile_program=False)
    cache = language_model.initial_cache(2, 8)
    index = torch.tensor(5, dtype=torch.int32)
    program = traced._trace(torch.ones((2, 1), dtype=torch.int32), cache, index)
    targets = [node.target for node in program.graph.nodes]
    assert torch.ops.aten._assert_tensor_metadata.default not in targets
    assert torch.ops.aten.index_copy_.default in targets  # the cache
    if torch.get_num_threads() > 1:
        assert parallel_matmul in targets
    # The cache given is written in place.
    _, updated = program(torch.ones((2, 1), dtype=torch.int32), cache, index)
    assert all(new is old for new, old in zip(updated, cache, strict=True))


@torch_only
def test_a_second_generate_does_not_trace_again(monkeypatch):
    import torch

    model = seeded_model(
        models.causal_lm, vocab_size=VOCAB, sequence_length=16, num_layers=1,
        embed_dim=16, num_heads=2, ff_dim=32,
    )  # fmt: skip
    traces = []
    export = torch.export.export
    monkeypatch.setattr(
        torch.export,
        "export",
        lambda *a, **k: traces.append(1) or export(*a, **k),
    )
    first = generation.generate(model, PROMPTS, 4, torch_step="export")
    assert len(traces) == 1  # the step; the prefill runs eagerly
    # Weights changed after the trace are seen; nothing is traced again.
    kernel = model.blocks[0].feed_forward.output_dense.kernel
    kernel.assign(to_numpy(kernel) * 3.0)
    second = generation.generate(model, PROMPTS, 4, torch_step="export")
    assert len(traces) == 1
    np.testing.assert_array_equal(
        second, generation.generate(model, PROMPTS, 4, torch_step="eager")
    )
    assert not np.array_equal(first, second)


@torch_only
def test_a_failed_trace_warns_and_decodes_eagerly(monkeypatch):
    import torch

    model = seeded_model(
        models.causal_lm, vocab_size=VOCAB, sequence_length=16, num_layers=1,
        embed_dim=16, num_heads=2, ff_dim=32,
    )  # fmt: skip

    def refuse(*args, **kwargs):
        raise RuntimeError("data-dependent shape")

    monkeypatch.setattr(torch.export, "export", refuse)
    with pytest.warns(UserWarning, match="data-dependent shape"):
        tokens = generation.generate(model, PROMPTS, 4, torch_step="export")
    np.testing.assert_array_equal(
        tokens, generation.generate(model, PROMPTS, 4, torch_step="eager")
    )


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="XLA only")
def test_torch_step_is_refused_on_other_backends(language_model):
    with pytest.raises(ValueError, match="torch_step='export'"):
        generation.generate(language_model, PROMPTS, 2, torch_step="export")

"""Hugging Face checkpoints: keras_tfm against `transformers` itself.

Every checkpoint is a small random model made by `transformers` from a
config (offline), with odd sizes, and feed-forward weights scaled up so that
activations reach the range where a GELU approximation or an epsilon shows.
"""

import json
import os

import keras
import numpy as np
import pytest

from keras_tfm import generation, interop, models
from tests.conftest import to_numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Relative to the largest output, as the issue asks.
RTOL = 1e-5
TOKENS = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
BERT_TOKENS = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])
SEGMENTS = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0]])
IMAGES = np.random.default_rng(0).random((2, 12, 12, 3)).astype("float32")


def gpt2(**overrides):
    config = transformers.GPT2Config(
        vocab_size=101, n_positions=40, n_embd=48, n_layer=2, n_head=3,
        bos_token_id=1, eos_token_id=2, **overrides,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def llama(**overrides):
    config = transformers.LlamaConfig(
        vocab_size=101, max_position_embeddings=40, hidden_size=48,
        intermediate_size=72, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, rope_theta=500000.0, **overrides,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def mistral():
    config = transformers.MistralConfig(
        vocab_size=101, max_position_embeddings=64, hidden_size=48,
        intermediate_size=72, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=3, sliding_window=24,
    )  # fmt: skip
    return transformers.MistralForCausalLM(config)


def bert_config(**overrides):
    return transformers.BertConfig(
        vocab_size=101, max_position_embeddings=40, hidden_size=48,
        num_hidden_layers=2, num_attention_heads=3, intermediate_size=72,
        num_labels=3, **overrides,
    )  # fmt: skip


def vit():
    config = transformers.ViTConfig(
        image_size=12, patch_size=4, hidden_size=48, num_hidden_layers=2,
        num_attention_heads=3, intermediate_size=72, num_labels=5,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config)


def t5(feed_forward_proj):
    config = transformers.T5Config(
        vocab_size=101, d_model=48, d_kv=8, d_ff=72, num_layers=2,
        num_heads=5, feed_forward_proj=feed_forward_proj,
    )  # fmt: skip
    return transformers.T5ForConditionalGeneration(config)


SOURCE = np.array([[5, 6, 7, 8, 9, 1], [10, 11, 12, 1, 0, 0]])
TARGET = np.array([[0, 13, 14, 15], [0, 16, 17, 18]])  # starts with 0


def t5_case(feed_forward_proj):
    return (
        t5(feed_forward_proj),
        {"encoder_tokens": SOURCE, "decoder_tokens": TARGET},
        {
            "input_ids": torch.tensor(SOURCE),
            "attention_mask": torch.tensor(SOURCE != 0),
            "decoder_input_ids": torch.tensor(TARGET),
        },
    )


def torch_outputs(reference, inputs):
    """The reference model's logits (or last hidden states) as NumPy."""
    with torch.no_grad():
        outputs = reference(**inputs)
    if "logits" in outputs:
        return outputs.logits
    return outputs.last_hidden_state


def case_gpt2():
    return gpt2(), TOKENS, {"input_ids": torch.tensor(TOKENS)}


def case_llama():
    return llama(), TOKENS, {"input_ids": torch.tensor(TOKENS)}


def case_llama_tied():
    return (
        llama(tie_word_embeddings=True),
        TOKENS,
        {"input_ids": torch.tensor(TOKENS)},
    )


def case_mistral():
    return mistral(), TOKENS, {"input_ids": torch.tensor(TOKENS)}


def bert_inputs():
    return {
        "input_ids": torch.tensor(BERT_TOKENS),
        "attention_mask": torch.tensor(BERT_TOKENS != 0),
        "token_type_ids": torch.tensor(SEGMENTS),
    }


def case_bert():
    return (
        transformers.BertModel(bert_config(), add_pooling_layer=False),
        {"tokens": BERT_TOKENS, "segment_ids": SEGMENTS},
        bert_inputs(),
    )


def case_bert_classifier():
    return (
        transformers.BertForSequenceClassification(bert_config()),
        {"tokens": BERT_TOKENS, "segment_ids": SEGMENTS},
        bert_inputs(),
    )


def case_bert_masked_lm():
    """The masked-LM logits at three positions of each row."""
    positions = np.array([[1, 3, 5], [0, 2, 1]])
    return (
        transformers.BertForMaskedLM(bert_config()),
        {"tokens": BERT_TOKENS, "segment_ids": SEGMENTS,
         "mask_positions": positions},
        bert_inputs(),
    )  # fmt: skip


def case_vit():
    pixels = torch.tensor(IMAGES.transpose(0, 3, 1, 2))
    return vit(), IMAGES, {"pixel_values": pixels}


CASES = {
    "gpt2": case_gpt2,
    "llama": case_llama,
    "llama_tied": case_llama_tied,
    "mistral": case_mistral,
    "bert": case_bert,
    "bert_classifier": case_bert_classifier,
    "bert_masked_lm": case_bert_masked_lm,
    "vit": case_vit,
    "t5": lambda: t5_case("relu"),  # v1.0: tied and scaled output
    "t5_gated": lambda: t5_case("gated-gelu"),  # v1.1
}


def scale_feed_forward(reference, factor=4.0):
    names = ("mlp", "intermediate", "output.dense", "DenseReluDense")
    with torch.no_grad():
        for name, weight in reference.named_parameters():
            if weight.ndim == 2 and any(part in name for part in names):
                weight.mul_(factor)


def saved(reference, directory, **options):
    reference.eval()
    scale_feed_forward(reference)
    reference.save_pretrained(directory, **options)
    return str(directory)


def assert_close(actual, expected):
    actual, expected = to_numpy(actual), np.asarray(expected)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual / scale, expected / scale, atol=RTOL)


def real_positions(case, outputs, inputs):
    """The outputs anyone reads: BERT's real positions; the masked LM's
    logits at `mask_positions` (transformers gives every position's)."""
    if case == "bert":
        return np.asarray(outputs)[BERT_TOKENS != 0]
    if case == "bert_masked_lm" and np.ndim(outputs) == 3:
        if np.shape(outputs)[1] == BERT_TOKENS.shape[1]:
            positions = inputs["mask_positions"][..., None]
            return np.take_along_axis(np.asarray(outputs), positions, axis=1)
    return outputs


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Each case's checkpoint directory, reference model and inputs."""
    built = {}
    for case, make in CASES.items():
        torch.manual_seed(0)
        reference, inputs, torch_inputs = make()
        directory = saved(reference, tmp_path_factory.mktemp(case))
        built[case] = directory, reference, inputs, torch_inputs
    return built


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_equals_transformers(case, checkpoints):
    directory, reference, inputs, torch_inputs = checkpoints[case]
    model = interop.from_huggingface(directory)
    expected = torch_outputs(reference, torch_inputs).numpy()
    assert_close(
        real_positions(case, to_numpy(model(inputs)), inputs),
        real_positions(case, expected, inputs),
    )


def test_the_wrong_gelu_would_be_caught(checkpoints):
    directory, reference, inputs, torch_inputs = checkpoints["gpt2"]
    model = interop.from_huggingface(directory)
    exact_gelu = models.CausalLM.from_config(
        {**model.get_config(), "activation": "gelu"}
    )
    exact_gelu.set_weights(model.get_weights())
    expected = torch_outputs(reference, torch_inputs).numpy()
    with pytest.raises(AssertionError):
        assert_close(exact_gelu(inputs), expected)


WRITTEN_BACK = [
    "gpt2", "llama", "bert_classifier", "bert_masked_lm", "vit", "t5",
    "t5_gated",
]  # fmt: skip


@pytest.mark.parametrize("case", WRITTEN_BACK)
def test_trained_model_writes_back_for_transformers(
    case, checkpoints, tmp_path
):
    directory, reference, inputs, torch_inputs = checkpoints[case]
    model = interop.from_huggingface(directory)
    targets = np.zeros(len(TOKENS), "int32")
    if isinstance(model, models.CausalLM):
        targets = np.roll(TOKENS, -1, axis=1)
    if isinstance(model, models.Seq2SeqTransformer):
        targets = np.roll(TARGET, -1, axis=1)
    if isinstance(model, models.MaskedLM):
        targets = np.ones((2, 3), "int32")
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(inputs, targets, epochs=1, verbose=0)
    interop.to_huggingface(model, tmp_path)
    reloaded = type(reference).from_pretrained(tmp_path).eval()
    expected = real_positions(case, to_numpy(model(inputs)), inputs)

    def theirs(torch_model):
        outputs = torch_outputs(torch_model, torch_inputs).numpy()
        return real_positions(case, outputs, inputs)

    assert not np.allclose(expected, theirs(reference), atol=1e-4)
    assert_close(expected, theirs(reloaded))


def test_a_model_built_here_writes_a_gpt2_checkpoint(tmp_path):
    model = models.causal_lm(
        vocab_size=53, sequence_length=16, num_layers=1, embed_dim=24,
        num_heads=3, ff_dim=40, activation="gelu_tanh",
    )  # fmt: skip
    interop.to_huggingface(model, tmp_path)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    tokens = TOKENS % 53
    expected = torch_outputs(reference, {"input_ids": torch.tensor(tokens)})
    assert_close(model(tokens), expected.numpy())


@pytest.mark.parametrize("case", ["gpt2", "llama"])
def test_greedy_generation_equals_transformers(case, checkpoints):
    directory, reference, _, _ = checkpoints[case]
    model = interop.from_huggingface(directory)
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    ours = generation.generate(model, prompts, max_new_tokens=6)
    for prompt, tokens in zip(prompts, ours, strict=True):
        with torch.no_grad():
            theirs = reference.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=6,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
        np.testing.assert_array_equal(tokens, theirs[0, len(prompt) :].numpy())


def test_t5_translates_as_transformers_does(checkpoints):
    """Source in, target generated from T5's start token (its padding id 0,
    hence `pad_token_id=None`), sources of different lengths batched."""
    for case in ("t5", "t5_gated"):
        directory, reference, _, _ = checkpoints[case]
        model = interop.from_huggingface(directory)
        prompts = {"encoder_tokens": SOURCE, "decoder_tokens": [[0], [0]]}
        ours = generation.generate(model, prompts, 6, pad_token_id=None)
        with torch.no_grad():
            theirs = reference.generate(
                input_ids=torch.tensor(SOURCE),
                attention_mask=torch.tensor(SOURCE != 0),
                max_new_tokens=6,
                do_sample=False,
                decoder_start_token_id=0,
                eos_token_id=None,
            )
        np.testing.assert_array_equal(ours, theirs[:, 1:].numpy())


def test_sharded_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    reference = llama()
    directory = saved(reference, tmp_path, max_shard_size="40KB")
    assert os.path.exists(
        os.path.join(directory, "model.safetensors.index.json")
    )
    model = interop.from_huggingface(directory)
    expected = torch_outputs(reference, {"input_ids": torch.tensor(TOKENS)})
    assert_close(model(TOKENS), expected.numpy())


def edit_config(directory, **changes):
    path = os.path.join(directory, "config.json")
    with open(path) as file:
        config = json.load(file)
    config.update(changes)
    with open(path, "w") as file:
        json.dump(config, file)


def test_unsupported_checkpoints_raise_a_clear_error(tmp_path):
    directory = saved(gpt2(), tmp_path / "gpt2")
    edit_config(directory, model_type="opt")
    with pytest.raises(ValueError, match=r"model_type='opt'.*'bert', 'gpt2'"):
        interop.from_huggingface(directory)

    directory = saved(llama(), tmp_path / "llama")
    edit_config(
        directory,
        rope_parameters={
            "rope_type": "linear",
            "factor": 2.0,
            "rope_theta": 1e4,
        },
    )
    with pytest.raises(ValueError, match="rope scaling of type 'linear'"):
        interop.from_huggingface(directory)

    directory = saved(transformers.BertModel(bert_config()), tmp_path / "bert")
    edit_config(directory, position_embedding_type="relative_key")
    with pytest.raises(
        ValueError, match="position_embedding_type='relative_key'"
    ):
        interop.from_huggingface(directory)


def test_missing_or_misshaped_tensors_are_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    directory = saved(gpt2(), tmp_path)
    path = os.path.join(directory, "model.safetensors")
    tensors = load_file(path)
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"`transformer.h.1.mlp.c_fc.bias`"):
        interop.from_huggingface(directory)

    tensors["transformer.h.1.mlp.c_fc.bias"] = np.zeros(7, "float32")
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"c_fc.bias` has shape \(7,\)"):
        interop.from_huggingface(directory)


def test_models_without_a_hugging_face_form_are_refused(tmp_path):
    swiglu_gpt = models.causal_lm(
        vocab_size=30, sequence_length=8, num_layers=1, embed_dim=16,
        num_heads=2, ff_dim=32, activation="swiglu",
    )  # fmt: skip
    with pytest.raises(ValueError, match="activation='swiglu'"):
        interop.to_huggingface(swiglu_gpt, tmp_path)
    forecaster = models.forecaster(input_length=8, horizon=2, num_layers=1)
    with pytest.raises(ValueError, match="Received: Forecaster"):
        interop.to_huggingface(forecaster, tmp_path)


def test_lora_fine_tuning_trains_only_lora_and_writes_merged(
    checkpoints, tmp_path
):
    directory, reference, _, torch_inputs = checkpoints["gpt2"]
    model = interop.from_huggingface(directory)
    model.enable_lora(rank=4)
    lora = {w.path for w in model.trainable_weights}
    assert lora and all("lora_kernel" in path for path in lora)
    before = {w.path: to_numpy(w).copy() for w in model.weights}
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(TOKENS, np.roll(TOKENS, -1, axis=1), epochs=2, verbose=0)
    changed = {
        w.path
        for w in model.weights
        if not np.allclose(to_numpy(w), before[w.path])
    }
    assert changed and changed <= lora
    interop.to_huggingface(model, tmp_path)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert_close(model(TOKENS), torch_outputs(reloaded, torch_inputs).numpy())


def weight_bytes(model):
    return sum(
        np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights
    )


def test_int8_quantized_import_stays_close(checkpoints):
    directory, _, _, _ = checkpoints["llama"]
    model = interop.from_huggingface(directory)
    expected = to_numpy(model(TOKENS))
    float_bytes = weight_bytes(model)
    model.quantize("int8")
    quantized = to_numpy(model(TOKENS))
    # Measured: 3% of the largest logit here, where the feed-forward
    # weights are scaled up 4x; 0.8% on an unscaled random GPT-2.
    error = np.abs(quantized - expected).max() / np.abs(expected).max()
    assert 0 < error < 0.05
    assert weight_bytes(model) < float_bytes / 3


def test_relative_position_buckets_are_t5s():
    from transformers.models.t5.modeling_t5 import T5Attention

    from keras_tfm.layers.positional import relative_position_buckets

    relative = np.arange(-300, 300)[None, :] - np.arange(40)[:, None]
    for bidirectional in (True, False):
        expected = T5Attention._relative_position_bucket(
            torch.tensor(relative), bidirectional, 32, 128
        ).numpy()
        buckets = relative_position_buckets(relative, bidirectional, 32, 128)
        np.testing.assert_array_equal(to_numpy(buckets), expected)

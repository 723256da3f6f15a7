"""Loading checkpoints in their own dtype, once, and refusing broken or
hostile checkpoint directories by name (`interop.from_huggingface`)."""

import copy
import json
import os

import keras
import numpy as np
import pytest

from keras_tfm import interop
from keras_tfm.interop import huggingface
from tests.conftest import to_numpy
from tests.huggingface_checks import (
    Checkpoints,
    assert_close,
    causal,
    copied,
    saved,
    torch_outputs,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

# bfloat16 keeps 8 bits of mantissa: outputs computed in another order
# differ by a few of its steps (2**-8 each), relative to the largest output;
# TensorFlow's order was once 5.2 steps off in one output of 1200.
BFLOAT16_RTOL = 3e-2


def llama(dtype=torch.float32):
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64,
    )  # fmt: skip
    return causal(transformers.LlamaForCausalLM(config).to(dtype))


def gpt2():
    config = transformers.GPT2Config(
        vocab_size=100, n_positions=32, n_embd=32, n_layer=1, n_head=2
    )
    return causal(transformers.GPT2LMHeadModel(config))


CASES = {
    "llama": llama,
    "llama_bfloat16": lambda: llama(torch.bfloat16),
    "gpt2": gpt2,
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


def float_outputs(outputs):
    return to_numpy(keras.ops.cast(outputs, "float32"))


def assert_close_in_bfloat16(actual, expected):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        float_outputs(actual) / scale, expected / scale, atol=BFLOAT16_RTOL
    )


def weight_dtypes(model):
    return {weight.dtype for weight in model.weights}


# --- dtype ------------------------------------------------------------------


def test_a_bfloat16_checkpoint_loads_in_bfloat16(checkpoints):
    directory, reference, inputs, torch_inputs = checkpoints["llama_bfloat16"]
    model = interop.from_huggingface(directory)
    assert model.dtype_policy.name == "bfloat16"
    assert weight_dtypes(model) == {"bfloat16"}
    outputs = model(inputs)
    assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"
    expected = torch_outputs(reference, torch_inputs).float().numpy()
    assert_close_in_bfloat16(outputs, expected)
    assert keras.config.dtype_policy().name == "float32"  # restored


def test_the_tensors_dtype_is_the_default_without_a_config_dtype(
    checkpoints, tmp_path
):
    directory = copied(checkpoints, "llama_bfloat16", tmp_path, dtype=None)
    assert weight_dtypes(interop.from_huggingface(directory)) == {"bfloat16"}


def test_dtype_float32_upcasts_exactly(checkpoints):
    directory, reference, inputs, torch_inputs = checkpoints["llama_bfloat16"]
    model = interop.from_huggingface(directory, dtype="float32")
    assert weight_dtypes(model) == {"float32"}
    upcast = copy.deepcopy(reference).float()
    assert_close(model(inputs), torch_outputs(upcast, torch_inputs).numpy())


def test_mixed_bfloat16_keeps_float32_weights_and_computes_in_bfloat16(
    checkpoints,
):
    directory, reference, inputs, torch_inputs = checkpoints["llama"]
    model = interop.from_huggingface(directory, dtype="mixed_bfloat16")
    assert weight_dtypes(model) == {"float32"}
    outputs = model(inputs)
    assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"
    expected = torch_outputs(reference, torch_inputs).numpy()
    assert_close_in_bfloat16(outputs, expected)


def test_writing_back_keeps_the_dtype_and_every_bit(checkpoints, tmp_path):
    directory, reference, _, _ = checkpoints["llama_bfloat16"]
    model = interop.from_huggingface(directory)
    written = interop.to_huggingface(model, tmp_path / "written")
    with open(os.path.join(written, "config.json")) as file:
        assert json.load(file)["dtype"] == "bfloat16"
    original = safetensors_numpy.load_file(f"{directory}/model.safetensors")
    ours = safetensors_numpy.load_file(f"{written}/model.safetensors")
    assert ours.keys() == original.keys()
    for name, array in original.items():
        assert ours[name].dtype == array.dtype, name
        np.testing.assert_array_equal(
            ours[name].view(np.uint16), array.view(np.uint16)
        )
    reloaded = type(reference).from_pretrained(written)
    assert reloaded.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", ["int32", "int8_from_float32", "float8"])
def test_a_dtype_that_is_no_floating_policy_is_refused(checkpoints, dtype):
    directory = checkpoints["llama"][0]
    with pytest.raises(ValueError, match=f"`dtype` must name.*'{dtype}'"):
        interop.from_huggingface(directory, dtype=dtype)


def test_a_config_dtype_that_is_no_floating_policy_is_named(
    checkpoints, tmp_path
):
    directory = copied(checkpoints, "llama", tmp_path, dtype="int64")
    with pytest.raises(ValueError, match="config.json's dtype must name"):
        interop.from_huggingface(directory)


# --- Reading once ------------------------------------------------------------


def test_loading_leaves_no_variable_for_keras_to_initialise(
    checkpoints, tmp_path
):
    """The variables are built deferred; once loaded, or after a failed
    load, none is left for the next stateless scope to initialise (which
    would raise, or allocate what a wrong config asked for)."""
    interop.from_huggingface(checkpoints["llama"][0])
    wrong = copied(checkpoints, "llama", tmp_path, intermediate_size=65)
    with pytest.raises(ValueError, match="mlp.up_proj.weight` has shape"):
        interop.from_huggingface(wrong)
    with keras.StatelessScope():
        pass
    assert keras.config.dtype_policy().name == "float32"


def test_variables_the_checkpoint_does_not_hold_are_initialised(checkpoints):
    """Dropout's seed states, built deferred with the weights, get their
    own initial values: training calls work on every backend."""
    directory, _, inputs, _ = checkpoints["gpt2"]
    model = interop.from_huggingface(directory)  # dropout 0.1
    dropped = to_numpy(model(inputs, training=True))
    assert not np.allclose(dropped, to_numpy(model(inputs)))


def test_a_vocabulary_of_billions_fails_before_allocating(
    checkpoints, tmp_path
):
    """4 billion tokens by 32 would be 512 GB in float32."""
    directory = copied(checkpoints, "llama", tmp_path, vocab_size=4_000_000_000)
    message = r"`model.embed_tokens.weight` has shape \(100, 32\)"
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)


def test_a_million_blocks_fail_before_building(checkpoints, tmp_path):
    directory = copied(
        checkpoints, "llama", tmp_path, num_hidden_layers=1_000_000
    )
    with pytest.raises(ValueError, match="num_hidden_layers=1000000: more"):
        interop.from_huggingface(directory)


def test_a_large_checkpoint_shows_a_progress_bar(
    checkpoints, monkeypatch, capsys
):
    directory = checkpoints["llama"][0]
    interop.from_huggingface(directory)
    assert "tensor" not in capsys.readouterr().out  # small: quiet
    monkeypatch.setattr(huggingface, "PROGRESS_BYTES", 0)
    interop.from_huggingface(directory)
    assert "21/21" in capsys.readouterr().out  # one line per tensor count


# --- Broken or hostile directories -----------------------------------------


def rewrite_config(directory, edit):
    path = os.path.join(directory, "config.json")
    with open(path) as file:
        config = json.load(file)
    edit(config)
    with open(path, "w") as file:
        json.dump(config, file)


def test_a_missing_directory_is_an_os_error(tmp_path):
    with pytest.raises(OSError, match="nowhere"):
        interop.from_huggingface(tmp_path / "nowhere")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff\xfe"])
def test_a_config_that_is_not_a_json_object_is_named(
    checkpoints, tmp_path, text
):
    directory = copied(checkpoints, "llama", tmp_path)
    with open(directory / "config.json", "w", encoding="latin-1") as file:
        file.write(text)
    with pytest.raises(ValueError, match="config.json (is not valid|must)"):
        interop.from_huggingface(directory)


def test_a_missing_config_field_is_named(checkpoints, tmp_path):
    directory = copied(checkpoints, "llama", tmp_path)
    rewrite_config(directory, lambda config: config.pop("hidden_size"))
    with pytest.raises(ValueError, match="config.json has no hidden_size"):
        interop.from_huggingface(directory)


BAD_VALUES = [
    ("num_hidden_layers", 0),
    ("hidden_size", -32),
    ("num_attention_heads", "4"),
    ("vocab_size", 100.5),
    ("intermediate_size", True),
    ("max_position_embeddings", None),
    ("rms_norm_eps", -1e-6),
    ("attention_dropout", 1.5),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_a_config_value_of_the_wrong_sign_or_type_is_named(
    checkpoints, tmp_path, name, value
):
    directory = copied(checkpoints, "llama", tmp_path, **{name: value})
    with pytest.raises(ValueError, match=f"config.json has {name}="):
        interop.from_huggingface(directory)


@pytest.mark.parametrize(
    ("case", "changes", "message"),
    [
        ("gpt2", {"n_head": 5}, "n_embd=32 and n_head=5; n_embd must be"),
        ("llama", {"num_key_value_heads": 3},
         "num_attention_heads=4 and num_key_value_heads=3"),
    ],
)  # fmt: skip
def test_heads_that_do_not_divide_are_named_as_the_checkpoint_spells_them(
    checkpoints, tmp_path, case, changes, message
):
    directory = copied(checkpoints, case, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)


def resaved(directory, edit):
    """The checkpoint's tensors, changed by `edit`, saved in its place."""
    path = os.path.join(directory, "model.safetensors")
    tensors = safetensors_numpy.load_file(path)
    edit(tensors)
    safetensors_numpy.save_file(tensors, path, metadata={"format": "pt"})


def test_integer_weights_are_refused_by_name(checkpoints, tmp_path):
    directory = copied(checkpoints, "llama", tmp_path)
    name = "model.layers.0.mlp.up_proj.weight"

    def to_integers(tensors):
        tensors[name] = tensors[name].astype("int32")

    resaved(directory, to_integers)
    with pytest.raises(ValueError, match=f"`{name}` has dtype I32"):
        interop.from_huggingface(directory)


@pytest.mark.parametrize("damage", ["truncated", "text"])
def test_a_broken_weights_file_is_named(checkpoints, tmp_path, damage):
    directory = copied(checkpoints, "llama", tmp_path)
    path = directory / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-100] if damage == "truncated" else b"<html>")
    message = "model.safetensors is not a complete safetensors file"
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)


def test_pytorch_pickles_alone_are_refused_by_name(checkpoints, tmp_path):
    directory = copied(checkpoints, "llama", tmp_path)
    os.rename(directory / "model.safetensors", directory / "pytorch_model.bin")
    with pytest.raises(ValueError, match="no model.safetensors.*pytorch_"):
        interop.from_huggingface(directory)


@pytest.fixture
def sharded(checkpoints, tmp_path):
    reference = checkpoints["llama"][1]
    return saved(copy.deepcopy(reference), tmp_path, max_shard_size="20KB")


def edit_index(directory, edit):
    path = os.path.join(directory, "model.safetensors.index.json")
    with open(path) as file:
        index = json.load(file)
    weight_map = index["weight_map"]
    name = sorted(set(weight_map.values()))[-1]
    for key, value in weight_map.items():
        if value == name:
            weight_map[key] = edit(name)
    with open(path, "w") as file:
        json.dump(index, file)
    return name


@pytest.mark.parametrize("outside", ["../{}", "/tmp/{}", "shards/../../{}"])
def test_shard_names_leaving_the_directory_are_refused(sharded, outside):
    edit_index(sharded, outside.format)
    with pytest.raises(ValueError, match="outside the checkpoint directory"):
        interop.from_huggingface(sharded)


def test_a_missing_shard_is_named(sharded):
    name = edit_index(sharded, lambda name: name)
    os.remove(os.path.join(sharded, name))
    with pytest.raises(ValueError, match=f"weights file {name} is missing"):
        interop.from_huggingface(sharded)


def test_an_index_without_a_weight_map_is_named(sharded):
    with open(os.path.join(sharded, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}}, f)
    with pytest.raises(ValueError, match="must hold a `weight_map`"):
        interop.from_huggingface(sharded)

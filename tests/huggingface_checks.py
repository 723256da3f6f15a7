"""What every Hugging Face family's tests share: checkpoints made by
`transformers` from small configs (offline), and the checks that keras_tfm
computes, writes back and generates what `transformers` does.

A family's test module declares its `CASES` (name -> function returning
`(reference model, keras inputs, torch inputs)`) and a module-scoped
`checkpoints` fixture, `Checkpoints(tmp_path_factory, CASES)`.
"""

import json
import os
import shutil

import keras
import numpy as np
import pytest

from keras_tfm import generation, interop
from tests.conftest import to_numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Relative to the largest output, as the issue asks.
RTOL = 1e-5
TOKENS = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])


def trained_on(backend):
    """Runs a family module's `fit`-trained write-back on `backend` only.

    What is written back does not depend on the backend that trained it,
    and every backend's training is tested elsewhere; the family modules
    share the backends out between them, so each backend trains some
    families and CI stays inside its budget (a compiled JAX training step
    costs about 20 s per module).
    """
    return pytest.mark.skipif(
        keras.backend.backend() != backend,
        reason=f"the trained write-back is checked on {backend}",
    )


def torch_outputs(reference, inputs):
    """The reference model's logits (or last hidden states) as NumPy."""
    with torch.no_grad():
        outputs = reference(**inputs)
    if "logits" in outputs:
        return outputs.logits
    return outputs.last_hidden_state


def causal(reference, tokens=TOKENS):
    return reference, tokens, {"input_ids": torch.tensor(tokens)}


def widen(reference, factor=4.0):
    """Feed-forward weights scaled up; biases and norm scales made random
    (transformers starts them at 0 and 1, where a lost one would not show)."""
    names = ("mlp", "intermediate", "output.dense", "DenseReluDense")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in reference.named_parameters():
            if weight.ndim == 2 and any(part in name for part in names):
                weight.mul_(factor)
            if weight.ndim == 1:
                noise = torch.randn(weight.shape, generator=generator)
                weight.add_(0.2 * noise)


def saved(reference, directory, **options):
    reference.eval()
    widen(reference)
    reference.save_pretrained(directory, **options)
    return str(directory)


def assert_close(actual, expected):
    actual, expected = to_numpy(actual), np.asarray(expected)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual / scale, expected / scale, atol=RTOL)


class Checkpoints(dict):
    """Each case's checkpoint directory, reference model and inputs, made
    when a test first asks for it (xdist workers make only theirs)."""

    def __init__(self, tmp_path_factory, cases):
        super().__init__()
        self.tmp_path_factory = tmp_path_factory
        self.cases = cases

    def __missing__(self, case):
        torch.manual_seed(0)
        reference, inputs, torch_inputs = self.cases[case]()
        directory = saved(reference, self.tmp_path_factory.mktemp(case))
        self[case] = directory, reference, inputs, torch_inputs
        return self[case]


def assert_every_option_declared(model):
    """Writing refuses what a family cannot express only if each option of
    the model is one of its fields or fixed values."""
    from keras_tfm.interop import huggingface
    from keras_tfm.interop.huggingface.fields import declared_paths

    family = huggingface._family_of_model(model, model.huggingface_model_type)
    declared = declared_paths(family.fields)
    records = {"name", "trainable", "special_token_ids"}
    records |= {"huggingface_model_type", "num_heads", "ff_dim"}
    for path in option_paths(family.model_options(model), records):
        assert any(
            path == known or path.startswith(known + ".") for known in declared
        ), path


def option_paths(options, records, prefix=""):
    for key, value in options.items():
        if key in records:
            continue
        if isinstance(value, dict):
            yield from option_paths(value, records, f"{prefix}{key}.")
        else:
            yield prefix + key


def _every_position(case, outputs, inputs):
    return outputs


def assert_transformers_reloads(
    case, model, checkpoint, directory, real_positions=_every_position
):
    """`model` written to `directory`, loaded by transformers as the
    reference's own family, computes what `model` computes
    (`real_positions(case, outputs, inputs)`: the outputs compared)."""
    _, reference, inputs, torch_inputs = checkpoint
    with open(os.path.join(directory, "config.json")) as file:
        assert json.load(file)["model_type"] == reference.config.model_type
    reloaded = type(reference).from_pretrained(directory).eval()
    expected = real_positions(case, to_numpy(model(inputs)), inputs)

    def theirs(torch_model):
        outputs = torch_outputs(torch_model, torch_inputs).numpy()
        return real_positions(case, outputs, inputs)

    assert not np.allclose(expected, theirs(reference), atol=1e-4)
    assert_close(expected, theirs(reloaded))


def transformers_generate(reference, prompt, max_new_tokens, **options):
    """transformers' greedy tokens after `prompt`, with its checkpoint's
    generation config (its end token) unless `options` say otherwise."""
    with torch.no_grad():
        tokens = reference.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **options,
        )
    return tokens[0, len(prompt) :].numpy()


def assert_same_tokens(ours, theirs, pad=0):
    """transformers stops at the end token; keras_tfm pads after it."""
    np.testing.assert_array_equal(ours[: len(theirs)], theirs)
    assert (ours[len(theirs) :] == pad).all()


# Prompts of different lengths, with id 0 (GPT-2's "!") in them: lists are
# never stripped, and these checkpoints have no padding id.
PROMPTS = [[5, 6, 7, 8, 9], [0, 11], [12, 0, 0]]


def changed_weights(model):
    """`model` with every weight moved a little, as training would."""
    rng = np.random.default_rng(0)
    model.set_weights(
        [w + 0.05 * rng.normal(size=w.shape) for w in model.get_weights()]
    )
    return model


def assert_loads_as_transformers(checkpoint):
    """The model loaded from a case's checkpoint computes transformers'
    outputs, records its family and declares every option; returned."""
    directory, reference, inputs, torch_inputs = checkpoint
    model = interop.from_huggingface(directory)
    assert_close(model(inputs), torch_outputs(reference, torch_inputs))
    assert model.huggingface_model_type == reference.config.model_type
    assert_every_option_declared(model)
    return model


def assert_changed_weights_write_back(case, checkpoint, directory):
    """The case's model, with changed weights, written to `directory` and
    reloaded by transformers to the same outputs."""
    model = changed_weights(interop.from_huggingface(checkpoint[0]))
    interop.to_huggingface(model, directory)
    assert_transformers_reloads(case, model, checkpoint, directory)


def assert_generates_as_transformers(model, reference, prompts=PROMPTS):
    """Greedy tokens for `prompts` of different lengths, batched, equal to
    transformers' `generate` for each prompt alone."""
    ours = generation.generate(model, prompts, max_new_tokens=6)
    for prompt, tokens in zip(prompts, ours, strict=True):
        assert_same_tokens(tokens, transformers_generate(reference, prompt, 6))
    return ours


def edit_config(directory, **changes):
    path = os.path.join(directory, "config.json")
    with open(path) as file:
        config = json.load(file)
    config.update(changes)
    with open(path, "w") as file:
        json.dump(config, file)


def copied(checkpoints, case, tmp_path, **changes):
    """A copy of a case's checkpoint with config.json fields changed."""
    directory = tmp_path / case
    shutil.copytree(checkpoints[case][0], directory)
    edit_config(directory, **changes)
    return directory

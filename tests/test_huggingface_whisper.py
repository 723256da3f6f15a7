"""Whisper checkpoints against `transformers` itself, and the audio
embedding layer its encoder starts with: random checkpoints made offline
from small configs with odd sizes."""

import json
import os

import keras
import numpy as np
import pytest
from keras.src.testing import TestCase

from keras_tfm import generation, interop
from keras_tfm.interop.huggingface import fields
from keras_tfm.interop.huggingface import whisper as whisper_family
from keras_tfm.layers.audio import AudioEmbedding
from tests.conftest import random_inputs, to_numpy
from tests.huggingface_checks import (
    Checkpoints,
    assert_close,
    assert_every_option_declared,
    assert_same_tokens,
    assert_transformers_reloads,
    changed_weights,
    copied,
    torch_outputs,
    trained_on,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


class AudioEmbeddingHarnessTest(TestCase):
    def test_layer_harness(self):
        self.run_layer_test(
            AudioEmbedding,
            init_kwargs={"embed_dim": 6, "sequence_length": 5, "channels": 3},
            input_shape=(2, 10, 3),
            expected_output_shape=(2, 5, 6),
            expected_num_trainable_weights=4,
            expected_num_non_trainable_weights=1,
        )


def test_audio_embedding_equals_whisper_encoder_front_end():
    """Whisper's convolutions (PyTorch's padding on both sides, strides 1
    and 2, exact GELU) and sinusoids, on an odd number of frames too."""
    from transformers.models.whisper import modeling_whisper

    torch.manual_seed(0)
    conv_1 = torch.nn.Conv1d(5, 8, kernel_size=3, padding=1)
    conv_2 = torch.nn.Conv1d(8, 8, kernel_size=3, stride=2, padding=1)
    table = modeling_whisper.sinusoids(7, 8)
    layer = AudioEmbedding(embed_dim=8, sequence_length=7, channels=5)
    layer.build((None, None, 5))
    for ours, theirs in ((layer.conv_1, conv_1), (layer.conv_2, conv_2)):
        ours.kernel.assign(theirs.weight.detach().numpy().transpose(2, 1, 0))
        ours.bias.assign(theirs.bias.detach().numpy())
    for frames in (14, 13):
        features = random_inputs(2, frames, 5)
        with torch.no_grad():
            x = torch.nn.functional.gelu(conv_1(torch.tensor(features).mT))
            x = torch.nn.functional.gelu(conv_2(x)).mT
            expected = (x + table[: x.shape[1]]).numpy()
        np.testing.assert_allclose(
            to_numpy(layer(features)), expected, atol=1e-5
        )


REFUSED = [
    ({"embed_dim": 7}, (1, 8, 3), "embed_dim=7"),
    ({}, (1, 8, 4), "`channels`=3"),
    ({}, (1, 9, 3), "`sequence_length`=4"),
    ({}, (8, 3), "rank 3"),
]


@pytest.mark.parametrize(("changes", "shape", "message"), REFUSED)
def test_audio_embedding_refuses_bad_input(changes, shape, message):
    options = {"embed_dim": 6, "sequence_length": 4, "channels": 3}
    with pytest.raises(ValueError, match=message):
        AudioEmbedding(**{**options, **changes})(np.zeros(shape, "float32"))


# Whisper's special ids, in a vocabulary of 101: the end (and padding) id,
# the start id, a language, a task and "no timestamps".
END, START, PROMPT = 96, 97, [97, 98, 99, 100]
TARGETS = np.array([[97, 5, 6, 7, 8, 9], [97, 11, 12, 96, 96, 96]])
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


def whisper(model_class="WhisperForConditionalGeneration", **overrides):
    """A checkpoint without suppressed tokens (see the family's module),
    projections widened: at transformers' initial scale every position
    predicts its own token."""
    config = transformers.WhisperConfig(
        vocab_size=101, num_mel_bins=10, d_model=48, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=3,
        decoder_attention_heads=3, encoder_ffn_dim=72, decoder_ffn_dim=72,
        max_source_positions=12, max_target_positions=20,
        pad_token_id=END, bos_token_id=END, eos_token_id=END,
        decoder_start_token_id=START, suppress_tokens=None,
        begin_suppress_tokens=None, **overrides,
    )  # fmt: skip
    reference = getattr(transformers, model_class)(config)
    with torch.no_grad():
        for name, weight in reference.named_parameters():
            if weight.ndim == 2 and "embed_positions" not in name:
                weight.mul_(12.0)
    features = random_inputs(2, 10, 24)
    keras_inputs = {
        "encoder_features": features.transpose(0, 2, 1),
        "decoder_tokens": TARGETS,
    }
    torch_inputs = {
        "input_features": torch.tensor(features),
        "decoder_input_ids": torch.tensor(TARGETS),
        "decoder_attention_mask": torch.tensor(MASK),
    }
    return reference, keras_inputs, torch_inputs


CASES = {
    "whisper": whisper,
    "whisper_untied": lambda: whisper(tie_word_embeddings=False),
    "whisper_base_model": lambda: whisper("WhisperModel"),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


def real_positions(case, outputs, inputs):
    """The target's real positions: padding attends to itself here, to
    nothing in transformers."""
    return np.asarray(outputs)[MASK.astype(bool)]


@pytest.mark.parametrize("case", ["whisper", "whisper_untied"])
def test_loaded_model_equals_transformers(case, checkpoints):
    directory, reference, inputs, torch_inputs = checkpoints[case]
    model = interop.from_huggingface(directory)
    expected = torch_outputs(reference, torch_inputs).numpy()
    assert_close(
        real_positions(case, to_numpy(model(inputs)), inputs),
        real_positions(case, expected, inputs),
    )
    assert model.huggingface_model_type == "whisper"
    assert_every_option_declared(model)


def test_base_model_loads_with_the_tied_projection(checkpoints):
    """`WhisperModel`'s tensors, named without `model.`: its decoder's
    output, projected by its embedding."""
    directory, reference, inputs, torch_inputs = checkpoints[
        "whisper_base_model"
    ]
    model = interop.from_huggingface(directory)
    hidden = torch_outputs(reference, torch_inputs).numpy()
    table = reference.decoder.embed_tokens.weight.detach().numpy()
    assert_close(
        real_positions(None, to_numpy(model(inputs)), inputs),
        real_positions(None, hidden @ table.T, inputs),
    )


def test_changed_weights_write_back_for_transformers(checkpoints, tmp_path):
    """The untied output projection (`proj_out`) and every other tensor,
    the position tables included, also through a `.keras` file."""
    checkpoint = checkpoints["whisper_untied"]
    model = changed_weights(interop.from_huggingface(checkpoint[0]))
    changed = to_numpy(model(checkpoint[2]))
    model.save(tmp_path / "whisper.keras")
    model = keras.models.load_model(tmp_path / "whisper.keras")
    np.testing.assert_array_equal(to_numpy(model(checkpoint[2])), changed)
    interop.to_huggingface(model, tmp_path)
    assert_transformers_reloads(
        "whisper_untied", model, checkpoint, tmp_path, real_positions
    )


@trained_on("torch")
def test_trained_model_writes_back_for_transformers(checkpoints, tmp_path):
    checkpoint = checkpoints["whisper"]
    model = interop.from_huggingface(checkpoint[0])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inputs = checkpoint[2]
    labels = np.roll(inputs["decoder_tokens"], -1, axis=1)
    model.fit(inputs, labels, epochs=1, verbose=0)
    interop.to_huggingface(model, tmp_path)
    assert_transformers_reloads(
        "whisper", model, checkpoint, tmp_path, real_positions
    )


def test_greedy_generation_equals_transformers(checkpoints):
    """Batched prompts of different lengths, each from its own features,
    against transformers' Whisper `generate` for each alone: a full
    prompt, and the start id alone, from which transformers starts when
    given no prompt."""
    directory, reference, inputs, torch_inputs = checkpoints["whisper"]
    model = interop.from_huggingface(directory)
    assert model.decoder_start_token_id == START
    prompts = {
        "encoder_features": inputs["encoder_features"],
        "decoder_tokens": [PROMPT, [START]],
    }
    ours = generation.generate(model, prompts, max_new_tokens=6)
    features = torch_inputs["input_features"]
    prompted = whisper_generate(
        reference, features[:1], decoder_input_ids=torch.tensor([PROMPT])
    )
    assert_same_tokens(ours[0], prompted[0], pad=END)
    alone = whisper_generate(reference, features[1:])
    assert_same_tokens(ours[1], alone[0], pad=END)


def whisper_generate(reference, features, **options):
    """transformers' greedy tokens, which Whisper's `generate` returns
    without the decoder's prompt."""
    with torch.no_grad():
        tokens = reference.generate(
            features, max_new_tokens=6, do_sample=False, **options
        )
    return tokens.numpy()


UNSUPPORTED = [
    ({"decoder_layers": 1}, "decoder_layers=1"),
    ({"decoder_attention_heads": 1}, "decoder_attention_heads=1"),
    ({"activation_function": "gelu_fast"}, "activation_function='gelu_fast'"),
]


@pytest.mark.parametrize(("changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    changes, message, checkpoints, tmp_path
):
    directory = copied(checkpoints, "whisper", tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)


def test_a_token_encoder_is_not_written_as_whisper(checkpoints):
    """A `Seq2SeqTransformer` whose encoder takes token ids (its options,
    without building one)."""
    with open(os.path.join(checkpoints["whisper"][0], "config.json")) as file:
        config = json.load(file)
    options = fields.model_options(whisper_family.FIELDS, config, "whisper")
    options["encoder_features"] = None
    with pytest.raises(ValueError, match="encoder_features=None"):
        fields.checkpoint_config(whisper_family.FIELDS, options, "whisper")

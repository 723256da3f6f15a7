"""CLIP and SigLIP checkpoints against `transformers` itself: random
checkpoints made offline from small configs with odd sizes, text padded
and images channels-last; the `DualEncoder` they load as, its layers in
Keras's harness, and its save and reload."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
from keras.src.testing import TestCase

from keras_tfm import interop
from keras_tfm.interop.huggingface import fields
from keras_tfm.interop.huggingface.clip import FAMILIES
from keras_tfm.layers.pooling import AttentionPooling, TokenPooling
from keras_tfm.models.dual_encoder import SimilarityLogits
from tests.conftest import to_numpy
from tests.huggingface_checks import (
    Checkpoints,
    assert_close,
    assert_every_option_declared,
    changed_weights,
    trained_on,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Start 98 and end-of-text 99 (the highest id, as in CLIP's vocabulary),
# then padding 1, which CLIP's attention mask hides and SigLIP reads.
TOKENS = np.array([[98, 5, 6, 7, 99, 1, 1], [98, 8, 99, 1, 1, 1, 1]])
MASK = (TOKENS != 1).astype("int64")
IMAGES = np.random.default_rng(0).normal(size=(3, 12, 12, 3))
IMAGES = IMAGES.astype("float32")
TEXT = dict(
    vocab_size=101, hidden_size=48, intermediate_size=72,
    num_hidden_layers=2, num_attention_heads=3, max_position_embeddings=16,
    pad_token_id=1, bos_token_id=98, eos_token_id=99,
)  # fmt: skip
VISION = dict(
    hidden_size=36, intermediate_size=52, num_hidden_layers=2,
    num_attention_heads=3, image_size=12, patch_size=4,
)  # fmt: skip
# The outputs compared: keras_tfm's names and transformers'.
OUTPUTS = {
    "text_embeddings": "text_embeds",
    "image_embeddings": "image_embeds",
    "logits_per_text": "logits_per_text",
    "logits_per_image": "logits_per_image",
}


def _inputs(reference, attention_mask):
    """Keras inputs and transformers' (channels-first images)."""
    torch_inputs = {
        "input_ids": torch.tensor(TOKENS),
        "pixel_values": torch.tensor(IMAGES.transpose(0, 3, 1, 2)),
    }
    if attention_mask:
        torch_inputs["attention_mask"] = torch.tensor(MASK)
    return reference, {"tokens": TOKENS, "images": IMAGES}, torch_inputs


def clip():
    """CLIP's text is causal: the padding its mask hides cannot reach the
    end-of-text token either way."""
    config = transformers.CLIPConfig(
        text_config=TEXT, vision_config=VISION, projection_dim=20
    )
    return _inputs(transformers.CLIPModel(config), attention_mask=True)


def siglip():
    """SigLIP reads its last position, padding included, with no mask, as
    it was trained; a text head of another width than the text's."""
    config = transformers.SiglipConfig(
        text_config={**TEXT, "projection_size": 36}, vision_config=VISION
    )
    return _inputs(transformers.SiglipModel(config), attention_mask=False)


CASES = {"clip": clip, "siglip": siglip}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


@pytest.fixture(scope="module")
def loaded(checkpoints):
    """Each case's model, loaded once for the tests that leave it as is."""
    models = {}

    def load(case):
        if case not in models:
            models[case] = interop.from_huggingface(checkpoints[case][0])
        return models[case]

    return load


def theirs(reference, torch_inputs):
    with torch.no_grad():
        outputs = reference(**torch_inputs)
    return {key: outputs[name].numpy() for key, name in OUTPUTS.items()}


def assert_same_outputs(model, inputs, expected):
    outputs = model(inputs)
    for key in OUTPUTS:
        assert_close(outputs[key], expected[key])


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_equals_transformers(case, checkpoints, loaded):
    _, reference, inputs, torch_inputs = checkpoints[case]
    model = loaded(case)
    assert_same_outputs(model, inputs, theirs(reference, torch_inputs))
    assert model.huggingface_model_type == case
    assert model.special_token_ids == {"pad": 1, "bos": 98, "eos": 99}
    assert_every_option_declared(model)


def assert_transformers_reloads(model, checkpoint, directory):
    """`model`, written to `directory` and loaded by transformers, computes
    what `model` computes, and not what the checkpoint did."""
    _, reference, inputs, torch_inputs = checkpoint
    interop.to_huggingface(model, directory)
    reloaded = type(reference).from_pretrained(directory).eval()
    expected = theirs(reloaded, torch_inputs)
    before = theirs(reference, torch_inputs)
    assert not np.allclose(
        expected["logits_per_text"], before["logits_per_text"], atol=1e-4
    )
    assert_same_outputs(model, inputs, expected)


def test_changed_weights_write_back_for_transformers(checkpoints, tmp_path):
    model = changed_weights(interop.from_huggingface(checkpoints["clip"][0]))
    assert_transformers_reloads(model, checkpoints["clip"], tmp_path)


@trained_on("torch")
def test_trained_model_writes_back_for_transformers(checkpoints, tmp_path):
    """SigLIP's sigmoid loss on matching pairs (the diagonal), trained
    with `fit`: the MAP head, the logit bias and both towers move."""
    directory, _, inputs, _ = checkpoints["siglip"]
    model = interop.from_huggingface(directory)
    pairs = {"tokens": inputs["tokens"], "images": inputs["images"][:2]}
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={"logits_per_text": keras.losses.BinaryCrossentropy(True)},
    )
    model.fit(pairs, {"logits_per_text": np.eye(2)}, epochs=1, verbose=0)
    assert_transformers_reloads(model, checkpoints["siglip"], tmp_path)


def _edited(checkpoints, case, tmp_path, section, **changes):
    """A copy of a case's checkpoint with fields of config.json's
    `section` (None: its top level) changed."""
    directory = tmp_path / case
    shutil.copytree(checkpoints[case][0], directory)
    path = os.path.join(directory, "config.json")
    with open(path) as file:
        config = json.load(file)
    (config if section is None else config[section]).update(changes)
    with open(path, "w") as file:
        json.dump(config, file)
    return directory


def test_legacy_clip_reads_the_highest_id(checkpoints, tmp_path):
    """Configs whose eos_token_id is 2 (before transformers 4.31) read
    the highest id of each sequence, as transformers still does, and are
    written back so."""
    _, reference, inputs, torch_inputs = checkpoints["clip"]
    directory = _edited(
        checkpoints, "clip", tmp_path, "text_config", eos_token_id=2
    )
    model = interop.from_huggingface(directory)
    assert model.text_pooling == {"position": "highest_id", "token_id": None}
    reference.text_model.eos_token_id = 2
    try:
        assert_same_outputs(model, inputs, theirs(reference, torch_inputs))
    finally:
        reference.text_model.eos_token_id = 99
    interop.to_huggingface(model, tmp_path / "written")
    with open(tmp_path / "written" / "config.json") as file:
        assert json.load(file)["text_config"]["eos_token_id"] == 2


def test_saved_model_reloads_with_the_same_outputs(
    checkpoints, loaded, tmp_path
):
    """Both towers and the MAP head come back from the `.keras` file."""
    inputs = checkpoints["siglip"][2]
    model = loaded("siglip")
    model.save(tmp_path / "siglip.keras")
    reloaded = keras.models.load_model(tmp_path / "siglip.keras")
    assert type(reloaded) is type(model)
    assert reloaded.get_config() == model.get_config()
    expected = model(inputs)
    outputs = reloaded(inputs)
    for key in OUTPUTS:
        np.testing.assert_allclose(
            to_numpy(outputs[key]), to_numpy(expected[key]), atol=1e-6
        )


UNSUPPORTED = [
    ("clip", "text_config", {"hidden_act": "tanh"},
     "text_config.hidden_act='tanh'"),
    ("clip", "vision_config", {"hidden_act": "gelu_fast"},
     "vision_config.hidden_act='gelu_fast'"),
    ("clip", "text_config", {"eos_token_id": [99, 100]},
     "text_config.eos_token_id"),
    ("clip", "vision_config", {"image_size": [12, 12]},
     r"vision_config.image_size=\[12, 12\]"),
    ("clip", "text_config", {"num_attention_heads": 5},
     "text_config.hidden_size=48 and text_config.num_attention_heads=5"),
    ("siglip", "vision_config", {"vision_use_head": False},
     "vision_config.vision_use_head=False"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "section", "changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    case, section, changes, message, checkpoints, tmp_path
):
    directory = _edited(checkpoints, case, tmp_path, section, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)


@pytest.mark.parametrize(
    ("case", "option", "value", "message"),
    [
        ("clip", "text_pooling", {"position": "last", "token_id": None},
         "text_pooling=.*'last'"),
        ("clip", "projection_bias", True, "projection_bias=True"),
        ("siglip", "image_pooling", "first",
         "image_pooling='first'; siglip's MAP head"),
    ],
)  # fmt: skip
def test_writing_refuses_what_the_family_cannot_express(
    case, option, value, message, loaded
):
    family = {family.model_type: family for family in FAMILIES}[case]
    options = family.model_options(loaded(case))
    with pytest.raises(ValueError, match=message):
        fields.checkpoint_config(
            family.fields, {**options, option: value}, case
        )


def test_token_pooling_reads_the_chosen_position():
    x = np.arange(2 * 4 * 3, dtype="float32").reshape(2, 4, 3)
    tokens = np.array([[5, 9, 9, 0], [7, 6, 5, 9]])
    for position, token_id, rows in (
        ("last", None, [3, 3]),
        ("token_id", 9, [1, 3]),
        ("highest_id", None, [1, 3]),
    ):
        pooled = TokenPooling(position, token_id=token_id)(x, tokens)
        np.testing.assert_array_equal(to_numpy(pooled), x[[0, 1], rows])
    with pytest.raises(ValueError, match="token_id"):
        TokenPooling("token_id")


class LayerHarnessTest(TestCase):
    def test_attention_pooling(self):
        self.run_layer_test(
            AttentionPooling,
            init_kwargs={"num_heads": 2, "hidden_dim": 12},
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 8),
            # The probe; the attention's 8; the norm's 2; the MLP's 4.
            expected_num_trainable_weights=15,
            # Trained in the SigLIP model of
            # test_trained_model_writes_back_for_transformers.
            run_training_check=False,
        )

    def test_token_pooling(self):
        self.run_layer_test(
            TokenPooling,
            init_kwargs={"position": "last"},
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 8),
            expected_num_trainable_weights=0,
            run_training_check=False,
        )

    def test_similarity_logits(self):
        self.run_layer_test(
            SimilarityLogits,
            init_kwargs={"logit_bias": -10.0},
            input_shape={
                "text_embeddings_shape": (3, 8),
                "image_embeddings_shape": (2, 8),
            },
            expected_output_shape=(3, 2),
            expected_num_trainable_weights=2,
            # The harness trains on one positional input; SigLIP's logits
            # are trained in test_trained_model_writes_back_for_transformers.
            run_training_check=False,
        )

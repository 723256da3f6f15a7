"""DeBERTa-v2/v3 checkpoints against `transformers` itself: random
checkpoints made offline from small configs with odd sizes, right padding
included."""

import keras
import numpy as np
import pytest

from keras_tfm import interop, models
from tests.conftest import to_numpy
from tests.huggingface_checks import (
    Checkpoints,
    assert_close,
    assert_every_option_declared,
    assert_transformers_reloads,
    changed_weights,
    copied,
    torch_outputs,
    trained_on,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Right padding; 8 positions, so that distances reach the log buckets.
TOKENS = np.array([[5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 0, 0, 0, 0]])
SEGMENTS = np.array([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0, 0]])
MASK_POSITIONS = np.array([[1, 3, 7], [0, 2, 3]])


def deberta_config(**overrides):
    """DeBERTa-v3's layout: both position terms in log buckets, a shared
    key projection, a normalised table, no absolute positions."""
    options = dict(
        vocab_size=101, max_position_embeddings=40, hidden_size=48,
        num_hidden_layers=2, num_attention_heads=3, intermediate_size=72,
        relative_attention=True, pos_att_type=["p2c", "c2p"],
        position_buckets=8, max_relative_positions=-1, share_att_key=True,
        norm_rel_ebd="layer_norm", position_biased_input=False,
        type_vocab_size=0, num_labels=3,
    )  # fmt: skip
    return transformers.DebertaV2Config(**{**options, **overrides})


def torch_inputs(segments=False):
    inputs = {
        "input_ids": torch.tensor(TOKENS),
        "attention_mask": torch.tensor(TOKENS != 0),
    }
    if segments:
        inputs["token_type_ids"] = torch.tensor(SEGMENTS)
    return inputs


def case_deberta():
    return (
        transformers.DebertaV2Model(deberta_config()),
        TOKENS,
        torch_inputs(),
    )


def case_classifier():
    """DeBERTa-v2's other options: absolute positions, token types, one
    position term with its own projection, no buckets (distances clipped
    at 4), no table norm."""
    config = deberta_config(
        position_biased_input=True, type_vocab_size=2, pos_att_type="c2p",
        position_buckets=-1, max_relative_positions=4, norm_rel_ebd="none",
        share_att_key=False,
    )  # fmt: skip
    return (
        transformers.DebertaV2ForSequenceClassification(config),
        {"tokens": TOKENS, "segment_ids": SEGMENTS},
        torch_inputs(segments=True),
    )


def case_masked_lm(legacy=True):
    return (
        transformers.DebertaV2ForMaskedLM(deberta_config(legacy=legacy)),
        {"tokens": TOKENS, "mask_positions": MASK_POSITIONS},
        torch_inputs(),
    )


def case_token_classifier():
    return (
        transformers.DebertaV2ForTokenClassification(deberta_config()),
        TOKENS,
        torch_inputs(),
    )


CASES = {
    "deberta": case_deberta,
    "deberta_classifier": case_classifier,
    "deberta_masked_lm": case_masked_lm,
    "deberta_masked_lm_tied": lambda: case_masked_lm(legacy=False),
    "deberta_token_classifier": case_token_classifier,
}


def real_positions(case, outputs, inputs):
    """The encoder's real positions; the masked LM's logits at
    `mask_positions` (transformers gives every position's)."""
    outputs = np.asarray(outputs)
    if case in ("deberta", "deberta_token_classifier"):
        return outputs[TOKENS != 0]
    masked_lm = case.startswith("deberta_masked_lm")
    if masked_lm and outputs.shape[1] == TOKENS.shape[1]:
        positions = MASK_POSITIONS[..., None]
        return np.take_along_axis(outputs, positions, axis=1)
    return outputs


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_equals_transformers(case, checkpoints, tmp_path):
    directory, reference, inputs, torch_inputs = checkpoints[case]
    model = interop.from_huggingface(directory)
    expected = torch_outputs(reference, torch_inputs).numpy()
    outputs = to_numpy(model(inputs))
    assert_close(
        real_positions(case, outputs, inputs),
        real_positions(case, expected, inputs),
    )
    assert model.huggingface_model_type == "deberta-v2"
    assert_every_option_declared(model)
    if case == "deberta":  # the shared table and its norm save too
        model.save(tmp_path / "deberta.keras")
        reloaded = keras.models.load_model(tmp_path / "deberta.keras")
        np.testing.assert_allclose(
            to_numpy(reloaded(inputs)), outputs, atol=1e-6
        )


@trained_on("tensorflow")
def test_trained_classifier_writes_back_for_transformers(checkpoints, tmp_path):
    case = "deberta_classifier"
    directory, _, inputs, _ = checkpoints[case]
    model = interop.from_huggingface(directory)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(inputs, np.array([0, 2]), epochs=1, verbose=0)
    interop.to_huggingface(model, tmp_path)
    assert_transformers_reloads(
        case, model, checkpoints[case], tmp_path, real_positions
    )


# The encoder's rows are in every head's.
@pytest.mark.parametrize(
    "case",
    ["deberta_masked_lm", "deberta_masked_lm_tied", "deberta_token_classifier"],
)
def test_changed_weights_write_back_for_transformers(
    case, checkpoints, tmp_path
):
    model = changed_weights(interop.from_huggingface(checkpoints[case][0]))
    interop.to_huggingface(model, tmp_path)
    assert_transformers_reloads(
        case, model, checkpoints[case], tmp_path, real_positions
    )


UNSUPPORTED = [
    ("deberta", {"relative_attention": False}, "relative_attention=False"),
    ("deberta", {"conv_kernel_size": 3}, "conv_kernel_size=3"),
    ("deberta", {"embedding_size": 24}, "embedding_size=24"),
    ("deberta", {"pos_att_type": ["p2p"]}, "pos_att_type"),
    ("deberta", {"norm_rel_ebd": "layer_norm|other"}, "norm_rel_ebd"),
    ("deberta_classifier", {"pooler_hidden_act": "gelu_new"},
     "pooler_hidden_act='gelu_new'"),
    ("deberta_classifier", {"pooler_hidden_size": 24},
     "pooler_hidden_size=24"),
    ("deberta_masked_lm", {"legacy": "yes"}, "legacy='yes'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    case, changes, message, checkpoints, tmp_path
):
    directory = copied(checkpoints, case, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)


def test_plain_attention_is_not_written_as_deberta(tmp_path):
    encoder = models.TextEncoder(
        vocab_size=31, sequence_length=8, num_layers=1, embed_dim=8,
        num_heads=2, ff_dim=16, embedding_norm=True,
    )  # fmt: skip
    with pytest.raises(ValueError, match="attention\\['type'\\]='multi_head'"):
        interop.to_huggingface(encoder, tmp_path, model_type="deberta-v2")

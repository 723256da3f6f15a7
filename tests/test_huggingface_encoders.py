"""RoBERTa, XLM-RoBERTa, DistilBERT and ELECTRA checkpoints against
`transformers` itself: random checkpoints made offline from small configs
with odd sizes, right-padded inputs compared at their real positions."""

import keras
import numpy as np
import pytest

from keras_tfm import interop
from keras_tfm.interop.huggingface import roberta as roberta_family
from keras_tfm.interop.huggingface.fields import checkpoint_config
from keras_tfm.models.token_classifier import TokenClassifier
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

# Right-padded: RoBERTa's padding id is 1 (0 is its start token), the
# others' 0.
ROBERTA_TOKENS = np.array([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]])
TOKENS = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])
SEGMENTS = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0]])
MASK_POSITIONS = np.array([[1, 3, 5], [0, 2, 1]])
SIZES = dict(
    vocab_size=101, hidden_size=48, num_hidden_layers=2,
    num_attention_heads=3, intermediate_size=72, num_labels=3,
)  # fmt: skip


def roberta(name, config_class=transformers.RobertaConfig, **overrides):
    config = config_class(max_position_embeddings=42, **SIZES, **overrides)
    return getattr(transformers, name)(config)


def distilbert(name, **overrides):
    config = transformers.DistilBertConfig(
        vocab_size=101, max_position_embeddings=40, dim=48, n_layers=2,
        n_heads=3, hidden_dim=72, num_labels=3, **overrides,
    )  # fmt: skip
    return getattr(transformers, name)(config)


def electra(name, **overrides):
    config = transformers.ElectraConfig(
        **{"max_position_embeddings": 40, "embedding_size": 24, **SIZES,
           **overrides},
    )  # fmt: skip
    return getattr(transformers, name)(config)


def make_case(reference, tokens, pad, segments=None, masked=False):
    """`(reference, keras inputs, torch inputs)` for right-padded `tokens`
    with id `pad` as padding, with token types and mask positions."""
    inputs = {"tokens": tokens}
    torch_inputs = {
        "input_ids": torch.tensor(tokens),
        "attention_mask": torch.tensor(tokens != pad),
    }
    if segments is not None:
        inputs["segment_ids"] = segments
        torch_inputs["token_type_ids"] = torch.tensor(segments)
    if masked:
        inputs["mask_positions"] = MASK_POSITIONS
    return reference, inputs if len(inputs) > 1 else tokens, torch_inputs


CASES = {
    # RoBERTa's one token type, as its checkpoints have.
    "roberta": lambda: make_case(
        roberta("RobertaModel", type_vocab_size=1), ROBERTA_TOKENS, 1,
        np.zeros_like(ROBERTA_TOKENS),
    ),
    "roberta_classifier": lambda: make_case(
        roberta("RobertaForSequenceClassification"), ROBERTA_TOKENS, 1,
        SEGMENTS,
    ),
    "roberta_tokens": lambda: make_case(
        roberta("RobertaForTokenClassification"), ROBERTA_TOKENS, 1,
        SEGMENTS,
    ),
    "roberta_masked_lm": lambda: make_case(
        roberta("RobertaForMaskedLM", hidden_act="gelu_new"),
        ROBERTA_TOKENS, 1, SEGMENTS, masked=True,
    ),
    "xlm_roberta_classifier": lambda: make_case(
        roberta(
            "XLMRobertaForSequenceClassification",
            transformers.XLMRobertaConfig,
        ),
        ROBERTA_TOKENS, 1, SEGMENTS,
    ),
    "distilbert": lambda: make_case(distilbert("DistilBertModel"), TOKENS, 0),
    "distilbert_classifier": lambda: make_case(
        distilbert("DistilBertForSequenceClassification"), TOKENS, 0
    ),
    "distilbert_tokens": lambda: make_case(
        distilbert("DistilBertForTokenClassification"), TOKENS, 0
    ),
    "distilbert_masked_lm": lambda: make_case(
        distilbert("DistilBertForMaskedLM", activation="relu"), TOKENS, 0,
        masked=True,
    ),
    # Embeddings narrower than the blocks: a projection.
    "electra": lambda: make_case(electra("ElectraModel"), TOKENS, 0, SEGMENTS),
    "electra_classifier": lambda: make_case(
        electra("ElectraForSequenceClassification", embedding_size=48),
        TOKENS, 0, SEGMENTS,
    ),
    "electra_tokens": lambda: make_case(
        electra("ElectraForTokenClassification"), TOKENS, 0, SEGMENTS
    ),
}  # fmt: skip


def real_positions(case, outputs, inputs):
    """The outputs anyone reads: per-token outputs at real tokens; the
    masked LM's logits at `mask_positions` (transformers gives every
    position's)."""
    tokens = inputs["tokens"] if isinstance(inputs, dict) else inputs
    outputs = np.asarray(outputs)
    if outputs.ndim != 3 or outputs.shape[1] != tokens.shape[1]:
        return outputs
    if case.endswith("masked_lm"):
        positions = inputs["mask_positions"][..., None]
        return np.take_along_axis(outputs, positions, axis=1)
    return outputs[tokens != (1 if "roberta" in case else 0)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_equals_transformers(case, checkpoints):
    directory, reference, inputs, torch_inputs = checkpoints[case]
    model = interop.from_huggingface(directory)
    expected = torch_outputs(reference, torch_inputs).numpy()
    assert_close(
        real_positions(case, to_numpy(model(inputs)), inputs),
        real_positions(case, expected, inputs),
    )
    assert model.huggingface_model_type == reference.config.model_type
    assert_every_option_declared(model)


@pytest.mark.parametrize(
    "case",
    ["roberta_masked_lm", "xlm_roberta_classifier", "distilbert_classifier",
     "distilbert_masked_lm", "electra"],
)  # fmt: skip
def test_changed_weights_write_back_for_transformers(
    case, checkpoints, tmp_path
):
    model = changed_weights(interop.from_huggingface(checkpoints[case][0]))
    interop.to_huggingface(model, tmp_path)
    assert_transformers_reloads(
        case, model, checkpoints[case], tmp_path, real_positions
    )


@trained_on("jax")
def test_trained_token_classifier_writes_back_for_transformers(
    checkpoints, tmp_path
):
    """ELECTRA's projection and a `TokenClassifier`, trained with `fit`;
    the labels of padded positions do not count."""
    directory, _, inputs, _ = checkpoints["electra_tokens"]
    model = interop.from_huggingface(directory)
    assert isinstance(model, TokenClassifier)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    labels = np.where(TOKENS != 0, TOKENS % 3, 0)
    model.fit(inputs, labels, epochs=1, verbose=0)
    interop.to_huggingface(model, tmp_path)
    assert_transformers_reloads(
        "electra_tokens", model, checkpoints["electra_tokens"], tmp_path,
        real_positions,
    )  # fmt: skip


def test_roberta_positions_are_offset_by_the_padding_id(checkpoints):
    """The table keeps its `pad_token_id + 1` rows before the first
    position's, which `max_position_embeddings` counts; a model whose
    offset is not its padding id plus one is refused."""
    model = interop.from_huggingface(checkpoints["roberta"][0])
    assert (model.padding_id, model.position_offset) == (1, 2)
    assert model.sequence_length == 40
    assert tuple(model.embedding.position_embeddings.shape) == (42, 48)
    options = {"encoder": {**model.get_config(), "position_offset": 0}}
    message = "pad_token_id holds, with different values: 1 and -1"
    with pytest.raises(ValueError, match=message):
        checkpoint_config(roberta_family.ENCODER_FIELDS, options, "roberta")


UNSUPPORTED = [
    ("roberta", {"position_embedding_type": "relative_key"},
     "position_embedding_type='relative_key'"),
    ("roberta", {"is_decoder": True}, "is_decoder=True"),
    ("roberta", {"max_position_embeddings": 2},
     "max_position_embeddings.*leaves no positions"),
    ("xlm_roberta_classifier", {"hidden_act": "gelu_fast"},
     "hidden_act='gelu_fast'"),
    ("distilbert", {"activation": "gelu_fast"}, "activation='gelu_fast'"),
    ("distilbert_tokens", {"n_heads": 5},
     "dim=48 and n_heads=5; dim must be divisible by n_heads"),
    ("electra", {"embedding_size": 0}, "embedding_size=0"),
    ("electra_classifier", {"position_embedding_type": "relative_key"},
     "position_embedding_type='relative_key'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    case, changes, message, checkpoints, tmp_path
):
    directory = copied(checkpoints, case, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)

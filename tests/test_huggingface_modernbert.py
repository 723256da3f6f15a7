"""ModernBERT checkpoints against `transformers` itself: random checkpoints
made offline from small configs with odd sizes, right-padded inputs with an
attention mask (real positions compared), sequences longer than the local
layers' window."""

import keras
import numpy as np
import pytest

from keras_tfm import interop
from keras_tfm.interop import huggingface
from keras_tfm.interop.huggingface.fields import checkpoint_config
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

# Right padding (id 0) in the second row; 9 positions, local layers see 2
# on each side.
TOKENS = np.array(
    [[5, 6, 7, 8, 9, 10, 11, 12, 13], [14, 15, 16, 17, 18, 0, 0, 0, 0]]
)
REAL = TOKENS != 0


def config(**overrides):
    """Three layers, global, local, global; rope bases of their own."""
    return transformers.ModernBertConfig(
        vocab_size=101, hidden_size=48, intermediate_size=40,
        num_hidden_layers=3, num_attention_heads=3, local_attention=4,
        global_attn_every_n_layers=2, global_rope_theta=1000.0,
        local_rope_theta=500.0, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
        sep_token_id=2, num_labels=3, **overrides,
    )  # fmt: skip


def case(model_class, masked_lm=False, **overrides):
    reference = model_class(config(**overrides))
    inputs = TOKENS
    if masked_lm:
        positions = np.tile(np.arange(TOKENS.shape[1]), (len(TOKENS), 1))
        inputs = {"tokens": TOKENS, "mask_positions": positions}
    torch_inputs = {
        "input_ids": torch.tensor(TOKENS),
        "attention_mask": torch.tensor(REAL.astype("int64")),
    }
    return reference, inputs, torch_inputs


CASES = {
    "encoder": lambda: case(transformers.ModernBertModel),
    "masked_lm": lambda: case(
        transformers.ModernBertForMaskedLM, masked_lm=True
    ),
    "untied_masked_lm": lambda: case(
        transformers.ModernBertForMaskedLM,
        masked_lm=True,
        tie_word_embeddings=False,
        decoder_bias=False,
    ),  # fmt: skip
    "classifier": lambda: case(
        transformers.ModernBertForSequenceClassification,
        classifier_pooling="mean",
    ),
    # Every bias ModernBERT may have; the head's activation exact GELU.
    "token_classifier": lambda: case(
        transformers.ModernBertForTokenClassification,
        norm_bias=True,
        attention_bias=True,
        mlp_bias=True,
        classifier_bias=True,
    ),  # fmt: skip
    "tanh_gelu": lambda: case(
        transformers.ModernBertModel, hidden_activation="gelu_pytorch_tanh"
    ),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


def real_positions(case, outputs, inputs):
    """Per-token outputs at the real positions; pooled ones as they are."""
    return outputs[REAL] if outputs.ndim == 3 else outputs


def assert_loads(checkpoint, case):
    directory, reference, inputs, torch_inputs = checkpoint
    model = interop.from_huggingface(directory)
    theirs = torch_outputs(reference, torch_inputs).numpy()
    assert_close(
        real_positions(case, to_numpy(model(inputs)), inputs),
        real_positions(case, theirs, inputs),
    )
    assert model.huggingface_model_type == "modernbert"
    assert_every_option_declared(model)
    return model


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_equals_transformers(case, checkpoints):
    assert_loads(checkpoints[case], case)


def test_loaded_options_are_modernbert_s(checkpoints):
    model = assert_loads(checkpoints["encoder"], "encoder")
    first, local, last = model.blocks
    assert first.self_attention_norm is None
    assert local.self_attention_norm.beta is None
    windows = [block.self_attention.sliding_window for block in model.blocks]
    assert windows == [None, 3, None]
    waves = [b.self_attention.rotary["max_wavelength"] for b in model.blocks]
    assert waves == [1000.0, 500.0, 1000.0]
    # Writing refuses blocks ModernBERT cannot express: the first with its
    # attention's norm.
    family = huggingface._family_of_model(model, "modernbert")
    options = family.model_options(model)
    options["encoder"]["layer_overrides"][0] = None
    with pytest.raises(ValueError, match=r"norm\['skip'\]"):
        checkpoint_config(family.fields, options, "modernbert")


@pytest.mark.parametrize(
    "case", ["encoder", "untied_masked_lm", "classifier", "token_classifier"]
)
def test_changed_weights_write_back_for_transformers(
    case, checkpoints, tmp_path
):
    checkpoint = checkpoints[case]
    model = changed_weights(interop.from_huggingface(checkpoint[0]))
    interop.to_huggingface(model, tmp_path)
    assert_transformers_reloads(
        case, model, checkpoint, tmp_path, real_positions
    )


@trained_on("tensorflow")
def test_trained_model_writes_back_for_transformers(checkpoints, tmp_path):
    """The tied masked-LM head with its own bias, trained with `fit`."""
    checkpoint = checkpoints["masked_lm"]
    model = interop.from_huggingface(checkpoint[0])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inputs = checkpoint[2]
    model.fit(inputs, np.roll(TOKENS, 1, axis=1), epochs=1, verbose=0)
    interop.to_huggingface(model, tmp_path)
    assert_transformers_reloads(
        "masked_lm", model, checkpoint, tmp_path, real_positions
    )


def test_transformers_4_config_fields_load_the_same(checkpoints, tmp_path):
    """`global_attn_every_n_layers` and the rope bases as transformers 4
    wrote them, without `layer_types` and `rope_parameters`."""
    _, reference, inputs, torch_inputs = checkpoints["encoder"]
    older = copied(
        checkpoints, "encoder", tmp_path, layer_types=None,
        rope_parameters=None, global_attn_every_n_layers=2,
        global_rope_theta=1000.0, local_rope_theta=500.0,
    )  # fmt: skip
    model = interop.from_huggingface(older)
    theirs = torch_outputs(reference, torch_inputs).numpy()
    assert_close(to_numpy(model(inputs))[REAL], theirs[REAL])


UNSUPPORTED = [
    ("encoder", {"hidden_activation": "silu"}, "hidden_activation='silu'"),
    ("encoder", {"norm_bias": "yes"}, "norm_bias='yes'"),
    ("encoder", {"local_attention": 1}, "local_attention=1"),
    ("encoder", {"layer_types": ["full_attention", "chunked", "x"]},
     "layer_types="),
    ("encoder", {"layer_types": None, "global_attn_every_n_layers": 0},
     "global_attn_every_n_layers=0"),
    ("encoder", {"rope_parameters": {
        "full_attention": {"rope_type": "longrope"}}},
     r"rope_parameters\['full_attention'\]\['rope_type'\]='longrope'"),
    ("classifier", {"classifier_pooling": "max"},
     "classifier_pooling='max'"),
    ("classifier", {"classifier_activation": "tanh"},
     "classifier_activation='tanh'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    case, changes, message, checkpoints, tmp_path
):
    directory = copied(checkpoints, case, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)

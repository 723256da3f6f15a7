"""BART, mBART, Marian and M2M-100 (NLLB) checkpoints against
`transformers` itself: random checkpoints made offline from small configs
with odd sizes, right-padded sources, and generation (greedy with forced
first and last tokens, beam search) equal to `transformers.generate`."""

import keras
import numpy as np
import pytest

from keras_tfm import generation, interop
from tests.huggingface_checks import (
    Checkpoints,
    assert_changed_weights_write_back,
    assert_loads_as_transformers,
    assert_same_tokens,
    assert_transformers_reloads,
    copied,
    trained_on,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = dict(
    vocab_size=101, d_model=48, encoder_layers=2, decoder_layers=2,
    encoder_attention_heads=3, decoder_attention_heads=3,
    encoder_ffn_dim=72, decoder_ffn_dim=72, max_position_embeddings=40,
)  # fmt: skip
# Marian's padding id is its last id, and its decoder starts from it.
MARIAN_IDS = dict(pad_token_id=100, decoder_start_token_id=100, eos_token_id=0)


def source(pad, eos):
    """Two sources, the second right-padded."""
    return np.array([[5, 6, 7, 8, 9, eos], [10, 11, 12, eos, pad, pad]])


def translation(reference):
    """The reference, inputs for keras_tfm and for transformers: a padded
    source, and targets from the decoder's start token."""
    config = reference.config
    with torch.no_grad():  # a buffer `widen` leaves at zero
        bias = getattr(reference, "final_logits_bias", None)
        if bias is not None:
            bias.normal_()
    tokens = source(config.pad_token_id, config.eos_token_id)
    start = config.decoder_start_token_id
    if start is None:
        start = config.bos_token_id
    target = np.array([[start, 13, 14, 15], [start, 16, 17, 18]])
    return (
        reference,
        {"encoder_tokens": tokens, "decoder_tokens": target},
        {
            "input_ids": torch.tensor(tokens),
            "attention_mask": torch.tensor(tokens != config.pad_token_id),
            "decoder_input_ids": torch.tensor(target),
        },
    )


CASES = {
    # Small weights: greedy ends at once, beam search finds a longer
    # hypothesis with a better length-penalised score.
    "bart": lambda: translation(
        transformers.BartForConditionalGeneration(
            transformers.BartConfig(**SIZES, init_std=0.1)
        )
    ),
    "mbart": lambda: translation(
        transformers.MBartForConditionalGeneration(
            transformers.MBartConfig(**SIZES, scale_embedding=True)
        )
    ),
    "marian": lambda: translation(
        transformers.MarianMTModel(
            transformers.MarianConfig(
                **SIZES,
                **MARIAN_IDS,
                scale_embedding=True,
                init_std=0.3,
                activation_function="swish",  # Opus-MT's
            )
        )
    ),
    "m2m_100": lambda: translation(
        transformers.M2M100ForConditionalGeneration(
            transformers.M2M100Config(**SIZES, init_std=0.3)
        )
    ),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_equals_transformers(case, checkpoints):
    model = assert_loads_as_transformers(checkpoints[case])
    config = checkpoints[case][1].config
    assert model.decoder_start_token_id == (
        config.decoder_start_token_id or config.bos_token_id
    )


@pytest.mark.parametrize("case", ["marian", "m2m_100"])
def test_changed_weights_write_back_for_transformers(
    case, checkpoints, tmp_path
):
    assert_changed_weights_write_back(case, checkpoints[case], tmp_path)


@trained_on("tensorflow")
def test_trained_bart_writes_back_for_transformers(checkpoints, tmp_path):
    """BART trained with `fit`: its per-stack position tables and
    embedding norms train, its `final_logits_bias` (a buffer in
    transformers) does not."""
    _, _, inputs, _ = checkpoints["bart"]
    model = interop.from_huggingface(checkpoints["bart"][0])
    bias = keras.ops.convert_to_numpy(model.logits_bias_layer.bias)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    labels = np.roll(inputs["decoder_tokens"], -1, axis=1)
    model.fit(inputs, labels, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.logits_bias_layer.bias, bias)
    interop.to_huggingface(model, tmp_path)
    assert_transformers_reloads("bart", model, checkpoints["bart"], tmp_path)


def transformers_translation(reference, tokens, max_new_tokens, **options):
    pad = reference.config.pad_token_id
    with torch.no_grad():
        found = reference.generate(
            input_ids=torch.tensor(tokens),
            attention_mask=torch.tensor(tokens != pad),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **options,
        )
    return found[:, 1:].numpy()  # without the decoder's start token


def assert_translates_as_transformers(
    case, checkpoints, directory=None, theirs=None, **options
):
    """Both padded sources batched, from the model's own start token;
    `theirs`: transformers' options, if not `options`."""
    _, reference, inputs, _ = checkpoints[case]
    model = interop.from_huggingface(directory or checkpoints[case][0])
    tokens = inputs["encoder_tokens"]
    ours = generation.generate(model, {"encoder_tokens": tokens}, 7, **options)
    theirs = transformers_translation(
        reference, tokens, 7, **(options if theirs is None else theirs)
    )
    for row, expected in zip(ours, theirs, strict=True):
        assert_same_tokens(row, expected, pad=reference.config.pad_token_id)
    return ours


def test_mbart_beams_force_its_language_code_and_end(checkpoints, tmp_path):
    """An mBART config.json that forces token 7 first (transformers 5 keeps
    it in generation_config.json only, which the loader does not read) and
    its end id last (cut at 7 new tokens); beam search, both sources
    batched."""
    directory = copied(checkpoints, "mbart", tmp_path, forced_bos_token_id=7)
    ours = assert_translates_as_transformers(
        "mbart", checkpoints, directory,
        theirs={"forced_bos_token_id": 7, "num_beams": 2}, sampler="beam",
        num_beams=2,
    )  # fmt: skip
    assert (ours[:, 0] == 7).all()


def test_nllb_style_target_language_is_forced_per_call(checkpoints):
    """M2M-100 (NLLB) takes the target language per call."""
    ours = assert_translates_as_transformers(
        "m2m_100", checkpoints, forced_bos_token_id=9
    )
    assert (ours[:, 0] == 9).all()


def test_marian_decodes_from_its_padding_id(checkpoints):
    """Marian's decoder starts from its padding id, which the target then
    does not mask."""
    assert_translates_as_transformers("marian", checkpoints)


def test_beam_search_ranks_finished_hypotheses_as_transformers(checkpoints):
    """Greedy ends at once on this checkpoint; beam search keeps a longer
    hypothesis whose length-penalised score is better, as transformers
    does."""
    ours = assert_translates_as_transformers(
        "bart", checkpoints, theirs={"num_beams": 3}, sampler="beam",
        num_beams=3,
    )  # fmt: skip
    assert (ours[:, 1] != 2).all()


UNSUPPORTED = [
    ("marian", {"activation_function": "tanh"}, "activation_function='tanh'"),
    ("marian", {"share_encoder_decoder_embeddings": False},
     "share_encoder_decoder_embeddings=False"),
    ("marian", {"decoder_vocab_size": 90}, "decoder_vocab_size=90"),
    ("bart", {"tie_word_embeddings": False}, "tie_word_embeddings=False"),
    ("bart", {"decoder_layers": 3}, "decoder_layers=3"),
    ("mbart", {"decoder_ffn_dim": 96}, "decoder_ffn_dim=96"),
    ("m2m_100", {"decoder_attention_heads": 4}, "decoder_attention_heads=4"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    case, changes, message, checkpoints, tmp_path
):
    directory = copied(checkpoints, case, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)

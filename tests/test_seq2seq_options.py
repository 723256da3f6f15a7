"""The options of `Seq2SeqTransformer` that translation and speech
checkpoints use: positions per stack, embedding norms, a fixed logits bias,
audio features in place of source tokens, and the decoder's start and
forced ids in `generation.generate`."""

import keras
import numpy as np
import pytest

from keras_tfm import generation, models
from keras_tfm.models.seq2seq import LogitsBias, StackPositions
from tests.conftest import to_numpy

SOURCE = np.array([[5, 6, 7, 8, 0], [9, 10, 0, 0, 0]])
TARGET = np.array([[1, 11, 12], [1, 13, 14]])


def small(**options):
    return models.Seq2SeqTransformer(
        vocab_size=30, sequence_length=12, num_layers=1, embed_dim=12,
        num_heads=2, ff_dim=16, dropout=0.0, **options,
    )  # fmt: skip


def test_sinusoids_are_marians_and_fairseqs():
    """`"halves"` is Marian's stored table; `"tensor2tensor"` at offset 2
    is M2M-100's, whose row `padding_idx` (1) is never read by a token."""
    torch = pytest.importorskip("torch")
    from transformers.models.m2m_100.modeling_m2m_100 import (
        M2M100SinusoidalPositionalEmbedding,
    )
    from transformers.models.marian.modeling_marian import (
        MarianSinusoidalPositionalEmbedding,
    )

    x = np.zeros((1, 9, 10), "float32")
    marian = MarianSinusoidalPositionalEmbedding(9, 10)
    with torch.no_grad():
        marian.weight.copy_(marian.create_weight())
    halves = StackPositions(9, type="sinusoidal", sinusoid="halves")
    np.testing.assert_allclose(
        to_numpy(halves(x))[0], marian.weight.numpy(), atol=1e-6
    )
    table = M2M100SinusoidalPositionalEmbedding.get_embedding(11, 10, 1)
    fairseq = StackPositions(
        9, type="sinusoidal", offset=2, sinusoid="tensor2tensor"
    )
    np.testing.assert_allclose(
        to_numpy(fairseq(x))[0], table[2:].numpy(), atol=1e-6
    )
    later = fairseq(x[:, :3], start_index=4)
    np.testing.assert_allclose(to_numpy(later)[0], table[6:9], atol=1e-6)


def test_learned_positions_read_rows_after_the_offset():
    layer = StackPositions(6, offset=2)
    x = np.zeros((1, 3, 4), "float32")
    layer.build(x.shape)
    assert tuple(layer.embeddings.shape) == (8, 4)
    table = to_numpy(layer.embeddings)
    np.testing.assert_allclose(to_numpy(layer(x, start_index=1))[0], table[3:6])


def test_logits_bias_is_added_and_not_trained():
    layer = LogitsBias()
    logits = np.ones((1, 2, 5), "float32")
    layer.build(logits.shape)
    layer.bias.assign(np.arange(5.0))
    np.testing.assert_allclose(to_numpy(layer(logits))[0, 1], 1 + np.arange(5))
    assert layer.trainable_weights == []


def test_bart_style_model_saves_reloads_and_caches(tmp_path):
    """Positions per stack, embedding norms and a logits bias: the same
    logits from a `.keras` file, from its config, and decoded with the
    cache."""
    model = small(
        position=None, stack_positions={"offset": 2}, embedding_norm=True,
        logits_bias=True, decoder_start_token_id=1,
    )  # fmt: skip
    model.logits_bias_layer.bias.assign(np.linspace(-1, 1, 30))
    inputs = {"encoder_tokens": SOURCE, "decoder_tokens": TARGET}
    expected = to_numpy(model(inputs))
    names = [weight.path for weight in model.weights]
    assert "encoder_positions/embeddings" in names
    assert "decoder_embedding_norm/gamma" in names
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(to_numpy(reloaded(inputs)), expected, atol=1e-5)
    rebuilt = models.Seq2SeqTransformer.from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()
    cache = model.initial_cache(2, 3, encoder_tokens=SOURCE)
    cached, _ = model.call_with_cache(TARGET, cache, 0)
    np.testing.assert_allclose(to_numpy(cached), expected, atol=1e-5)


def test_generation_starts_and_forces_the_models_ids():
    """No `decoder_tokens`: each target starts from the decoder start id;
    the forced ids come first and last, the rest as greedy decodes from
    [start, forced]."""
    model = small(
        decoder_start_token_id=1, forced_bos_token_id=4, forced_eos_token_id=2
    )
    ours = generation.generate(model, {"encoder_tokens": SOURCE}, 4)
    assert (ours[:, 0] == 4).all()
    assert (ours[:, -1] == 2).all()
    prompts = {"encoder_tokens": SOURCE, "decoder_tokens": [[1, 4], [1, 4]]}
    free = generation.generate(
        model, prompts, 2, forced_bos_token_id=None, forced_eos_token_id=None
    )
    np.testing.assert_array_equal(ours[:, 1:3], free)


def audio_stand_in():
    """`keras_tfm.layers.audio` if it exists, else nothing to test yet."""
    return pytest.importorskip("keras_tfm.layers.audio")


def test_audio_features_replace_source_tokens(tmp_path):
    """Features in, no source padding mask; cached decoding, generation
    and a `.keras` round trip."""
    audio_stand_in()
    model = small(
        encoder_features={"channels": 6, "sequence_length": 5},
        position="learned",
        norm={"placement": "pre"},
        decoder_start_token_id=1,
    )
    assert model.encoder_embedding.name == "encoder_embedding"
    features = np.random.default_rng(0).normal(size=(2, 10, 6))
    features = features.astype("float32")
    inputs = {"encoder_features": features, "decoder_tokens": TARGET}
    expected = to_numpy(model(inputs))
    cache = model.initial_cache(2, 3, encoder_features=features)
    cached, _ = model.call_with_cache(TARGET, cache, 0)
    np.testing.assert_allclose(to_numpy(cached), expected, atol=1e-5)
    tokens = generation.generate(model, {"encoder_features": features}, 3)
    assert tokens.shape == (2, 3)
    model.save(tmp_path / "speech.keras")
    reloaded = keras.models.load_model(tmp_path / "speech.keras")
    np.testing.assert_allclose(to_numpy(reloaded(inputs)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="takes `encoder_features`"):
        model.encode(encoder_tokens=SOURCE)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stack_positions": {"offset": 2}}, "use position=None"),
        ({"position": None, "stack_positions": {"rows": 2}},
         "stack_positions key"),
        ({"position": None, "stack_positions": {"sinusoid": "paper"}},
         r"stack_positions\['sinusoid'\]"),
        ({"position": None, "stack_positions": {"offset": -1}},
         r"stack_positions\['offset'\]"),
        ({"encoder_features": 80}, "encoder_features=80"),
    ],
)  # fmt: skip
def test_bad_options_raise_a_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        small(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"forced_bos_token_id": "fr"}, "forced_bos_token_id='fr'"),
        ({"length_penalty": "long"}, "length_penalty='long'"),
        ({"early_stopping": "soon"}, "early_stopping='soon'"),
    ],
)
def test_bad_generation_options_raise_a_clear_error(options, message):
    model = small(decoder_start_token_id=1)
    with pytest.raises(ValueError, match=message):
        generation.generate(model, {"encoder_tokens": SOURCE}, 2, **options)

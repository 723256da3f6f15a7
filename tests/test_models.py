"""Model builders: parameter counts, a training step, save and reload."""

import inspect

import keras
import numpy as np
import pytest

from keras_tfm import models
from tests.conftest import to_numpy


def attention_params(width, heads=None, kv_heads=None):
    head_dim = width // heads if heads else 0
    kv_width = kv_heads * head_dim if kv_heads else width
    return 2 * (width * width + width) + 2 * (width * kv_width + kv_width)


def feed_forward_params(width, hidden, gated=False):
    params = width * hidden + hidden + hidden * width + width
    return params + (width * hidden + hidden if gated else 0)


def layer_norm_params(width):
    return 2 * width


def encoder_block_params(width, hidden):
    return (
        attention_params(width)
        + feed_forward_params(width, hidden)
        + 2 * layer_norm_params(width)
    )


def decoder_block_params(width, hidden, cross=True):
    attention = attention_params(width) * (2 if cross else 1)
    norms = (3 if cross else 2) * layer_norm_params(width)
    return attention + feed_forward_params(width, hidden) + norms


def test_paper_base_model_has_63_082_496_weights():
    model = models.seq2seq_transformer(vocab_size=37000, sequence_length=256)
    assert model.count_params() == 63_082_496
    embedding = 37000 * 512
    blocks = 6 * encoder_block_params(512, 2048)
    blocks += 6 * decoder_block_params(512, 2048)
    assert embedding + blocks == 63_082_496


def test_untied_two_vocabulary_seq2seq_count():
    model = models.seq2seq_transformer(
        vocab_size=50,
        sequence_length=10,
        num_layers=2,
        embed_dim=16,
        num_heads=2,
        ff_dim=24,
        target_vocab_size=40,
        tie_embeddings=False,
        position="learned",
        norm_first=True,
    )
    expected = (50 + 10) * 16 + (40 + 10) * 16  # tokens + learned positions
    expected += 2 * encoder_block_params(16, 24)
    expected += 2 * decoder_block_params(16, 24)
    expected += 2 * layer_norm_params(16)  # final norms of both stacks
    expected += 16 * 40 + 40  # output projection with bias
    assert model.count_params() == expected


def seq2seq_case():
    model = models.seq2seq_transformer(
        vocab_size=30,
        sequence_length=12,
        num_layers=2,
        embed_dim=16,
        num_heads=2,
        ff_dim=32,
    )
    rng = np.random.default_rng(0)
    inputs = {
        "encoder_tokens": rng.integers(1, 30, (8, 10)),
        "decoder_tokens": rng.integers(1, 30, (8, 9)),
    }
    expected = 30 * 16 + 2 * encoder_block_params(16, 32)
    expected += 2 * decoder_block_params(16, 32)
    return model, inputs, rng.integers(1, 30, (8, 9)), expected


def classifier_case(pooling):
    model = models.text_classifier(
        vocab_size=30,
        sequence_length=12,
        num_classes=3,
        num_layers=2,
        embed_dim=16,
        num_heads=2,
        ff_dim=32,
        pooling=pooling,
    )
    tokens = np.random.default_rng(0).integers(1, 30, (8, 12))
    tokens[:, 9:] = 0
    expected = (30 + 12) * 16 + 2 * encoder_block_params(16, 32) + 16 * 3 + 3
    return model, tokens, np.arange(8) % 3, expected


def causal_lm_case():
    model = models.causal_lm(
        vocab_size=30,
        sequence_length=12,
        num_layers=2,
        embed_dim=16,
        num_heads=4,
        ff_dim=32,
        rotary=True,
        num_kv_heads=2,
    )
    tokens = np.random.default_rng(0).integers(1, 30, (8, 12))
    block = (
        attention_params(16, heads=4, kv_heads=2)
        + feed_forward_params(16, 32)
        + 2 * layer_norm_params(16)
    )
    expected = 30 * 16 + 2 * block + layer_norm_params(16)
    return model, tokens, np.roll(tokens, -1, axis=1), expected


def vit_case():
    model = models.vit_classifier(
        image_size=8,
        patch_size=4,
        num_classes=10,
        num_layers=2,
        embed_dim=16,
        num_heads=2,
        ff_dim=32,
        channels=1,
    )
    images = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    patches = 4 * 4 * 1 * 16 + 16  # convolution kernel and bias
    expected = patches + 16 + 5 * 16  # class token, 1 + 4 positions
    expected += 2 * encoder_block_params(16, 32) + layer_norm_params(16)
    expected += 16 * 10 + 10
    return model, images, np.arange(8) % 10, expected


def forecaster_case():
    model = models.forecaster(
        input_length=12,
        horizon=4,
        num_features=2,
        num_layers=2,
        embed_dim=16,
        num_heads=2,
        ff_dim=32,
    )
    series = np.random.default_rng(0).random((8, 12, 2)).astype("float32")
    expected = 2 * 16 + 16 + 2 * encoder_block_params(16, 32)
    expected += layer_norm_params(16) + 12 * 16 * 8 + 8
    return model, series, series[:, :4], expected


def masked_lm_case():
    model = models.masked_lm(
        vocab_size=30,
        sequence_length=12,
        num_layers=2,
        embed_dim=16,
        num_heads=2,
        ff_dim=32,
    )
    rng = np.random.default_rng(0)
    inputs = {
        "tokens": rng.integers(1, 30, (8, 12)),
        "mask_positions": rng.integers(0, 12, (8, 3)),
    }
    expected = (30 + 12) * 16 + 2 * encoder_block_params(16, 32)
    expected += 16 * 16 + 16 + layer_norm_params(16)  # head; tied output
    return model, inputs, rng.integers(1, 30, (8, 3)), expected


CASES = {
    "seq2seq": seq2seq_case,
    "masked_lm": masked_lm_case,
    "classifier_mean": lambda: classifier_case("mean"),
    "classifier_cls": lambda: classifier_case("cls"),
    "causal_lm": causal_lm_case,
    "vit": vit_case,
    "forecaster": forecaster_case,
}


@pytest.mark.parametrize("case", CASES)
def test_builder_counts_trains_saves_and_reloads(case, tmp_path):
    model, inputs, targets, expected_params = CASES[case]()
    assert model.count_params() == expected_params
    loss = (
        "mse"
        if case == "forecaster"
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.compile(optimizer="adam", loss=loss)
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    model.fit(inputs, targets, epochs=1, batch_size=8, verbose=0)
    after = [to_numpy(w) for w in model.trainable_weights]
    assert any(
        not np.allclose(a, b) for a, b in zip(before, after, strict=True)
    )

    expected = to_numpy(model(inputs))
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded) is type(model)
    assert reloaded.get_config() == model.get_config()
    np.testing.assert_allclose(to_numpy(reloaded(inputs)), expected, atol=1e-5)


def test_tied_seq2seq_shares_one_matrix_after_reload(tmp_path):
    model, inputs, _, _ = seq2seq_case()
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    embedding = reloaded.decoder_embedding
    assert embedding is reloaded.encoder_embedding
    assert reloaded.count_params() == model.count_params()
    table = embedding.token_embedding.embeddings
    table.assign(np.zeros(table.shape, "float32"))
    # With the shared table zeroed, logits no longer depend on the tokens.
    logits = to_numpy(reloaded(inputs))
    np.testing.assert_allclose(logits, 0.0, atol=1e-6)


def test_builder_argument_errors():
    with pytest.raises(ValueError, match="pooling='max'"):
        models.text_classifier(10, 8, 2, pooling="max")
    with pytest.raises(ValueError, match="num_layers=0"):
        models.causal_lm(10, 8, num_layers=0)
    with pytest.raises(ValueError, match=r"`patch_size`=3 must divide"):
        models.vit_classifier(8, 3, 10)
    with pytest.raises(ValueError, match="horizon=0"):
        models.forecaster(12, 0)


@pytest.mark.parametrize("case", CASES)
def test_config_lists_every_constructor_argument(case):
    model = CASES[case]()[0]
    arguments = inspect.signature(type(model).__init__).parameters
    expected = set(arguments) - {"self", "kwargs"}
    assert expected <= set(model.get_config())
    assert model.name == type(model).from_config(model.get_config()).name


def test_padding_id_is_an_option_not_a_literal():
    # RoBERTa pads with id 1, and id 0 is a real token there.
    options = {"num_layers": 1, "embed_dim": 8, "num_heads": 2, "ff_dim": 8}
    encoder = models.TextEncoder(20, 8, padding_id=1, **options)
    real = np.array([[0, 5, 6]])
    padded = np.array([[0, 5, 6, 1, 1]])
    np.testing.assert_allclose(
        to_numpy(encoder(padded))[:, :3], to_numpy(encoder(real)), atol=1e-5
    )
    translator = models.Seq2SeqTransformer(20, 8, padding_id=1, **options)
    target = np.array([[2, 3]])
    logits = {
        name: to_numpy(translator({"encoder_tokens": source,
                                   "decoder_tokens": target}))
        for name, source in (("real", real), ("padded", padded))
    }  # fmt: skip
    np.testing.assert_allclose(logits["padded"], logits["real"], atol=1e-5)

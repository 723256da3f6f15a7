"""`models.masked_lm` and fine-tuning its encoder in `text_classifier`."""

import keras
import numpy as np
import pytest

from keras_tfm import models
from tests.conftest import to_numpy
from tests.reference import softmax

VOCAB, LENGTH = 20, 8
SIZES = {"num_layers": 1, "embed_dim": 16, "num_heads": 2, "ff_dim": 32}


def pretrained():
    return models.masked_lm(VOCAB, LENGTH, dropout=0.0, **SIZES)


def masked_batch():
    """Two rows: 3 and 1 real masked positions, the rest padding slots."""
    inputs = {
        "tokens": np.array(
            [[2, 1, 5, 1, 7, 1, 0, 0], [3, 4, 1, 6, 0, 0, 0, 0]]
        ),
        "mask_positions": np.array([[1, 3, 5], [2, 0, 0]]),
    }
    mask_ids = np.array([[9, 4, 11], [8, 0, 0]])
    mask_weights = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    return inputs, mask_ids, mask_weights


@pytest.mark.parametrize("jit_compile", [False, "auto"])
def test_loss_and_accuracy_count_only_masked_positions(jit_compile):
    model = pretrained()
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=["sparse_categorical_accuracy"],
        jit_compile=jit_compile,
    )
    inputs, mask_ids, mask_weights = masked_batch()
    logits = to_numpy(model(inputs))
    real = mask_weights > 0
    log_probabilities = np.log(softmax(logits))
    picked = np.take_along_axis(log_probabilities, mask_ids[..., None], -1)
    expected_loss = -picked[..., 0][real].mean()
    expected_accuracy = (logits.argmax(-1) == mask_ids)[real].mean()

    result = model.evaluate(
        inputs,
        mask_ids,
        sample_weight=mask_weights,
        verbose=0,
        return_dict=True,
    )
    np.testing.assert_allclose(result["loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(
        result["sparse_categorical_accuracy"], expected_accuracy, rtol=1e-6
    )
    # Targets in the padding slots do not count.
    other_ids = np.where(real, mask_ids, 13)
    again = model.evaluate(
        inputs,
        other_ids,
        sample_weight=mask_weights,
        verbose=0,
        return_dict=True,
    )
    np.testing.assert_allclose(again["loss"], result["loss"], rtol=1e-6)


def test_logits_at_a_position_are_the_full_sequence_head():
    model = pretrained()
    inputs, _, _ = masked_batch()
    logits = to_numpy(model(inputs))
    encoder = models.masked_lm_encoder(model)
    states = encoder(inputs["tokens"])
    hidden = keras.ops.gelu(model.head_dense(states), approximate=False)
    head = model.head_norm(hidden)
    table = to_numpy(encoder.embedding.token_embedding.embeddings)
    full = to_numpy(head) @ table.T
    expected = np.take_along_axis(
        full, inputs["mask_positions"][..., None], axis=1
    )
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_classifier_shares_the_pretrained_encoder_weights():
    model = pretrained()
    encoder = models.masked_lm_encoder(model)
    classifier = models.text_classifier(
        VOCAB, LENGTH, num_classes=2, encoder=encoder
    )
    head = classifier.head
    assert (
        classifier.count_params()
        == encoder.count_params() + head.count_params()
    )
    shared = {id(w) for w in model.weights}
    encoder_weights = [w for w in classifier.weights if id(w) in shared]
    assert len(encoder_weights) == len(encoder.weights)

    tokens = np.array([[3, 4, 5, 6, 0, 0]])
    before = to_numpy(classifier(tokens))
    # Changing the pretrained model's weight changes the classifier.
    kernel = model.encoder.blocks[0].weights[0]
    kernel.assign(to_numpy(kernel) * 2.0)
    assert not np.allclose(to_numpy(classifier(tokens)), before)
    # Fine-tuning the classifier changes the pretrained model.
    mlm_inputs = {"tokens": tokens, "mask_positions": np.array([[1]])}
    mlm_before = to_numpy(model(mlm_inputs))
    classifier.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    classifier.fit(tokens, np.array([1]), verbose=0)
    assert not np.allclose(to_numpy(model(mlm_inputs)), mlm_before)


def test_reloaded_pretrained_model_and_classifier(tmp_path):
    model = pretrained()
    model.save(tmp_path / "mlm.keras")
    reloaded = keras.models.load_model(tmp_path / "mlm.keras")
    inputs, _, _ = masked_batch()
    np.testing.assert_allclose(
        to_numpy(reloaded(inputs)), to_numpy(model(inputs)), atol=1e-5
    )
    classifier = models.text_classifier(
        VOCAB, LENGTH, 3, encoder=models.masked_lm_encoder(reloaded)
    )
    tokens = inputs["tokens"]
    classifier.save(tmp_path / "classifier.keras")
    again = keras.models.load_model(tmp_path / "classifier.keras")
    np.testing.assert_allclose(
        to_numpy(again(tokens)), to_numpy(classifier(tokens)), atol=1e-5
    )


def test_padding_does_not_change_the_classifier():
    classifier = models.text_classifier(
        VOCAB, LENGTH, 2, encoder=models.masked_lm_encoder(pretrained())
    )
    short = to_numpy(classifier(np.array([[3, 4, 5]])))
    padded = to_numpy(classifier(np.array([[3, 4, 5, 0, 0, 0]])))
    np.testing.assert_allclose(padded, short, atol=1e-5)


def test_encoder_argument_errors():
    encoder = models.masked_lm_encoder(pretrained())
    with pytest.raises(ValueError, match="`vocab_size` must match.*20"):
        models.text_classifier(VOCAB + 1, LENGTH, 2, encoder=encoder)
    with pytest.raises(ValueError, match="`sequence_length` must match"):
        models.text_classifier(VOCAB, LENGTH * 2, 2, encoder=encoder)
    with pytest.raises(ValueError, match="`encoder` must be a `models.Te"):
        models.text_classifier(VOCAB, LENGTH, 2, encoder="bert")
    with pytest.raises(ValueError, match="`model` must be a `models.MaskedLM`"):
        models.masked_lm_encoder(models.causal_lm(VOCAB, LENGTH, **SIZES))

"""DeBERTa's disentangled attention against transformers' own layer, and
Keras's layer harness."""

import keras
import numpy as np
import pytest
from keras.src.testing import TestCase

from keras_tfm.layers.disentangled_attention import (
    DisentangledSelfAttention,
    RelativePositionEmbedding,
    relative_positions,
)

torch = pytest.importorskip("torch")
deberta = pytest.importorskip(
    "transformers.models.deberta_v2.modeling_deberta_v2"
)
DebertaV2Config = pytest.importorskip("transformers").DebertaV2Config

WIDTH, HEADS, LENGTH = 48, 3, 12


def _reference(terms, buckets, max_positions, seed, share=True):
    """transformers' attention (with an output projection) and ours, with
    the same weights."""
    torch.manual_seed(seed)
    config = DebertaV2Config(
        hidden_size=WIDTH,
        num_attention_heads=HEADS,
        relative_attention=True,
        pos_att_type=terms,
        position_buckets=buckets or -1,
        max_relative_positions=max_positions,
        share_att_key=share,
        attention_probs_dropout_prob=0.0,
        hidden_dropout_prob=0.0,
    )
    reference = deberta.DisentangledSelfAttention(config).eval()
    output = torch.nn.Linear(WIDTH, WIDTH).eval()
    layer = DisentangledSelfAttention(
        HEADS,
        position_terms=terms,
        position_buckets=buckets,
        max_relative_positions=max_positions,
        share_position_projections=share,
    )
    layer.build((None, None, WIDTH))
    head_dim = WIDTH // HEADS
    pairs = [
        (layer.query_dense, reference.query_proj),
        (layer.key_dense, reference.key_proj),
        (layer.value_dense, reference.value_proj),
    ]
    if not share:
        pairs += [
            (
                layer.position_query_dense,
                getattr(reference, "pos_query_proj", None),
            ),
            (
                layer.position_key_dense,
                getattr(reference, "pos_key_proj", None),
            ),
        ]
    for ours, theirs in pairs:
        assert (ours is None) == (theirs is None)
        if ours is None:
            continue
        weight = theirs.weight.detach().numpy()
        ours.kernel.assign(weight.T.reshape(WIDTH, HEADS, head_dim))
        ours.bias.assign(theirs.bias.detach().numpy().reshape(HEADS, -1))
    weight = output.weight.detach().numpy()
    layer.output_dense.kernel.assign(weight.T.reshape(HEADS, head_dim, WIDTH))
    layer.output_dense.bias.assign(output.bias.detach().numpy())
    return config, reference, output, layer


@pytest.mark.parametrize(
    "terms, buckets, max_positions, share",
    [
        (["c2p", "p2c"], 8, 16, True),
        (["p2c"], None, 5, True),
        (["c2p"], 4, 32, True),
        (["c2p", "p2c"], 8, 16, False),
    ],
)
def test_matches_transformers(terms, buckets, max_positions, share):
    config, reference, output, layer = _reference(
        terms, buckets, max_positions, seed=len(terms) + (buckets or 0),
        share=share,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, LENGTH, WIDTH)).astype("float32")
    span = buckets or max_positions
    table = rng.normal(size=(2 * span, WIDTH)).astype("float32")
    padding = np.ones((2, LENGTH), bool)
    padding[1, 7:] = False

    hidden = torch.from_numpy(x)
    mask = torch.from_numpy(padding)
    mask = (mask[:, None, :, None] & mask[:, None, None, :]).int()
    positions = deberta.build_relative_position(
        hidden, hidden, bucket_size=buckets or -1, max_position=max_positions
    )
    with torch.no_grad():
        context, _ = reference(
            hidden, mask, relative_pos=positions,
            rel_embeddings=torch.from_numpy(table),
        )  # fmt: skip
        expected = output(context).numpy()

    result = layer(x, relative_embeddings=table, padding_mask=padding)
    outputs, scores = layer(
        x, relative_embeddings=table, padding_mask=padding,
        return_attention_scores=True,
    )  # fmt: skip
    for actual in (result, outputs):
        actual = keras.ops.convert_to_numpy(actual)
        np.testing.assert_allclose(actual[0], expected[0], atol=2e-5)
        np.testing.assert_allclose(actual[1, :7], expected[1, :7], atol=2e-5)
    assert tuple(scores.shape) == (2, HEADS, LENGTH, LENGTH)


def test_relative_positions_match_transformers():
    length = 70
    hidden = torch.zeros((1, length, 1))
    for buckets, max_positions in ((16, 64), (256, 512), (None, 20)):
        theirs = deberta.build_relative_position(
            hidden, hidden, bucket_size=buckets or -1,
            max_position=max_positions,
        )[0].numpy()  # fmt: skip
        span = buckets or max_positions
        expected = np.clip(theirs + span, 0, 2 * span - 1)
        ours = relative_positions(length, buckets, max_positions)
        ours = keras.ops.convert_to_numpy(ours)
        np.testing.assert_array_equal(ours, expected)


def test_refused_values():
    with pytest.raises(ValueError, match="position_terms"):
        DisentangledSelfAttention(2, position_terms=["p2p"])
    with pytest.raises(ValueError, match="position_terms"):
        DisentangledSelfAttention(2, position_terms="c2p|p2c")
    with pytest.raises(ValueError, match="position_buckets=0"):
        DisentangledSelfAttention(2, position_buckets=0)
    with pytest.raises(ValueError, match="max_relative_positions=5"):
        DisentangledSelfAttention(
            2, position_buckets=8, max_relative_positions=5
        )
    layer = DisentangledSelfAttention(2, position_buckets=4)
    x = np.zeros((1, 3, 8), "float32")
    with pytest.raises(ValueError, match="relative_embeddings"):
        layer(x)
    with pytest.raises(ValueError, match="relative_embeddings"):
        layer(x, relative_embeddings=np.zeros((6, 8), "float32"))
    with pytest.raises(ValueError, match="cache"):
        layer.call_with_cache(x, None, 0)


class HarnessTest(TestCase):
    def test_disentangled_self_attention(self):
        for share, weights in ((True, 8), (False, 12)):
            self.run_layer_test(
                DisentangledSelfAttention,
                init_kwargs={
                    "num_heads": 2,
                    "position_buckets": 4,
                    "max_relative_positions": 16,
                    "share_position_projections": share,
                },
                input_shape={
                    "x_shape": (2, 5, 8),
                    "relative_embeddings_shape": (8, 8),
                },
                expected_output_shape=(2, 5, 8),
                expected_num_trainable_weights=weights,
                run_training_check=False,
            )

    def test_relative_position_embedding(self):
        self.run_layer_test(
            RelativePositionEmbedding,
            init_kwargs={"length": 6, "norm": {"epsilon": 1e-7}},
            input_shape=(2, 5, 4),
            expected_output_shape=(6, 4),
            expected_num_trainable_weights=3,
        )

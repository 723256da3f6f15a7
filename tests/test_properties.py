"""Properties over random shapes, masks and dtype policies (hypothesis).

Each property draws its sizes, its masks and one of the float32,
mixed_float16 and mixed_bfloat16 policies. Few examples per property keep
the suite inside its time budget; the shapes are small for the same reason.
"""

import keras
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_tfm import DecoderBlock, EncoderBlock, MultiHeadSelfAttention
from tests.conftest import to_numpy

POLICIES = ["float32", "mixed_float16", "mixed_bfloat16"]
# Agreement expected between two runs of the same computation, per policy.
TOLERANCE = {"float32": 1e-5, "mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}
SETTINGS = settings(
    max_examples=5, deadline=None, derandomize=True, database=None
)


@st.composite
def problems(draw):
    """Policy, heads, inputs `(batch, length, width)` and a padding mask."""
    policy = draw(st.sampled_from(POLICIES))
    # Few distinct shapes: each new shape costs an eager compile on JAX.
    heads = draw(st.integers(1, 2))
    width = 4 * heads
    batch, length = draw(st.integers(1, 2)), draw(st.integers(3, 5))
    seed = draw(st.integers(0, 2**16))
    x = np.random.default_rng(seed).normal(size=(batch, length, width))
    lengths = [draw(st.integers(1, length)) for _ in range(batch)]
    padding = np.arange(length)[None, :] < np.array(lengths)[:, None]
    return policy, heads, x.astype("float32"), padding


def with_policy(policy, make_layer):
    keras.config.set_dtype_policy(policy)
    try:
        return make_layer()
    finally:
        keras.config.set_dtype_policy("float32")


def as_float(x):
    return to_numpy(x).astype("float32")


@SETTINGS
@given(problems(), st.data())
def test_a_causal_block_ignores_the_future(problem, data):
    policy, heads, x, _ = problem
    block = with_policy(
        policy, lambda: DecoderBlock(heads, 8, dropout=0, cross_attention=False)
    )
    cut = data.draw(st.integers(1, x.shape[1] - 1))
    changed = x.copy()
    changed[:, cut:] += 1.0
    np.testing.assert_allclose(
        as_float(block(x))[:, :cut],
        as_float(block(changed))[:, :cut],
        atol=TOLERANCE[policy],
    )


@SETTINGS
@given(problems())
def test_padding_does_not_change_real_tokens(problem):
    policy, heads, x, padding = problem
    block = with_policy(policy, lambda: EncoderBlock(heads, 8, dropout=0))
    changed = np.where(padding[..., None], x, x + 3.0)
    np.testing.assert_allclose(
        as_float(block(x, padding_mask=padding))[padding],
        as_float(block(changed, padding_mask=padding))[padding],
        atol=TOLERANCE[policy],
    )


@SETTINGS
@given(problems(), st.randoms())
def test_an_encoder_without_positions_is_permutation_equivariant(
    problem, random
):
    policy, heads, x, _ = problem
    block = with_policy(policy, lambda: EncoderBlock(heads, 8, dropout=0))
    order = list(range(x.shape[1]))
    random.shuffle(order)
    np.testing.assert_allclose(
        as_float(block(x[:, order])),
        as_float(block(x))[:, order],
        atol=3 * TOLERANCE[policy],
    )


@SETTINGS
@given(problems())
def test_attention_rows_sum_to_one_over_unmasked_keys(problem):
    policy, heads, x, padding = problem
    attention = with_policy(policy, lambda: MultiHeadSelfAttention(heads))
    _, scores = attention(x, padding_mask=padding, return_attention_scores=True)
    scores = as_float(scores)  # (batch, heads, query, key)
    np.testing.assert_allclose(
        scores.sum(-1), 1.0, atol=max(TOLERANCE[policy], 1e-5)
    )
    assert (scores * ~padding[:, None, None, :] == 0).all()


@SETTINGS
@given(problems(), st.data())
def test_any_mask_gives_finite_outputs(problem, data):
    policy, heads, x, _ = problem
    batch, length = x.shape[:2]
    # Any (query, key) pattern, including rows with no visible key.
    attention_mask = np.array(
        data.draw(
            st.lists(
                st.booleans(),
                min_size=batch * length * length,
                max_size=batch * length * length,
            )
        )
    ).reshape(batch, length, length)
    attention = with_policy(
        policy, lambda: MultiHeadSelfAttention(heads, causal=True)
    )
    outputs = as_float(attention(x, attention_mask=attention_mask))
    assert np.isfinite(outputs).all()

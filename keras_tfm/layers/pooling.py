"""Sequence pooling that Keras lacks: the first ("class") token, a chosen
token (the end of a text) and a learned query's attention (a MAP head)."""

import keras
from keras import ops

from keras_tfm.layers.cross_attention import MultiHeadCrossAttention
from keras_tfm.layers.feed_forward import PLAIN_ACTIVATIONS, FeedForward
from keras_tfm.layers.validation import (
    check_choice,
    check_non_negative_int,
    check_positive_int,
    check_rank,
    check_shape,
)


@keras.saving.register_keras_serializable(package="keras_tfm")
class FirstTokenPooling(keras.layers.Layer):
    """Returns the hidden state of the first position of each sequence.

    BERT-style classifiers put a class token first and classify from its
    final hidden state. For mean pooling over real tokens use
    `keras.layers.GlobalAveragePooling1D`, which honours the Keras mask.

    Args:
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: `(batch, seq, width)`.

    Returns:
        `(batch, width)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers import FirstTokenPooling

    pooled = FirstTokenPooling()(np.ones((2, 5, 8), "float32"))  # (2, 8)
    ```
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.built = True

    def call(self, x):
        check_rank("x", x.shape, 3, "(batch, seq, width)")
        return x[:, 0]

    def compute_mask(self, x, mask=None):
        return None

    def compute_output_shape(self, x_shape):
        return (x_shape[0], x_shape[2])


# Where `TokenPooling` reads each sequence.
TOKEN_POSITIONS = ("last", "token_id", "highest_id")


@keras.saving.register_keras_serializable(package="keras_tfm")
class TokenPooling(keras.layers.Layer):
    """Returns the hidden state of one chosen position of each sequence.

    Text towers that read their sequence at its end: SigLIP at the last
    position (padding included: it was trained on sequences padded to full
    length), CLIP at the end-of-text token, found in the token ids. A
    sequence without `token_id` is read at its first position, as
    `transformers` does.

    Args:
        position: `"last"` (the last position), `"token_id"` (the first
            position holding `token_id`) or `"highest_id"` (the first
            position of the sequence's highest id: CLIP's end-of-text token
            is its vocabulary's last).
        token_id: The id `"token_id"` looks for; None otherwise.
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: Hidden states `(batch, seq, width)`.
        tokens: The token ids `(batch, seq)` behind them; not needed for
            `"last"`.

    Returns:
        `(batch, width)`, with no mask.

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers.pooling import TokenPooling

    x = np.random.rand(2, 4, 8).astype("float32")
    tokens = np.array([[5, 9, 0, 0], [5, 6, 9, 0]])
    pooled = TokenPooling("token_id", token_id=9)(x, tokens)  # (2, 8)
    ```
    """

    def __init__(self, position="last", token_id=None, **kwargs):
        super().__init__(**kwargs)
        check_choice("position", position, TOKEN_POSITIONS)
        if (position == "token_id") != (token_id is not None):
            raise ValueError(
                "`token_id` must be an int with position='token_id' and None "
                f"otherwise. Received: position={position!r}, "
                f"token_id={token_id!r}"
            )
        if token_id is not None:
            check_non_negative_int("token_id", token_id)
        self.position = position
        self.token_id = token_id
        self.supports_masking = True
        self.built = True

    def call(self, x, tokens=None):
        check_rank("x", x.shape, 3, "(batch, seq, width)")
        if self.position == "last":
            return x[:, -1]
        if tokens is None:
            raise ValueError(
                f"TokenPooling(position={self.position!r}) reads the token "
                "ids: pass `tokens`."
            )
        check_shape("tokens", tokens.shape, x.shape[:2], "(batch, seq)")
        if self.position == "token_id":
            found = ops.cast(ops.equal(tokens, self.token_id), "int32")
            index = ops.argmax(found, axis=-1)  # the first, or 0 if none
        else:
            index = ops.argmax(tokens, axis=-1)
        index = ops.cast(index, "int32")[:, None, None]
        return ops.take_along_axis(x, index, axis=1)[:, 0]

    def compute_mask(self, x, tokens=None, mask=None):
        return None

    def compute_output_shape(self, x_shape, tokens_shape=None):
        return (x_shape[0], x_shape[2])

    def get_config(self):
        return {
            **super().get_config(),
            "position": self.position,
            "token_id": self.token_id,
        }


@keras.saving.register_keras_serializable(package="keras_tfm")
class AttentionPooling(keras.layers.Layer):
    """Multi-head attention pooling: a learned query attends over the
    sequence, then a pre-norm feed-forward with a residual.

    The "MAP" head of SigLIP's and ViT-22B's image towers: one learned
    `probe` vector (`(1, 1, width)`) is the query of a
    `MultiHeadCrossAttention` over the tokens, whose output `h` becomes
    `h + FeedForward(LayerNorm(h))`. Padding (a Keras mask on `x`, or
    `padding_mask`) is not attended to.

    Args:
        num_heads: Attention heads.
        hidden_dim: Hidden width of the feed-forward.
        activation: The feed-forward's activation (see `FeedForward`);
            SigLIP's is `"gelu_tanh"`.
        epsilon: Epsilon of the LayerNormalization.
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: `(batch, seq, width)`.
        padding_mask: Optional `(batch, seq)`, true for real positions;
            overrides the Keras mask of `x`.

    Returns:
        `(batch, width)`, with no mask.

    Attributes:
        probe: The learned query, `(1, 1, width)`.
        attention: The `MultiHeadCrossAttention` (`attention`).
        norm: The LayerNormalization (`norm`).
        feed_forward: The `FeedForward` (`feed_forward`).

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers.pooling import AttentionPooling

    x = np.random.rand(2, 9, 16).astype("float32")
    pooled = AttentionPooling(num_heads=4, hidden_dim=32)(x)  # (2, 16)
    ```

    References:
        - [Zhai et al., 2023](https://arxiv.org/abs/2303.15343) (SigLIP)
        - [Lee et al., 2019](https://arxiv.org/abs/1810.00825) (pooling by
          multi-head attention)
    """

    def __init__(
        self,
        num_heads,
        hidden_dim,
        activation="gelu_tanh",
        epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("hidden_dim", hidden_dim)
        check_choice("activation", activation, PLAIN_ACTIVATIONS)
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.activation = activation
        self.epsilon = epsilon
        self.supports_masking = True

    def build(self, x_shape):
        check_rank("x", x_shape, 3, "(batch, seq, width)")
        width = x_shape[-1]
        self.probe = self.add_weight(
            name="probe",
            shape=(1, 1, width),
            initializer="glorot_uniform",
        )
        query_shape = (x_shape[0], 1, width)
        self.attention = MultiHeadCrossAttention(
            self.num_heads, name="attention", dtype=self.dtype_policy
        )
        self.attention.build(query_shape, x_shape)
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.epsilon, name="norm", dtype=self.dtype_policy
        )
        self.norm.build(query_shape)
        self.feed_forward = FeedForward(
            self.hidden_dim,
            self.activation,
            name="feed_forward",
            dtype=self.dtype_policy,
        )
        self.feed_forward.build(query_shape)

    def call(self, x, padding_mask=None, mask=None):
        check_rank("x", x.shape, 3, "(batch, seq, width)")
        if padding_mask is None:
            padding_mask = mask
        probe = ops.cast(self.probe, x.dtype)
        query = ops.broadcast_to(probe, (ops.shape(x)[0], 1, x.shape[-1]))
        h = self.attention(query, x, context_padding_mask=padding_mask)
        h = h + self.feed_forward(self.norm(h))  # (batch, 1, width)
        return h[:, 0]

    def compute_mask(self, x, padding_mask=None, mask=None):
        return None

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return (x_shape[0], x_shape[2])

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "activation": self.activation,
            "epsilon": self.epsilon,
        }

"""The position-wise feed-forward network."""

import keras
from keras import ops

from keras_tfm.layers.validation import (
    check_choice,
    check_positive_int,
    check_rank,
    check_rate,
)

# `gelu` is exact, as in `torch.nn` and BERT; `gelu_tanh` is the tanh
# approximation of GPT-2 (Hugging Face's "gelu_new"); `quick_gelu` is the
# sigmoid approximation `x * sigmoid(1.702 x)` that OpenAI's CLIP trained
# with; `silu` is `x * sigmoid(x)` (Marian's "swish"). The gated ones put
# an activation on a gate projection: SiLU (LLaMA), exact GELU (ModernBERT)
# or tanh GELU (T5 v1.1, Gemma).
PLAIN_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "quick_gelu", "silu")
GATES = {"swiglu": "silu", "geglu": "gelu", "geglu_tanh": "gelu_tanh"}
GATED_ACTIVATIONS = tuple(GATES)
ACTIVATIONS = (*PLAIN_ACTIVATIONS, *GATED_ACTIVATIONS)


def activate(x, activation):
    """One of `PLAIN_ACTIVATIONS`, or a gate's (`GATES`), applied to `x`."""
    if activation == "relu":
        return ops.relu(x)
    if activation == "silu":
        return ops.silu(x)
    if activation == "quick_gelu":
        return x * ops.sigmoid(1.702 * x)
    return ops.gelu(x, approximate=activation == "gelu_tanh")


def gated(gate, hidden, activation):
    """One of `GATED_ACTIVATIONS`: the activated gate times `hidden`."""
    return activate(gate, GATES[activation]) * hidden


@keras.saving.register_keras_serializable(package="keras_tfm")
class FeedForward(keras.layers.Layer):
    """Position-wise feed-forward network: two projections around an activation.

    `relu` and `gelu` give the paper's `W2 act(W1 x + b1) + b2`. `swiglu`
    gives `W2 (silu(Wg x) * W1 x)` (Shazeer, 2020), as in LLaMA, and
    `geglu` the same with the exact GELU (ModernBERT) and `geglu_tanh` with
    the tanh GELU, as in T5 v1.1 and Gemma. The output has
    the width of the input.

    Args:
        hidden_dim: Width of the hidden layer.
        activation: `"relu"`, `"gelu"` (exact, as in `torch.nn` and BERT),
            `"gelu_tanh"` (the tanh approximation, as in GPT-2),
            `"quick_gelu"` (`x * sigmoid(1.702 x)`, as in CLIP), `"silu"`
            (Marian's "swish"), `"swiglu"`, `"geglu"` or `"geglu_tanh"`.
        dropout: Dropout rate on the output.
        use_bias: Whether the projections have biases (LLaMA's have none).
        **kwargs: Standard layer arguments.

    Call arguments:
        x: Input of shape `(batch, seq, width)`.
        training: Whether dropout is active.

    Returns:
        A tensor with the shape of `x`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import FeedForward

    x = np.random.rand(2, 5, 16).astype("float32")
    outputs = FeedForward(hidden_dim=64, activation="gelu")(x)  # (2, 5, 16)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Shazeer, 2020](https://arxiv.org/abs/2002.05202)
    """

    def __init__(
        self,
        hidden_dim,
        activation="relu",
        dropout=0.0,
        use_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("hidden_dim", hidden_dim)
        check_choice("activation", activation, ACTIVATIONS)
        check_rate("dropout", dropout)
        self.hidden_dim = hidden_dim
        self.activation = activation
        self.dropout = dropout
        self.use_bias = use_bias
        self.supports_masking = True

    def build(self, x_shape):
        check_rank("x", x_shape, 3, "(batch, seq, width)")
        self.hidden_dense = self._dense("hidden", self.hidden_dim, x_shape)
        if self.activation in GATED_ACTIVATIONS:
            self.gate_dense = self._dense("gate", self.hidden_dim, x_shape)
        hidden_shape = (*x_shape[:-1], self.hidden_dim)
        self.output_dense = self._dense("output", x_shape[-1], hidden_shape)
        self.output_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy
        )

    def _dense(self, name, units, input_shape):
        dense = keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            name=name,
            dtype=self.dtype_policy,
        )
        dense.build(input_shape)
        return dense

    def call(self, x, training=None):
        hidden = self.hidden_dense(x)
        if self.activation in GATES:
            hidden = gated(self.gate_dense(x), hidden, self.activation)
        else:
            hidden = activate(hidden, self.activation)
        outputs = self.output_dense(hidden)
        return self.output_dropout(outputs, training=training)

    def compute_output_shape(self, x_shape):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
        }

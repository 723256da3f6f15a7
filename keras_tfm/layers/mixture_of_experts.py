"""A mixture-of-experts feed-forward layer: each token goes to k of E FFNs.

The experts run on tokens grouped by expert, so the work grows with the
experts each token uses, not with the experts defined. Each of the
`tokens * k` copies of a token gets a row in a buffer sorted by expert, where
every expert's rows are padded to a whole number of fixed-size blocks. Each
block belongs to one expert, so one batched matmul over the blocks, with
every block's expert kernel gathered, runs every expert on its own tokens.
The buffer's size depends only on the number of tokens, never on the
routing, so shapes are static for XLA and `torch.export`; no token is ever
dropped, in training or inference.
"""

import keras
from keras import ops

from keras_tfm.layers.feed_forward import (
    ACTIVATIONS,
    GATED_ACTIVATIONS,
    FeedForward,
    activate,
    gated,
)
from keras_tfm.layers.validation import (
    check_choice,
    check_positive_int,
    check_rank,
    check_rate,
)

ROUTER_SOFTMAX = ("before_top_k", "after_top_k")
# Rows per block when the number of tokens is only known at run time
# (TensorFlow's unknown batch size).
DEFAULT_BLOCK_SIZE = 16
MAX_BLOCK_SIZE = 128


def block_size(num_copies, num_experts):
    """Rows per expert block for `num_copies` routed token copies.

    Padding adds up to `block - 1` rows per expert (half that on average);
    each block gathers a copy of its expert's kernels. On CPU the gathers
    cost more than the padding (`benchmarks/moe.py`), so a block holds about
    an expert's average share of the copies. One row per block (a cached
    decode step) gathers just the experts each token uses.
    """
    if not isinstance(num_copies, int):
        return DEFAULT_BLOCK_SIZE
    target = min(num_copies // num_experts, MAX_BLOCK_SIZE)
    size = 1
    while size * 2 <= target:
        size *= 2
    return size


def load_balancing_loss(router_logits, expert_ids, num_experts, mask=None):
    """The Switch Transformer's load-balancing loss, as in `transformers`.

    `num_experts * sum_e f_e * P_e`, where `f_e` is the share of tokens
    routed to expert `e` (counted once per top-k slot) and `P_e` the mean
    router probability of `e`: `load_balancing_loss_func` for one layer.

    Args:
        router_logits: `(tokens, num_experts)` router logits.
        expert_ids: `(tokens, k)` experts each token went to.
        num_experts: Number of experts.
        mask: Optional `(tokens,)` mask; tokens where it is 0 do not count.
    """
    probabilities = ops.softmax(ops.cast(router_logits, "float32"), axis=-1)
    chosen = ops.sum(ops.one_hot(expert_ids, num_experts), axis=1)
    if mask is None:
        mask = ops.ones_like(probabilities[:, :1])
    else:
        mask = ops.expand_dims(ops.cast(mask, "float32"), -1)
    count = ops.maximum(ops.sum(mask), 1.0)
    share = ops.sum(chosen * mask, axis=0) / count  # (num_experts,)
    probability = ops.sum(probabilities * mask, axis=0) / count
    return num_experts * ops.sum(share * probability)


@keras.saving.register_keras_serializable(package="keras_tfm")
class MixtureOfExperts(keras.layers.Layer):
    """Sparse feed-forward layer: a router sends each token to k experts.

    A linear router scores the `num_experts` expert FFNs for each token; the
    token goes to the `experts_per_token` best, and the output is the sum of
    their outputs weighted by the router's probabilities, as in Mixtral and
    Qwen-MoE. Each expert is a `FeedForward` of width `hidden_dim`. The
    experts run on tokens grouped by expert (see the module docstring), so
    the cost grows with `experts_per_token`, not `num_experts`, and no token
    is dropped. In training, the load-balancing loss is added with
    `add_loss`, so `model.fit` optimises it. Keras masks pass through; masked
    tokens are left out of the load-balancing loss.

    Weights: `router/kernel` `(width, num_experts)`; `up_kernel` and (gated
    activations) `gate_kernel` `(num_experts, width, hidden_dim)`;
    `down_kernel` `(num_experts, hidden_dim, width)`; with `use_bias`,
    `up_bias`, `gate_bias` and `down_bias`; with a shared expert,
    `shared_expert/...` and `shared_expert_gate/kernel`.

    Args:
        hidden_dim: Width of each expert's hidden layer.
        num_experts: Number of experts.
        experts_per_token: Experts each token goes to (the top-k).
        activation: As `FeedForward`'s; `"swiglu"` in Mixtral and Qwen.
        dropout: Dropout rate on the output.
        use_bias: Whether the expert projections have biases.
        router_softmax: `"before_top_k"`: the top-k of the softmax over all
            experts (Mixtral, Qwen); `"after_top_k"`: a softmax over the
            top-k logits.
        normalize_top_k: Whether the top-k weights are divided by their sum
            (always in Mixtral; Qwen's `norm_topk_prob`).
        shared_expert_dim: `None`, or the hidden width of a shared expert
            that every token goes to, scaled by a sigmoid gate (Qwen2-MoE).
        router_jitter: Multiplies the router's input by uniform noise in
            `[1 - jitter, 1 + jitter]` in training (Switch Transformer);
            0 turns it off.
        aux_loss_coefficient: Weight of the load-balancing loss (as
            `transformers`' `router_aux_loss_coef`); 0 turns it off.
        **kwargs: Standard layer arguments.

    Call arguments:
        x: Input of shape `(batch, seq, width)`.
        training: Whether dropout, jitter and the auxiliary loss are active.
        mask: Optional Keras mask `(batch, seq)`.

    Returns:
        A tensor with the shape of `x`.

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers.mixture_of_experts import MixtureOfExperts

    x = np.random.rand(2, 5, 16).astype("float32")
    layer = MixtureOfExperts(hidden_dim=32, num_experts=4, experts_per_token=2)
    outputs = layer(x)  # (2, 5, 16)
    expert_ids, weights = layer.route(x)  # (2, 5, 2) each
    ```

    References:
        - [Shazeer et al., 2017](https://arxiv.org/abs/1701.06538)
        - [Fedus et al., 2021 (Switch)](https://arxiv.org/abs/2101.03961)
        - [Jiang et al., 2024 (Mixtral)](https://arxiv.org/abs/2401.04088)
    """

    def __init__(
        self,
        hidden_dim,
        num_experts=8,
        experts_per_token=2,
        activation="swiglu",
        dropout=0.0,
        use_bias=False,
        router_softmax="before_top_k",
        normalize_top_k=True,
        shared_expert_dim=None,
        router_jitter=0.0,
        aux_loss_coefficient=0.001,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("num_experts", num_experts)
        check_positive_int("experts_per_token", experts_per_token)
        if experts_per_token > num_experts:
            raise ValueError(
                "`experts_per_token` must be at most `num_experts` "
                f"({num_experts}). Received: "
                f"experts_per_token={experts_per_token!r}"
            )
        check_choice("activation", activation, ACTIVATIONS)
        check_rate("dropout", dropout)
        check_choice("router_softmax", router_softmax, ROUTER_SOFTMAX)
        check_choice("normalize_top_k", normalize_top_k, (True, False))
        if shared_expert_dim is not None:
            check_positive_int("shared_expert_dim", shared_expert_dim)
        check_rate("router_jitter", router_jitter)
        _check_non_negative("aux_loss_coefficient", aux_loss_coefficient)
        self.hidden_dim = hidden_dim
        self.num_experts = num_experts
        self.experts_per_token = experts_per_token
        self.activation = activation
        self.dropout = dropout
        self.use_bias = use_bias
        self.router_softmax = router_softmax
        self.normalize_top_k = normalize_top_k
        self.shared_expert_dim = shared_expert_dim
        self.router_jitter = router_jitter
        self.aux_loss_coefficient = aux_loss_coefficient
        self.supports_masking = True
        self.seed_generator = keras.random.SeedGenerator(0)

    def build(self, x_shape):
        check_rank("x", x_shape, 3, "(batch, seq, width)")
        width = x_shape[-1]
        self.router = keras.layers.Dense(
            self.num_experts,
            use_bias=False,
            name="router",
            dtype=self.dtype_policy,
        )
        self.router.build(x_shape)
        hidden = (self.num_experts, width, self.hidden_dim)
        if self.activation in GATED_ACTIVATIONS:
            self.gate_kernel = self._expert_weight("gate_kernel", hidden)
        self.up_kernel = self._expert_weight("up_kernel", hidden)
        self.down_kernel = self._expert_weight(
            "down_kernel", (self.num_experts, self.hidden_dim, width)
        )
        if self.use_bias:
            if self.activation in GATED_ACTIVATIONS:
                self.gate_bias = self._expert_weight("gate_bias", hidden[::2])
            self.up_bias = self._expert_weight("up_bias", hidden[::2])
            self.down_bias = self._expert_weight("down_bias", hidden[:2])
        if self.shared_expert_dim is not None:
            self._build_shared_expert(x_shape)
        self.output_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy
        )

    def _expert_weight(self, name, shape):
        # Kernels: Glorot per expert (Keras counts the leading expert axis
        # into both fans, which `scale=num_experts` undoes). Biases: zeros.
        initializer = keras.initializers.VarianceScaling(
            scale=self.num_experts, mode="fan_avg", distribution="uniform"
        )
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer if len(shape) == 3 else "zeros",
        )

    def _build_shared_expert(self, x_shape):
        self.shared_expert = FeedForward(
            self.shared_expert_dim,
            activation=self.activation,
            use_bias=self.use_bias,
            name="shared_expert",
            dtype=self.dtype_policy,
        )
        self.shared_expert.build(x_shape)
        self.shared_expert_gate = keras.layers.Dense(
            1,
            use_bias=False,
            name="shared_expert_gate",
            dtype=self.dtype_policy,
        )
        self.shared_expert_gate.build(x_shape)

    def call(self, x, training=None, mask=None):
        tokens = ops.reshape(x, (-1, ops.shape(x)[-1]))  # (tokens, width)
        router_logits = self._router_logits(tokens, training)
        expert_ids, weights = self._top_k(router_logits)  # (tokens, k)
        outputs = self._run_experts(tokens, expert_ids, weights)
        outputs = ops.reshape(outputs, ops.shape(x))
        if self.shared_expert_dim is not None:
            gate = ops.sigmoid(self.shared_expert_gate(x))
            outputs = outputs + gate * self.shared_expert(x)
        if training and self.aux_loss_coefficient:
            token_mask = None if mask is None else ops.reshape(mask, (-1,))
            loss = load_balancing_loss(
                router_logits, expert_ids, self.num_experts, token_mask
            )
            self.add_loss(self.aux_loss_coefficient * loss)
        return self.output_dropout(outputs, training=training)

    def route(self, x):
        """The experts each token of `x` goes to and their weights.

        Returns:
            `(expert_ids, weights)`, each of shape `(batch, seq, k)`, best
            expert first.
        """
        x = ops.convert_to_tensor(x, self.compute_dtype)
        if not self.built:
            self.build(x.shape)
        tokens = ops.reshape(x, (-1, ops.shape(x)[-1]))
        expert_ids, weights = self._top_k(self._router_logits(tokens, False))
        shape = (*ops.shape(x)[:-1], self.experts_per_token)
        return ops.reshape(expert_ids, shape), ops.reshape(weights, shape)

    def _router_logits(self, tokens, training):
        if training and self.router_jitter:
            tokens = tokens * keras.random.uniform(
                ops.shape(tokens),
                1.0 - self.router_jitter,
                1.0 + self.router_jitter,
                dtype=tokens.dtype,
                seed=self.seed_generator,
            )
        return ops.cast(self.router(tokens), "float32")

    def _top_k(self, router_logits):
        """`(expert_ids, weights)` of the top-k experts, in float32."""
        k = self.experts_per_token
        if self.router_softmax == "before_top_k":
            weights, expert_ids = ops.top_k(ops.softmax(router_logits), k)
        else:
            top_logits, expert_ids = ops.top_k(router_logits, k)
            weights = ops.softmax(top_logits)
        if self.normalize_top_k:
            weights = weights / ops.sum(weights, axis=-1, keepdims=True)
        return expert_ids, weights

    def _run_experts(self, tokens, expert_ids, weights):
        """The weighted sum of each token's experts, on grouped tokens."""
        num_tokens, width = ops.shape(tokens)
        k = self.experts_per_token
        rows_per_block = block_size(num_tokens * k, self.num_experts)
        slots, block_experts = expert_slots(
            ops.reshape(expert_ids, (-1,)), self.num_experts, rows_per_block
        )
        num_blocks = ops.shape(block_experts)[0]
        # Empty slots read row 0, a zero row; token t is row t + 1.
        source = ops.scatter_update(
            ops.zeros((num_blocks * rows_per_block,), "int32"),
            ops.expand_dims(slots, -1),
            ops.arange(num_tokens * k, dtype="int32") // k + 1,
        )
        padded = ops.concatenate([ops.zeros_like(tokens[:1]), tokens])
        rows = ops.reshape(
            ops.take(padded, source, axis=0),
            (num_blocks, rows_per_block, width),
        )
        outputs = ops.reshape(self._experts(rows, block_experts), (-1, width))
        copies = ops.take(outputs, slots, axis=0)  # (tokens * k, width)
        copies = ops.reshape(copies, (num_tokens, k, width))
        weights = ops.cast(weights, copies.dtype)
        return ops.einsum("tkw,tk->tw", copies, weights)

    def _experts(self, rows, block_experts):
        """Each block of `rows` through its expert's FFN."""
        hidden = self._project(rows, "up", block_experts)
        if self.activation in GATED_ACTIVATIONS:
            gate = self._project(rows, "gate", block_experts)
            hidden = gated(gate, hidden, self.activation)
        else:
            hidden = activate(hidden, self.activation)
        return self._project(hidden, "down", block_experts)

    def _project(self, rows, name, block_experts):
        kernel = ops.take(getattr(self, f"{name}_kernel"), block_experts, 0)
        outputs = ops.einsum("bri,bio->bro", rows, kernel)
        if self.use_bias:
            bias = ops.take(getattr(self, f"{name}_bias"), block_experts, 0)
            outputs = outputs + ops.expand_dims(bias, 1)
        return outputs

    def compute_output_shape(self, x_shape):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "num_experts": self.num_experts,
            "experts_per_token": self.experts_per_token,
            "activation": self.activation,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "router_softmax": self.router_softmax,
            "normalize_top_k": self.normalize_top_k,
            "shared_expert_dim": self.shared_expert_dim,
            "router_jitter": self.router_jitter,
            "aux_loss_coefficient": self.aux_loss_coefficient,
        }


def expert_slots(expert_ids, num_experts, rows_per_block):
    """Where each routed copy goes in the expert-sorted, block-padded buffer.

    Args:
        expert_ids: `(copies,)` expert of each routed token copy.
        num_experts: Number of experts.
        rows_per_block: Rows per block; each expert's rows are padded to a
            multiple of it.

    Returns:
        `(slots, block_experts)`: `(copies,)` row of each copy, and
        `(blocks,)` the expert of each block. The number of blocks,
        `(copies + num_experts * (rows_per_block - 1)) // rows_per_block`,
        fits any routing.
    """
    chosen = ops.one_hot(expert_ids, num_experts, dtype="int32")
    counts = ops.sum(chosen, axis=0)  # (num_experts,)
    padded = (counts + rows_per_block - 1) // rows_per_block * rows_per_block
    ends = ops.cumsum(padded)
    # A copy's rank among the copies routed to the same expert.
    rank = ops.sum(ops.cumsum(chosen, axis=0) * chosen, axis=1) - 1
    slots = ops.take(ends - padded, expert_ids) + rank
    num_copies = ops.shape(expert_ids)[0]
    num_blocks = (num_copies + num_experts * (rows_per_block - 1)) // (
        rows_per_block
    )
    block_starts = ops.arange(num_blocks, dtype="int32") * rows_per_block
    # Experts whose rows end at or before a block's start come before it;
    # blocks past the last expert's rows hold only empty slots.
    before = ops.cast(ends[None, :] <= block_starts[:, None], "int32")
    block_experts = ops.minimum(ops.sum(before, axis=1), num_experts - 1)
    return slots, block_experts


def _check_non_negative(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value < 0
    ):
        raise ValueError(
            f"`{name}` must be a non-negative number. Received: "
            f"{name}={value!r}"
        )

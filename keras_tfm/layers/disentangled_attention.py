"""DeBERTa's disentangled self-attention and its relative-position table."""

import math

import keras
from keras import ops

from keras_tfm.layers.attention import MultiHeadSelfAttention
from keras_tfm.layers.masks import get_keras_mask
from keras_tfm.layers.multi_head import AttentionResult
from keras_tfm.layers.normalization import norm_options, normalization
from keras_tfm.layers.validation import (
    check_choice,
    check_positive_int,
    check_rank,
    check_shape,
)

POSITION_TERMS = ("c2p", "p2c")


def relative_positions(length, position_buckets, max_relative_positions):
    """Rows of the relative-position table for each (query, key) pair.

    The distance `i - j` from query `i` to key `j`, in DeBERTa's log
    buckets when `position_buckets` is given (exact up to half of them,
    then logarithmic up to `max_relative_positions`), shifted by the
    table's half size and clipped to its `2 * span` rows, where `span` is
    `position_buckets` or, without buckets, `max_relative_positions`.

    Args:
        length: The sequence length (an int or a scalar tensor).
        position_buckets: None, or the number of buckets on each side.
        max_relative_positions: The largest distance told apart.

    Returns:
        `(length, length)` int32 row indices.
    """
    positions = ops.arange(length)
    relative = positions[:, None] - positions[None, :]
    span = max_relative_positions
    if position_buckets is not None:
        span = position_buckets
        relative = _log_buckets(
            relative, position_buckets, max_relative_positions
        )
    return ops.clip(relative + span, 0, 2 * span - 1)


def _log_buckets(relative, position_buckets, max_relative_positions):
    """DeBERTa's `make_log_bucket_position`, in float32 as it computes."""
    middle = position_buckets // 2
    sign = ops.sign(relative)
    near = ops.logical_and(relative < middle, relative > -middle)
    distance = ops.where(near, middle - 1, ops.abs(relative))
    distance = ops.cast(distance, "float32")
    # float32 logarithms on both sides, as PyTorch's: a bucket is a ceil.
    largest = ops.convert_to_tensor(
        (max_relative_positions - 1) / middle, "float32"
    )
    ratio = ops.log(distance / middle) / ops.log(largest)
    far = ops.cast(ops.ceil(ratio * (middle - 1)), "int32") + middle
    return ops.where(distance <= middle, relative, far * sign)


def table_length(options):
    """Rows of the relative-position table of a disentangled attention,
    from its options (`position_buckets`, `max_relative_positions`)."""
    span = options["position_buckets"] or options["max_relative_positions"]
    return 2 * span


@keras.saving.register_keras_serializable(package="keras_tfm")
class DisentangledSelfAttention(MultiHeadSelfAttention):
    """DeBERTa's self-attention: content and relative positions apart.

    The logits of query `i` and key `j` add to the content term
    `q_i . k_j` a content-to-position term `q_i . K(r(i, j))` (`"c2p"`)
    and a position-to-content term `k_j . Q(r(i, j))` (`"p2c"`), where
    `r(i, j)` is the row of the relative distance `i - j` in a table of
    relative-position embeddings (see `relative_positions`), and `K`, `Q`
    are the layer's key and query projections of that table (DeBERTa's
    `share_att_key`) or projections of their own. Every term is scaled by
    `1 / sqrt(head_dim * (1 + number of position terms))` unless
    `attention_scale` is given. The table is an input of each call: one
    table (`RelativePositionEmbedding`) serves every block of an encoder.

    A layer of its own rather than an option of `MultiHeadSelfAttention`:
    its logits need that call input and the projections of the table, which
    no option of the plain layer expresses. It takes every
    `MultiHeadSelfAttention` argument, masks and attention scores as that
    layer does, and is what blocks and models build for
    `attention={"type": "disentangled", ...}`. It has no key/value cache:
    DeBERTa is an encoder.

    Args:
        position_terms: The relative-position terms among `"c2p"` and
            `"p2c"` (DeBERTa's `pos_att_type`).
        position_buckets: None, or the number of log buckets of relative
            distance on each side (DeBERTa-v3: 256), at least 2; the table
            then has `2 * position_buckets` rows.
        max_relative_positions: The largest relative distance told apart,
            more than `position_buckets // 2 + 1`: the table has
            `2 * max_relative_positions` rows without buckets.
        share_position_projections: Whether the position terms project
            the table with the layer's query and key projections (DeBERTa's
            `share_att_key`, the default) or with projections of their own,
            with biases: `position_query` for `"p2c"`, `position_key` for
            `"c2p"`.
        **kwargs: `MultiHeadSelfAttention` arguments (`num_heads`,
            `key_dim`, `use_bias`, `attention_scale`, ...) and standard
            layer arguments.

    Call arguments:
        x: Input of shape `(batch, seq, width)`.
        relative_embeddings: The relative-position table,
            `(2 * span, width)`, from `RelativePositionEmbedding`.
        padding_mask: Optional `(batch, seq)` mask, true or 1 for real
            tokens. Overrides the Keras mask of `x`.
        attention_mask: Optional `(batch, seq, seq)` mask.
        attention_bias: Optional float tensor added to the logits.
        return_attention_scores: Whether to also return the attention
            weights.
        training: Whether dropout is active.

    Returns:
        `(batch, seq, width)`; with `return_attention_scores=True`, an
        `AttentionResult(outputs, scores)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers.disentangled_attention import (
        DisentangledSelfAttention,
        RelativePositionEmbedding,
    )

    x = np.random.rand(2, 6, 16).astype("float32")
    table = RelativePositionEmbedding(8, norm={"epsilon": 1e-7})(x)
    attention = DisentangledSelfAttention(
        num_heads=4, position_buckets=4, max_relative_positions=16
    )
    outputs = attention(x, relative_embeddings=table)  # (2, 6, 16)
    ```

    References:
        - [He et al., 2021 (DeBERTa)](https://arxiv.org/abs/2006.03654)
        - [He et al., 2023 (DeBERTa-v3)](https://arxiv.org/abs/2111.09543)
    """

    def __init__(
        self,
        num_heads,
        position_terms=POSITION_TERMS,
        position_buckets=256,
        max_relative_positions=512,
        share_position_projections=True,
        **kwargs,
    ):
        super().__init__(num_heads, **kwargs)
        if isinstance(position_terms, str) or not isinstance(
            position_terms, list | tuple
        ):
            raise ValueError(
                "`position_terms` must be a list of terms among "
                f"{list(POSITION_TERMS)}. Received: "
                f"position_terms={position_terms!r}"
            )
        for term in position_terms:
            check_choice("position_terms", term, POSITION_TERMS)
        check_positive_int("max_relative_positions", max_relative_positions)
        if position_buckets is not None:
            check_positive_int("position_buckets", position_buckets)
            # The log buckets start at half of them and end at the largest
            # distance, which must lie beyond.
            if position_buckets < 2 or (
                max_relative_positions <= position_buckets // 2 + 1
            ):
                raise ValueError(
                    "`position_buckets` must be at least 2 and "
                    "`max_relative_positions` more than "
                    "`position_buckets // 2 + 1`. Received: "
                    f"position_buckets={position_buckets}, "
                    f"max_relative_positions={max_relative_positions}"
                )
        self.position_terms = list(position_terms)
        self.position_buckets = position_buckets
        self.max_relative_positions = max_relative_positions
        self.share_position_projections = share_position_projections

    @property
    def table_length(self):
        """Rows of the relative-position table the layer takes."""
        return table_length(self.get_config())

    def build(self, x_shape, relative_embeddings_shape=None):
        super().build(x_shape)
        self.position_query_dense = self.position_key_dense = None
        if self.share_position_projections:
            return
        _, heads, head_dim = self.query_dense.kernel.shape
        for term, name in (("p2c", "position_query"), ("c2p", "position_key")):
            projection = None
            if term in self.position_terms:
                projection = keras.layers.EinsumDense(
                    "btd,dnh->btnh",
                    output_shape=(None, heads, head_dim),
                    bias_axes="nh",
                    name=name,
                    dtype=self.dtype_policy,
                )
                projection.build((None, None, x_shape[-1]))
            setattr(self, f"{name}_dense", projection)

    def call(
        self,
        x,
        relative_embeddings=None,
        padding_mask=None,
        attention_mask=None,
        attention_bias=None,
        return_attention_scores=False,
        training=None,
    ):
        check_rank("x", x.shape, 3, "(batch, seq, width)")
        if relative_embeddings is None:
            raise ValueError(
                f"`{self.name}` needs `relative_embeddings`, the "
                "`(2 * span, width)` table of a `RelativePositionEmbedding`."
            )
        check_shape(
            "relative_embeddings",
            relative_embeddings.shape,
            (self.table_length, x.shape[-1]),
            "(2 * span, width)",
        )
        if padding_mask is None:
            padding_mask = get_keras_mask(x)
        query, key, value = self._positioned_projections(x, 0)
        head_dim = query.shape[-1]
        scale = self.attention_scale
        if scale is None:
            scale = 1.0 / math.sqrt(head_dim * (1 + len(self.position_terms)))
        bias = self._position_logits(query, key, relative_embeddings) * scale
        if attention_bias is not None:
            bias = bias + ops.cast(attention_bias, bias.dtype)
        if self.attention_scale is None:
            # The kernel scales by `1 / sqrt(head_dim)`; this makes it
            # `scale`.
            query = query * ops.cast(scale * math.sqrt(head_dim), query.dtype)
        outputs, scores = self._attend_keys(
            query, key, value, padding_mask, attention_mask, bias,
            start_index=None, explicit=return_attention_scores,
            training=training,
        )  # fmt: skip
        if return_attention_scores:
            return AttentionResult(outputs, scores)
        return outputs

    def _position_logits(self, query, key, relative_embeddings):
        """The unscaled position terms, `(batch, heads, seq, seq)`."""
        table = ops.cast(relative_embeddings, self.compute_dtype)[None]
        rows = relative_positions(
            ops.shape(query)[1],
            self.position_buckets,
            self.max_relative_positions,
        )
        logits = 0.0
        if "c2p" in self.position_terms:
            projection = self.position_key_dense or self.key_dense
            position_keys = projection(table)[0]  # (2 span, heads, head_dim)
            c2p = ops.einsum("bqnh,rnh->bnqr", query, position_keys)
            logits = logits + _gathered(c2p, rows)
        if "p2c" in self.position_terms:
            projection = self.position_query_dense or self.query_dense
            position_queries = projection(table)[0]
            p2c = ops.einsum("bknh,rnh->bnkr", key, position_queries)
            # Key `j` and query `i` read row r(i, j) of the key's terms.
            logits = logits + ops.swapaxes(
                _gathered(p2c, ops.transpose(rows)), -1, -2
            )
        return ops.cast(logits, "float32")

    def call_with_cache(self, *args, **kwargs):
        raise ValueError(
            f"`{self.name}` is DeBERTa's encoder attention: it has no "
            "key/value cache for decoding."
        )

    def get_config(self):
        return {
            **super().get_config(),
            "position_terms": self.position_terms,
            "position_buckets": self.position_buckets,
            "max_relative_positions": self.max_relative_positions,
            "share_position_projections": self.share_position_projections,
        }


def _gathered(logits, rows):
    """`logits[b, n, i, rows[i, j]]`: `(batch, heads, seq, seq)`."""
    batch, heads = ops.shape(logits)[0], ops.shape(logits)[1]
    length = ops.shape(rows)[0]
    rows = ops.broadcast_to(rows[None, None], (batch, heads, length, length))
    return ops.take_along_axis(logits, rows, axis=-1)


@keras.saving.register_keras_serializable(package="keras_tfm")
class RelativePositionEmbedding(keras.layers.Layer):
    """The relative-position table that every disentangled attention layer
    of an encoder shares (DeBERTa's `rel_embeddings`).

    One learned embedding per relative-distance row, optionally normalised
    (DeBERTa-v3's `norm_rel_ebd="layer_norm"`). The width is read from the
    input, which is otherwise unused: the table is the same for every
    sequence.

    Args:
        length: Rows of the table, `2 * span` of the attention layers (see
            `table_length`).
        norm: None, or norm options (`keras_tfm.layers.normalization`) of a
            normalization of the table (`norm`).
        **kwargs: Standard layer arguments.

    Call arguments:
        x: The encoder's hidden states `(batch, seq, width)`.

    Returns:
        The table, `(length, width)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers.disentangled_attention import (
        RelativePositionEmbedding,
    )

    x = np.zeros((2, 5, 16), "float32")
    table = RelativePositionEmbedding(8, norm={"type": "layer"})(x)  # (8, 16)
    ```
    """

    def __init__(self, length, norm=None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("length", length)
        self.length = length
        self.norm = None if norm is None else norm_options(norm)
        # The table is the same for every sequence: it has no mask.
        self.supports_masking = True

    def build(self, x_shape):
        check_rank("x", x_shape, 3, "(batch, seq, width)")
        width = x_shape[-1]
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.length, width),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.norm_layer = None
        if self.norm is not None:
            self.norm_layer = normalization(
                self.norm, "norm", dtype=self.dtype_policy
            )
            self.norm_layer.build((self.length, width))

    def call(self, x):
        table = ops.cast(self.embeddings, self.compute_dtype)
        if self.norm_layer is not None:
            table = self.norm_layer(table)
        return table

    def compute_mask(self, x, mask=None):
        return None

    def compute_output_shape(self, x_shape):
        return (self.length, x_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "length": self.length,
            "norm": self.norm,
        }

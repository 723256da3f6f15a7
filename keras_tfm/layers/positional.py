"""Position information: sinusoidal, learned and relative (rotary
positions are in `keras_tfm.layers.rotary`)."""

import math

import keras
import numpy as np
from keras import ops

from keras_tfm.layers.validation import (
    check_choice,
    check_non_negative_int,
    check_positive_int,
    check_rank,
    check_shape,
    eager_values,
)


def sinusoidal_signal(length, dim, max_wavelength=10000, start_index=0):
    """The paper's position signal, shape `(length, dim)`, in float32.

    `PE[pos, 2i] = sin(pos / max_wavelength ** (2i / dim))` and
    `PE[pos, 2i + 1] = cos(pos / max_wavelength ** (2i / dim))`
    (Vaswani et al., 2017, section 3.5).
    """
    positions = ops.cast(ops.arange(length) + start_index, "float32")
    channels = ops.arange(dim)
    exponents = ops.cast(2 * (channels // 2), "float32") / dim
    inverse_wavelengths = ops.power(float(max_wavelength), -exponents)
    angles = positions[:, None] * inverse_wavelengths[None, :]
    return ops.where(channels % 2 == 0, ops.sin(angles), ops.cos(angles))


# How a fixed sinusoid orders its channels (see `sinusoid`).
SINUSOIDS = ("interleaved", "halves", "tensor2tensor")


def sinusoid(
    length, dim, layout="interleaved", start_index=0, max_wavelength=10000
):
    """A fixed position signal `(length, dim)` in float32, in `layout`:

    - `"interleaved"`: the paper's (`sinusoidal_signal`);
    - `"halves"`: the paper's channels with the sines first (Marian's);
    - `"tensor2tensor"`: tensor2tensor's (fairseq's, Whisper's):
      `dim // 2` wavelengths from 1 to `max_wavelength` in geometric
      steps, the sines then the cosines, and a zero channel if `dim` is
      odd.
    """
    if layout == "interleaved":
        return sinusoidal_signal(length, dim, max_wavelength, start_index)
    if layout == "halves":
        signal = sinusoidal_signal(length, dim, max_wavelength, start_index)
        order = np.concatenate([np.arange(0, dim, 2), np.arange(1, dim, 2)])
        return ops.take(signal, order, axis=1)
    half = dim // 2
    inverse = ops.exp(
        ops.arange(half, dtype="float32")
        * (-math.log(max_wavelength) / (half - 1))
    )
    positions = ops.cast(ops.arange(length) + start_index, "float32")
    angles = positions[:, None] * inverse[None, :]
    parts = [ops.sin(angles), ops.cos(angles)]
    if dim % 2:
        parts.append(ops.zeros((length, 1), "float32"))
    return ops.concatenate(parts, axis=1)


@keras.saving.register_keras_serializable(package="keras_tfm")
class SinusoidalEncoding(keras.layers.Layer):
    """The fixed sine/cosine position signal of "Attention Is All You Need".

    Returns the signal for each position of the input, to be added to token
    embeddings. It has no weights, so it works for any sequence length.

    Args:
        max_wavelength: The longest wavelength of the sinusoids (the paper's
            10000).
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: A tensor of shape `(batch, seq, dim)`; only its shape is used.
        start_index: Position of the first element of `inputs`, for cached
            decoding. Defaults to 0.

    Returns:
        A tensor of shape `(batch, seq, dim)` in the layer's compute dtype.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_tfm import SinusoidalEncoding

    embeddings = keras.Input((None, 16))
    signal = SinusoidalEncoding()(embeddings)
    outputs = keras.layers.Add()([embeddings, signal])
    model = keras.Model(embeddings, outputs)
    model(np.zeros((2, 10, 16), "float32"))  # (2, 10, 16)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("max_wavelength", max_wavelength)
        self.max_wavelength = max_wavelength
        self.supports_masking = True
        self.built = True

    def call(self, inputs, start_index=0):
        check_rank("inputs", inputs.shape, 3, "(batch, seq, dim)")
        shape = ops.shape(inputs)
        signal = sinusoidal_signal(
            shape[1], inputs.shape[-1], self.max_wavelength, start_index
        )
        return ops.broadcast_to(ops.cast(signal, self.compute_dtype), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}


@keras.saving.register_keras_serializable(package="keras_tfm")
class PositionalEmbedding(keras.layers.Layer):
    """Token embedding plus position information.

    Looks up each token id, optionally scales it by `sqrt(embed_dim)` as in
    the paper, and adds either a learned position vector or the fixed
    sinusoidal signal (or nothing, for models with rotary attention).

    Called with `reverse=True` on hidden states, the layer projects them back
    onto the vocabulary with the transposed token table: the tied output
    projection of the paper (section 3.4). Using one layer for the input
    embedding and the output projection keeps the weights shared through
    `model.save()` and `load_model()`.

    With `mask_zero=True`, token id `padding_id` (0 by default) is padding:
    the layer emits a Keras mask that every keras_tfm block downstream uses
    as its padding mask.

    Args:
        vocab_size: Number of token ids.
        sequence_length: Longest sequence the layer accepts (the number of
            learned positions). Longer inputs raise a `ValueError`.
        embed_dim: Width of the embeddings.
        position: `"learned"`, `"sinusoidal"`, or `None` for no position
            signal (when attention applies rotary embeddings).
        mask_zero: Whether token id `padding_id` is padding and should be
            masked (Keras's name for the option).
        padding_id: The padding token id (RoBERTa's is 1).
        scale_embeddings: Whether to multiply token embeddings by
            `sqrt(embed_dim)` before adding positions (the paper does).
        max_wavelength: Longest wavelength of the sinusoidal signal.
        num_segments: Number of segment (token type) ids, as in BERT, whose
            learned embeddings are added too; `None` for none.
        position_offset: Rows of the learned position table before the
            first position's: the table has `sequence_length +
            position_offset` rows and position `i` reads row `i +
            position_offset` (RoBERTa's offset is `padding_id + 1`, BART's
            2).
        **kwargs: Standard layer arguments.

    Call arguments:
        inputs: Integer token ids of shape `(batch, seq)`; with
            `reverse=True`, hidden states of shape `(batch, seq, embed_dim)`.
            Ids outside `[0, vocab_size)` raise a `ValueError` in eager
            calls (and so in PyTorch's eager `fit`). Inside compiled
            functions (`fit` and `predict` on TensorFlow and JAX,
            `jax.jit`) values are unknown and not checked; what an
            out-of-range id then gives depends on the backend and device
            (an error, or a clipped or zero embedding), so check ids in the
            data pipeline.
        start_index: Position of the first token, for cached decoding.
        segment_ids: Int segment ids `(batch, seq)` in
            `[0, num_segments)`, with `num_segments`; segment 0 when not
            given.
        reverse: Whether to project hidden states to vocabulary logits.

    Returns:
        Embeddings of shape `(batch, seq, embed_dim)`; with `reverse=True`,
        logits of shape `(batch, seq, vocab_size)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import PositionalEmbedding

    tokens = np.array([[5, 8, 2, 0, 0]])
    embed = PositionalEmbedding(
        vocab_size=10, sequence_length=16, embed_dim=8, mask_zero=True
    )
    outputs = embed(tokens)  # (1, 5, 8)
    mask = embed.compute_mask(tokens)  # [[True, True, True, False, False]]
    logits = embed(outputs, reverse=True)  # (1, 5, 10), tied weights
    ```
    """

    def __init__(
        self,
        vocab_size,
        sequence_length,
        embed_dim,
        position="learned",
        mask_zero=False,
        scale_embeddings=False,
        max_wavelength=10000,
        num_segments=None,
        padding_id=0,
        position_offset=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("vocab_size", vocab_size)
        if num_segments is not None:
            check_positive_int("num_segments", num_segments)
        check_positive_int("sequence_length", sequence_length)
        check_positive_int("embed_dim", embed_dim)
        check_choice("position", position, ("learned", "sinusoidal", None))
        check_non_negative_int("position_offset", position_offset)
        self.vocab_size = vocab_size
        self.sequence_length = sequence_length
        self.embed_dim = embed_dim
        self.position = position
        self.mask_zero = mask_zero
        self.scale_embeddings = scale_embeddings
        self.max_wavelength = max_wavelength
        self.num_segments = num_segments
        self.padding_id = padding_id
        self.position_offset = position_offset
        self.supports_masking = mask_zero

    def build(self, inputs_shape):
        self.token_embedding = keras.layers.ReversibleEmbedding(
            self.vocab_size,
            self.embed_dim,
            # No mask_zero: `compute_mask` below makes this layer's mask. On
            # Keras 3.12 an inner mask_zero would put its own mask, made from
            # the hidden states, on the logits of `reverse=True`.
            name="token_embedding",
            dtype=self.dtype_policy,
        )
        # Takes masked hidden states with `reverse=True`, without a warning.
        self.token_embedding.supports_masking = True
        self.token_embedding.build(inputs_shape)
        if self.position == "learned":
            self.position_embeddings = self.add_weight(
                name="position_embeddings",
                shape=(
                    self.sequence_length + self.position_offset,
                    self.embed_dim,
                ),
                initializer="uniform",
            )
        if self.num_segments is not None:
            self.segment_embeddings = self.add_weight(
                name="segment_embeddings",
                shape=(self.num_segments, self.embed_dim),
                initializer="uniform",
            )

    def call(self, inputs, start_index=0, segment_ids=None, reverse=False):
        if reverse:
            check_rank("inputs", inputs.shape, 3, "(batch, seq, embed_dim)")
            return self.token_embedding(inputs, reverse=True)
        self._check_tokens(inputs, start_index)
        embeddings = self.token_embedding(inputs)
        if self.scale_embeddings:
            embeddings = embeddings * ops.cast(
                math.sqrt(self.embed_dim), embeddings.dtype
            )
        if self.num_segments is not None:
            embeddings = embeddings + self._segment_embeddings(
                inputs, segment_ids, embeddings.dtype
            )
        if self.position is None:
            return embeddings
        length = ops.shape(inputs)[1]
        if self.position == "learned":
            # A gather, not a slice: JAX's shape-polymorphic export (used by
            # `model.export`) cannot prove a slice of unknown length fits.
            positions = ops.take(
                self.position_embeddings,
                ops.arange(length) + start_index + self.position_offset,
                axis=0,
            )
        else:
            positions = sinusoidal_signal(
                length, self.embed_dim, self.max_wavelength, start_index
            )
        return embeddings + ops.cast(positions, embeddings.dtype)

    def _segment_embeddings(self, tokens, segment_ids, dtype):
        if segment_ids is None:
            table = self.segment_embeddings[:1][None]  # segment 0
        else:
            check_shape(
                "segment_ids", segment_ids.shape, tokens.shape, "(batch, seq)"
            )
            table = ops.take(self.segment_embeddings, segment_ids, axis=0)
        return ops.cast(table, dtype)

    def _check_tokens(self, tokens, start_index):
        check_rank("inputs", tokens.shape, 2, "(batch, seq) of token ids")
        if "int" not in keras.backend.standardize_dtype(tokens.dtype):
            raise ValueError(
                "PositionalEmbedding expects integer token ids. "
                f"Received: inputs.dtype={tokens.dtype}"
            )
        values = eager_values(tokens)
        if values is not None and values.size:
            low, high = values.min(), values.max()
            if low < 0 or high >= self.vocab_size:
                raise ValueError(
                    f"Token ids must be in [0, vocab_size={self.vocab_size}). "
                    f"Received ids from {low} to {high}."
                )
        length = tokens.shape[1]
        # Unknown while tracing, or symbolic in JAX's shape-polymorphic export.
        if isinstance(start_index, int) and isinstance(length, int):
            if start_index + length > self.sequence_length:
                raise ValueError(
                    f"The input has {start_index + length} positions "
                    f"(start_index={start_index}, inputs.shape[1]={length}), "
                    "more than this PositionalEmbedding's "
                    f"`sequence_length`={self.sequence_length}."
                )

    def compute_mask(self, inputs, mask=None):
        if len(inputs.shape) == 3:  # reverse: logits keep the hidden's mask
            return mask
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, self.padding_id)

    def compute_output_spec(
        self, inputs, start_index=0, segment_ids=None, reverse=False
    ):
        if reverse:
            shape = (*inputs.shape[:-1], self.vocab_size)
        else:
            shape = (*inputs.shape, self.embed_dim)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "sequence_length": self.sequence_length,
            "embed_dim": self.embed_dim,
            "position": self.position,
            "mask_zero": self.mask_zero,
            "scale_embeddings": self.scale_embeddings,
            "max_wavelength": self.max_wavelength,
            "num_segments": self.num_segments,
            "padding_id": self.padding_id,
            "position_offset": self.position_offset,
        }


def relative_position_buckets(
    relative_positions, bidirectional, num_buckets, max_distance
):
    """T5's bucket of each `key_position - query_position`.

    Half the buckets hold the nearest distances exactly; the rest grow
    logarithmically up to `max_distance`, beyond which all share the last
    bucket. Bidirectional buckets split the range between keys before and
    after the query; otherwise keys after the query all count as 0.
    """
    relative_positions = ops.cast(relative_positions, "int32")
    buckets = 0
    if bidirectional:
        num_buckets //= 2
        buckets = ops.cast(relative_positions > 0, "int32") * num_buckets
        distances = ops.abs(relative_positions)
    else:
        distances = -ops.minimum(relative_positions, 0)
    max_exact = num_buckets // 2
    # The logarithm is only read where the distance is at least max_exact.
    scaled = ops.log(
        ops.cast(ops.maximum(distances, max_exact), "float32") / max_exact
    ) / math.log(max_distance / max_exact)
    far = max_exact + ops.cast(scaled * (num_buckets - max_exact), "int32")
    far = ops.minimum(far, num_buckets - 1)
    return buckets + ops.where(distances < max_exact, distances, far)


@keras.saving.register_keras_serializable(package="keras_tfm")
class RelativePositionBias(keras.layers.Layer):
    """T5's learned attention bias for each (query, key) distance.

    Each head learns one scalar per bucket of relative distance
    (`relative_position_buckets`); the bias is added to the attention
    logits, so positions need no embedding of their own. One layer serves
    every block of a stack (T5 computes it in the first block and reuses it).
    Pass its output as `attention_bias` to `EncoderBlock`, `DecoderBlock` or
    `MultiHeadSelfAttention`.

    Args:
        num_heads: Number of attention heads.
        num_buckets: Number of distance buckets.
        max_distance: Distance from which all keys share the last bucket.
        bidirectional: Whether keys after the query get buckets of their own
            (an encoder); `False` for a causal decoder.
        **kwargs: Standard layer arguments.

    Call arguments:
        x: The queries' input `(batch, q_len, width)`; only its length is
            used.
        key_length: Number of keys; defaults to `q_len`. With a key/value
            cache, the cache's `max_length`.
        start_index: Position of the first query, for cached decoding.

    Returns:
        `(1, num_heads, q_len, key_length)` in the layer's compute dtype.

    Example:

    ```python
    import numpy as np
    from keras_tfm import EncoderBlock, RelativePositionBias

    x = np.random.rand(2, 7, 16).astype("float32")
    bias = RelativePositionBias(num_heads=2)(x)  # (1, 2, 7, 7)
    outputs = EncoderBlock(2, 32, attention_scale=1.0)(x, attention_bias=bias)
    ```

    References:
        - [Raffel et al., 2020 (T5)](https://arxiv.org/abs/1910.10683)
    """

    def __init__(
        self,
        num_heads,
        num_buckets=32,
        max_distance=128,
        bidirectional=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("num_buckets", num_buckets)
        check_positive_int("max_distance", max_distance)
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional

    def build(self, x_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_buckets, self.num_heads),
            initializer="uniform",
        )

    def call(self, x, key_length=None, start_index=0):
        check_rank("x", x.shape, 3, "(batch, q_len, width)")
        query_length = ops.shape(x)[1]
        if key_length is None:
            key_length = query_length
        query_positions = ops.arange(query_length) + start_index
        relative = ops.arange(key_length)[None, :] - query_positions[:, None]
        buckets = relative_position_buckets(
            relative, self.bidirectional, self.num_buckets, self.max_distance
        )
        bias = ops.take(self.embeddings, buckets, axis=0)  # (q, k, heads)
        bias = ops.transpose(bias, (2, 0, 1))[None]
        return ops.cast(bias, self.compute_dtype)

    def compute_output_spec(self, x, key_length=None, start_index=0):
        if key_length is None:
            key_length = x.shape[1]
        return keras.KerasTensor(
            (1, self.num_heads, x.shape[1], key_length), self.compute_dtype
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "num_buckets": self.num_buckets,
            "max_distance": self.max_distance,
            "bidirectional": self.bidirectional,
        }

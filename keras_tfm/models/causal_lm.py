"""A decoder-only (GPT-style) language model."""

import keras

from keras_tfm.layers import DecoderBlock, PositionalEmbedding
from keras_tfm.layers.validation import check_positive_int
from keras_tfm.models.base import FunctionalModel, run_stack, stack_norm


@keras.saving.register_keras_serializable(package="keras_tfm")
class CausalLM(FunctionalModel):
    """A decoder-only (GPT-style) language model.

    Pre-norm causal `DecoderBlock`s with a final norm. Positions are learned,
    or, with `rotary=True`, applied inside attention as rotary embeddings
    (then the embedding adds none). With `mask_zero=False` (the default, for
    packed training text) causal attention takes the fused kernel's
    `is_causal` path with no mask tensor; set `mask_zero=True` to treat token
    id 0 as padding.

    The model implements the decoding contract of `keras_tfm.generation`
    (`initial_cache` and `call_with_cache`), so `generation.generate`
    decodes it with a key/value cache.

    Args:
        vocab_size: Vocabulary size.
        sequence_length: Longest sequence (context window).
        num_layers: Number of decoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block.
        ff_dim: Feed-forward hidden width.
        rotary: Rotary position embeddings instead of learned positions.
        num_kv_heads: Key/value heads (grouped-query attention).
        dropout: Dropout rate on embeddings and sublayer outputs.
        activation: Feed-forward activation (`"relu"`, `"gelu"`,
            `"gelu_tanh"`, `"swiglu"`).
        tie_embeddings: Whether the output projection reuses the embedding.
        mask_zero: Whether token id 0 is padding.
        norm: `"layer"` (LayerNormalization) or `"rms"` (RMSNormalization),
            in the blocks and at the end.
        layer_norm_epsilon: Epsilon of every normalization.
        use_bias: Whether the attention, feed-forward and (untied) output
            projections have biases.
        rotary_max_wavelength: Longest wavelength of the rotary embeddings
            (Hugging Face's `rope_theta`).
        name: Model name.
        **kwargs: Standard model arguments (`trainable`, ...).

    Call arguments:
        tokens: Int token ids `(batch, seq)` (input name `tokens`).

    Returns:
        Next-token logits `(batch, seq, vocab_size)`.

    Attributes:
        embedding: The `PositionalEmbedding` (`embedding`); with
            `tie_embeddings=True` also the output projection.
        embedding_dropout: Dropout after the embedding.
        blocks: The `DecoderBlock`s (`decoder_block_0`, ...).
        final_norm: The LayerNormalization after the last block
            (`decoder_norm`).
        output_projection: The Dense layer to logits (`logits`), or None
            when the embedding is tied.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.CausalLM(
        vocab_size=100, sequence_length=32, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64, rotary=True,
    )
    logits = model(np.array([[5, 6, 7]]))  # (1, 3, 100)

    # The same logits one position at a time, with a key/value cache.
    cache = model.initial_cache(batch_size=1, max_length=3)
    first, cache = model.call_with_cache(np.array([[5, 6]]), cache, 0)
    last, cache = model.call_with_cache(np.array([[7]]), cache, 2)
    ```
    """

    def __init__(
        self,
        vocab_size,
        sequence_length,
        num_layers=4,
        embed_dim=256,
        num_heads=4,
        ff_dim=1024,
        rotary=False,
        num_kv_heads=None,
        dropout=0.1,
        activation="gelu",
        tie_embeddings=True,
        mask_zero=False,
        norm="layer",
        layer_norm_epsilon=1e-5,
        use_bias=True,
        rotary_max_wavelength=10000,
        name="causal_lm",
        **kwargs,
    ):
        check_positive_int("num_layers", num_layers)
        self.embedding = PositionalEmbedding(
            vocab_size,
            sequence_length,
            embed_dim,
            position=None if rotary else "learned",
            mask_zero=mask_zero,
            name="embedding",
        )
        self.embedding_dropout = keras.layers.Dropout(
            dropout, name="embedding_dropout"
        )
        self.blocks = [
            DecoderBlock(
                num_heads,
                ff_dim,
                dropout=dropout,
                activation=activation,
                norm_first=True,
                norm=norm,
                layer_norm_epsilon=layer_norm_epsilon,
                rotary=rotary,
                num_kv_heads=num_kv_heads,
                use_bias=use_bias,
                rotary_max_wavelength=rotary_max_wavelength,
                cross_attention=False,
                name=f"decoder_block_{index}",
            )
            for index in range(num_layers)
        ]
        self.final_norm = stack_norm(
            "decoder", enabled=True, norm=norm, epsilon=layer_norm_epsilon
        )
        self.output_projection = (
            None
            if tie_embeddings
            else keras.layers.Dense(
                vocab_size, use_bias=use_bias, name="logits"
            )
        )

        tokens = keras.Input((None,), dtype="int32", name="tokens")
        x = self.embedding_dropout(self.embedding(tokens))
        x = run_stack(x, self.blocks)
        super().__init__(tokens, self._logits(x), name=name, **kwargs)

        self.vocab_size = vocab_size
        self.sequence_length = sequence_length
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.rotary = rotary
        self.num_kv_heads = num_kv_heads
        self.dropout = dropout
        self.activation = activation
        self.tie_embeddings = tie_embeddings
        self.mask_zero = mask_zero
        self.norm = norm
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_bias = use_bias
        self.rotary_max_wavelength = rotary_max_wavelength

    def _logits(self, x):
        x = self.final_norm(x)
        if self.output_projection is None:
            return self.embedding(x, reverse=True)
        return self.output_projection(x)

    def initial_cache(self, batch_size, max_length):
        """An empty key/value cache: one tensor per block.

        Args:
            batch_size: Number of sequences decoded together.
            max_length: Longest sequence the cache holds.

        Returns:
            A tuple with one `(batch_size, 2, num_kv_heads, max_length,
            head_dim)` tensor per block (see
            `MultiHeadSelfAttention.initial_cache`).
        """
        return tuple(
            block.initial_cache(batch_size, max_length) for block in self.blocks
        )

    def call_with_cache(self, tokens, cache, cache_index):
        """The forward pass for positions from `cache_index` on, with a cache.

        Runs the model on `tokens` only, attending to the keys and values of
        earlier positions held in `cache`, and writes their own. A prefill
        is a call with the whole prompt at `cache_index=0`; a decoding step
        a call with one token. Dropout is off.

        Args:
            tokens: Int token ids `(batch, n)` at positions `cache_index` to
                `cache_index + n - 1`.
            cache: From `initial_cache()` or the previous call.
            cache_index: Position of `tokens[:, 0]` (an int or a scalar
                tensor).

        Returns:
            `(logits, cache)`: logits `(batch, n, vocab_size)` and the
            updated cache.
        """
        x = self.embedding(tokens, start_index=cache_index)
        new_cache = []
        for block, block_cache in zip(self.blocks, cache, strict=True):
            x, block_cache = block(
                x, cache=block_cache, cache_index=cache_index
            )
            new_cache.append(block_cache)
        return self._logits(x), tuple(new_cache)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "sequence_length": self.sequence_length,
            "num_layers": self.num_layers,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "rotary": self.rotary,
            "num_kv_heads": self.num_kv_heads,
            "dropout": self.dropout,
            "activation": self.activation,
            "tie_embeddings": self.tie_embeddings,
            "mask_zero": self.mask_zero,
            "norm": self.norm,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_bias": self.use_bias,
            "rotary_max_wavelength": self.rotary_max_wavelength,
        }


def causal_lm(*args, **kwargs):
    """Builds a `CausalLM`; takes the same arguments.

    Args:
        *args: Positional arguments of `CausalLM`.
        **kwargs: Keyword arguments of `CausalLM`.

    Returns:
        A `CausalLM` from int tokens `(batch, seq)` (input name `tokens`)
        to next-token logits `(batch, seq, vocab_size)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.causal_lm(
        vocab_size=100, sequence_length=32, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64, rotary=True,
    )
    logits = model(np.array([[5, 6, 7]]))  # (1, 3, 100)
    ```
    """
    return CausalLM(*args, **kwargs)

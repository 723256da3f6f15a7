"""A masked language model on a `TextEncoder` (BERT's pretraining)."""

import keras

from keras_tfm.layers.feed_forward import PLAIN_ACTIVATIONS, activate
from keras_tfm.layers.validation import check_choice
from keras_tfm.models.text import (
    TextEncoder,
    _check_encoder,
    _ModelOnEncoder,
)


@keras.saving.register_keras_serializable(package="keras_tfm")
class MaskedLM(_ModelOnEncoder):
    """A `TextEncoder` pretrained by predicting masked tokens (BERT).

    The head follows BERT: a dense GELU layer and a layer norm at each masked
    position, then the output projection, which by default is the token
    embedding transposed (ModernBERT's head: without the dense layer's and
    the norm's biases, with a bias after the tied projection). Inputs and
    targets are what keras-hub's `MaskedLMMaskGenerator` returns: train with
    `mask_ids` as targets and `mask_weights` as sample weights, so that the
    loss counts only the real masked positions
    (`reduction="mean_with_sample_weight"` averages over them), and report
    masked-token accuracy as a weighted metric. After pretraining,
    `model.encoder` is the encoder to fine-tune in a `TextClassifier`.

    Args:
        encoder: A `TextEncoder`.
        tie_embeddings: Whether the output projection reuses the encoder's
            token embedding. Untied, it is a Dense layer with a bias (how
            BERT's masked-LM head loads: its tied projection has a bias).
        activation: The head's activation: `"gelu"`, `"gelu_tanh"`,
            `"relu"` or `"quick_gelu"`.
        layer_norm_epsilon: Epsilon of the head's LayerNormalization.
        head_bias: Whether the head's dense layer has a bias (ModernBERT's
            `classifier_bias`).
        head_norm_bias: Whether the head's LayerNormalization has a bias
            (ModernBERT's `norm_bias`).
        output_bias: Whether the output projection adds a bias: None (the
            default) for a bias on an untied projection only; True adds
            one after the tied projection too (`output_bias`, a
            `BiasAdd`: ModernBERT's `decoder_bias`).
        name: Model name.
        **kwargs: Standard model arguments (`trainable`, ...).

    Call arguments:
        inputs: `{"tokens": (batch, seq), "mask_positions": (batch,
            num_masked)}` int tensors (token id 0 is padding).

    Returns:
        Logits `(batch, num_masked, vocab_size)` for the tokens at
        `mask_positions`.

    Attributes:
        encoder: The `TextEncoder`.
        head_dense: The dense GELU layer of the head (`mlm_dense`).
        head_norm: The layer norm of the head (`mlm_norm`).
        output_projection: The Dense layer to logits (`logits`), or None
            when tied to `encoder.embedding`.
        output_bias_layer: The `BiasAdd` after the tied projection
            (`output_bias`), or None.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    encoder = models.TextEncoder(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64,
    )
    model = models.MaskedLM(encoder)
    logits = model({
        "tokens": np.array([[5, 1, 7, 8, 1, 0]]),  # 1 is the mask token
        "mask_positions": np.array([[1, 4]]),
    })  # (1, 2, 100)
    ```
    """

    def __init__(
        self,
        encoder,
        tie_embeddings=True,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        head_bias=True,
        head_norm_bias=True,
        output_bias=None,
        name="masked_lm",
        **kwargs,
    ):
        _check_encoder(encoder)
        check_choice("activation", activation, PLAIN_ACTIVATIONS)
        check_choice("output_bias", output_bias, (None, True, False))
        # Set before the graph is built, which `token_logits` reads it for.
        self.activation = activation
        self.encoder = encoder
        self.head_dense = keras.layers.Dense(
            encoder.embed_dim, use_bias=head_bias, name="mlm_dense"
        )
        self.head_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, center=head_norm_bias, name="mlm_norm"
        )
        self.output_projection = None
        if not tie_embeddings:
            self.output_projection = keras.layers.Dense(
                encoder.vocab_size,
                use_bias=output_bias is not False,
                name="logits",
            )
        self.output_bias_layer = (
            BiasAdd(name="output_bias")
            if tie_embeddings and output_bias
            else None
        )

        encoder_inputs = encoder.input
        mask_positions = keras.Input(
            (None,), dtype="int32", name="mask_positions"
        )
        x = keras.ops.take_along_axis(
            encoder(encoder_inputs),
            keras.ops.expand_dims(mask_positions, -1),
            axis=1,
        )
        if not isinstance(encoder_inputs, dict):
            encoder_inputs = {"tokens": encoder_inputs}
        super().__init__(
            {**encoder_inputs, "mask_positions": mask_positions},
            self.token_logits(x),
            name=name,
            **kwargs,
        )
        self.tie_embeddings = tie_embeddings
        self.layer_norm_epsilon = layer_norm_epsilon
        self.head_bias = head_bias
        self.head_norm_bias = head_norm_bias
        self.output_bias = output_bias

    def token_logits(self, x):
        """Vocabulary logits `(batch, n, vocab_size)` for encoder outputs
        `(batch, n, embed_dim)`."""
        x = activate(self.head_dense(x), self.activation)
        x = self.head_norm(x)
        if self.output_projection is not None:
            return self.output_projection(x)
        logits = self.encoder.embedding(x, reverse=True)
        if self.output_bias_layer is not None:
            logits = self.output_bias_layer(logits)
        return logits

    def get_config(self):
        return {
            **super().get_config(),
            "tie_embeddings": self.tie_embeddings,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "head_bias": self.head_bias,
            "head_norm_bias": self.head_norm_bias,
            "output_bias": self.output_bias,
        }


@keras.saving.register_keras_serializable(package="keras_tfm")
class BiasAdd(keras.layers.Layer):
    """Adds a learned bias over the last axis: the bias of a tied output
    projection (`MaskedLM(output_bias=True)`), whose weights are the token
    embedding's.

    Args:
        **kwargs: Standard layer arguments.

    Call arguments:
        x: A tensor `(..., units)`.

    Returns:
        `x + bias`, with the shape of `x`; the bias, of `units` zeros at
        first, is the weight `bias`.

    Example:

    ```python
    import numpy as np
    from keras_tfm.models.masked_lm import BiasAdd

    logits = BiasAdd()(np.zeros((2, 3, 10), "float32"))  # (2, 3, 10)
    ```
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, x_shape):
        self.bias = self.add_weight(
            name="bias", shape=(x_shape[-1],), initializer="zeros"
        )

    def call(self, x):
        return x + keras.ops.cast(self.bias, x.dtype)

    def compute_output_shape(self, x_shape):
        return x_shape


def masked_lm(
    vocab_size,
    sequence_length,
    num_layers=2,
    embed_dim=128,
    num_heads=4,
    ff_dim=256,
    dropout=0.1,
    position="learned",
    norm_first=False,
    tie_embeddings=True,
    name="masked_lm",
):
    """Builds a `MaskedLM` on a new `TextEncoder`.

    Args:
        vocab_size: Vocabulary size (including the mask token).
        sequence_length: Longest input sequence.
        num_layers: Number of encoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block.
        ff_dim: Feed-forward hidden width.
        dropout: Dropout rate in the encoder.
        position: `"learned"` or `"sinusoidal"`.
        norm_first: Pre-norm blocks (adds a final norm).
        tie_embeddings: Whether the output projection reuses the token
            embedding.
        name: Model name.

    Returns:
        A `MaskedLM` taking `{"tokens": (batch, seq), "mask_positions":
        (batch, num_masked)}` int tensors (token id 0 is padding) and
        returning logits `(batch, num_masked, vocab_size)` for the tokens
        at those positions.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_tfm import models

    model = models.masked_lm(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64,
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=["sparse_categorical_accuracy"],
    )
    inputs = {
        "tokens": np.array([[5, 1, 7, 8, 1, 0]]),  # 1 is the mask token
        "mask_positions": np.array([[1, 4, 0]]),  # the last one is padding
    }
    mask_ids = np.array([[6, 9, 0]])  # the tokens that were masked
    mask_weights = np.array([[1.0, 1.0, 0.0]])
    model.fit(inputs, mask_ids, sample_weight=mask_weights, verbose=0)
    ```
    """
    encoder = TextEncoder(
        vocab_size,
        sequence_length,
        num_layers=num_layers,
        embed_dim=embed_dim,
        num_heads=num_heads,
        ff_dim=ff_dim,
        dropout=dropout,
        position=position,
        norm_first=norm_first,
    )
    return MaskedLM(encoder, tie_embeddings=tie_embeddings, name=name)


def masked_lm_encoder(model):
    """The `TextEncoder` inside a `MaskedLM`: `model.encoder`.

    It shares its layers, and so its weights, with `model`: train one and
    the other changes. Pass it to `text_classifier(..., encoder=...)` to
    fine-tune the pretrained encoder.

    Args:
        model: A `MaskedLM` (built by `masked_lm` or reloaded from its file).

    Returns:
        The `TextEncoder` named `encoder` from tokens `(batch, seq)` (input
        name `tokens`) to the encoder's outputs `(batch, seq, embed_dim)`,
        with the padding mask of token id 0.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    pretrained = models.masked_lm(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64,
    )
    classifier = models.text_classifier(
        vocab_size=100, sequence_length=16, num_classes=3,
        encoder=models.masked_lm_encoder(pretrained),
    )
    logits = classifier(np.array([[5, 6, 7, 0]]))  # (1, 3)
    ```
    """
    if not isinstance(model, MaskedLM):
        raise ValueError(
            "`model` must be a `models.MaskedLM` (from `models.masked_lm`). "
            f"Received: model={model.name!r} of type {type(model).__name__}"
        )
    return model.encoder

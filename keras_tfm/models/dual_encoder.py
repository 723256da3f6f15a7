"""A dual encoder: a text tower and an image tower embedded in one space
(CLIP, SigLIP)."""

import keras
from keras import ops

from keras_tfm.layers.pooling import (
    AttentionPooling,
    FirstTokenPooling,
    TokenPooling,
)
from keras_tfm.layers.validation import check_positive_int
from keras_tfm.models.base import FunctionalModel


@keras.saving.register_keras_serializable(package="keras_tfm")
class SimilarityLogits(keras.layers.Layer):
    """Scaled cosine similarities of text and image embeddings.

    `logits_per_text[i, j] = exp(logit_scale) * cos(text_i, image_j)
    (+ logit_bias)`, with a learned log-temperature `logit_scale` (CLIP's
    softmax loss) and, optionally, a learned `logit_bias` (SigLIP's
    sigmoid loss).

    Args:
        logit_scale: Initial value of the learned log-temperature; CLIP's
            is `log(1 / 0.07)`.
        logit_bias: None (no bias), or the initial value of a learned
            bias; SigLIP's is -10.
        **kwargs: Standard layer arguments.

    Call arguments:
        text_embeddings: `(text_batch, width)`.
        image_embeddings: `(image_batch, width)`.

    Returns:
        `logits_per_text`, `(text_batch, image_batch)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm.models.dual_encoder import SimilarityLogits

    text = np.random.rand(3, 8).astype("float32")
    images = np.random.rand(2, 8).astype("float32")
    logits = SimilarityLogits(logit_bias=-10.0)(text, images)  # (3, 2)
    ```
    """

    def __init__(self, logit_scale=2.6592, logit_bias=None, **kwargs):
        super().__init__(**kwargs)
        self.initial_scale = float(logit_scale)
        self.initial_bias = None if logit_bias is None else float(logit_bias)

    def build(self, text_embeddings_shape, image_embeddings_shape):
        self.logit_scale = self.add_weight(
            name="logit_scale",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_scale),
        )
        self.logit_bias = None
        if self.initial_bias is not None:
            self.logit_bias = self.add_weight(
                name="logit_bias",
                shape=(),
                initializer=keras.initializers.Constant(self.initial_bias),
            )

    def call(self, text_embeddings, image_embeddings):
        text = ops.normalize(text_embeddings, axis=-1)
        images = ops.normalize(image_embeddings, axis=-1)
        logits = ops.matmul(text, ops.transpose(images))
        logits = logits * ops.exp(ops.cast(self.logit_scale, logits.dtype))
        if self.logit_bias is not None:
            logits = logits + ops.cast(self.logit_bias, logits.dtype)
        return logits

    def compute_output_shape(
        self, text_embeddings_shape, image_embeddings_shape
    ):
        return (text_embeddings_shape[0], image_embeddings_shape[0])

    def get_config(self):
        return {
            **super().get_config(),
            "logit_scale": self.initial_scale,
            "logit_bias": self.initial_bias,
        }


def _single_input(model, argument, rank, description):
    """`model`'s one input, of rank `rank`, or a ValueError."""
    inputs = getattr(model, "inputs", None)
    if (
        not isinstance(model, keras.Model)
        or not inputs
        or len(inputs) != 1
        or len(inputs[0].shape) != rank
    ):
        raise ValueError(
            f"`{argument}` must be a keras.Model with one input, {description}"
            f". Received: {argument}={model!r}"
        )
    return inputs[0]


def _token_pooling(text_pooling):
    options = text_pooling
    if isinstance(options, str):
        options = {"position": options}
    if not isinstance(options, dict):
        raise ValueError(
            "`text_pooling` must be a position name or a dict of "
            f"TokenPooling arguments. Received: text_pooling={text_pooling!r}"
        )
    layer = TokenPooling(**options, name="text_pooling")
    return layer, {"position": layer.position, "token_id": layer.token_id}


def _image_pooling(image_pooling):
    if image_pooling == "first":
        return FirstTokenPooling(name="image_pooling"), "first"
    if not isinstance(image_pooling, dict):
        raise ValueError(
            "`image_pooling` must be 'first' or a dict of AttentionPooling "
            f"arguments. Received: image_pooling={image_pooling!r}"
        )
    layer = AttentionPooling(**image_pooling, name="image_pooling")
    config = layer.get_config()
    keys = ("num_heads", "hidden_dim", "activation", "epsilon")
    return layer, {key: config[key] for key in keys}


def _projection(units, use_bias, name):
    if units is None:
        return None
    check_positive_int(f"{name}_dim", units)
    return keras.layers.Dense(units, use_bias=use_bias, name=name)


@keras.saving.register_keras_serializable(package="keras_tfm")
class DualEncoder(FunctionalModel):
    """A text tower and an image tower whose pooled, projected outputs are
    compared: contrastive image-text models (CLIP, SigLIP).

    Each tower's hidden states are pooled to one vector (the text's at a
    chosen token, the image's at its class token or by attention pooling),
    optionally projected, normalised to unit length and compared by scaled
    cosine similarity (`SimilarityLogits`). The model calls its towers as
    layers and shares their weights; its config holds theirs, as
    `TextClassifier` holds its encoder's.

    Args:
        text_encoder: The text tower: a keras.Model from token ids
            `(batch, seq)` to `(batch, seq, width)`, such as a
            `models.TextEncoder` (CLIP's is causal).
        image_encoder: The image tower: a keras.Model from images
            `(batch, height, width, channels)` to `(batch, tokens, width)`,
            such as a `models.vision.ViTEncoder`.
        text_pooling: Where the text is read: a `TokenPooling` position
            (`"last"`, `"highest_id"`) or a dict of `TokenPooling`
            arguments (`{"position": "token_id", "token_id": 49407}`).
        image_pooling: `"first"` (the class token) or a dict of
            `AttentionPooling` arguments (SigLIP's MAP head:
            `{"num_heads": 12, "hidden_dim": 3072}`).
        text_projection_dim: Width of the Dense layer after the text
            pooling, or None for none.
        image_projection_dim: Width of the Dense layer after the image
            pooling, or None for none.
        projection_bias: Whether the projections have biases (CLIP's have
            none, SigLIP's text head has one).
        logit_scale: Initial value of the learned log-temperature.
        logit_bias: None, or the initial value of a learned logit bias
            (SigLIP's sigmoid loss has one).
        name: Model name.
        **kwargs: Standard model arguments (`trainable`, ...).

    Call arguments:
        inputs: A dict of `"tokens"`, int token ids `(text_batch, seq)`,
            and `"images"`, `(image_batch, height, width, channels)`
            (channels last).

    Returns:
        A dict of `"text_embeddings"` `(text_batch, dim)` and
        `"image_embeddings"` `(image_batch, dim)`, both of unit length, and
        the scaled similarities `"logits_per_text"` `(text_batch,
        image_batch)` and `"logits_per_image"`, its transpose.

    Attributes:
        text_encoder: The text tower.
        image_encoder: The image tower.
        text_pooling_layer: The `TokenPooling` (`text_pooling`).
        image_pooling_layer: The `FirstTokenPooling` or `AttentionPooling`
            (`image_pooling`).
        text_projection: The Dense layer (`text_projection`), or None.
        image_projection: The Dense layer (`image_projection`), or None.
        similarity: The `SimilarityLogits` (`similarity`).

    Example:

    ```python
    import numpy as np
    from keras_tfm import models
    from keras_tfm.models.dual_encoder import DualEncoder
    from keras_tfm.models.vision import ViTEncoder

    text = models.TextEncoder(
        vocab_size=100, sequence_length=16, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64, norm={"placement": "pre"}, causal=True,
    )
    images = ViTEncoder(
        image_size=8, patch_size=4, num_layers=1, embed_dim=24,
        num_heads=2, ff_dim=48,
    )
    model = DualEncoder(
        text, images, text_pooling="highest_id", text_projection_dim=16,
        image_projection_dim=16,
    )
    outputs = model({
        "tokens": np.array([[5, 6, 99, 0], [7, 99, 0, 0]]),
        "images": np.random.rand(3, 8, 8, 3),
    })
    outputs["logits_per_image"]  # (3, 2)
    ```

    References:
        - [Radford et al., 2021](https://arxiv.org/abs/2103.00020) (CLIP)
        - [Zhai et al., 2023](https://arxiv.org/abs/2303.15343) (SigLIP)
    """

    def __init__(
        self,
        text_encoder,
        image_encoder,
        text_pooling="last",
        image_pooling="first",
        text_projection_dim=None,
        image_projection_dim=None,
        projection_bias=False,
        logit_scale=2.6592,
        logit_bias=None,
        name="dual_encoder",
        **kwargs,
    ):
        tokens = _single_input(text_encoder, "text_encoder", 2, "(batch, seq)")
        images = _single_input(
            image_encoder,
            "image_encoder",
            4,
            "(batch, height, width, channels)",
        )
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.text_pooling_layer, text_pooling = _token_pooling(text_pooling)
        self.image_pooling_layer, image_pooling = _image_pooling(image_pooling)
        self.text_projection = _projection(
            text_projection_dim, projection_bias, "text_projection"
        )
        self.image_projection = _projection(
            image_projection_dim, projection_bias, "image_projection"
        )
        self.similarity = SimilarityLogits(
            logit_scale, logit_bias, name="similarity"
        )

        text = self.embed_text(tokens)
        image = self.embed_images(images)
        logits_per_text = self.similarity(text, image)
        outputs = {
            "text_embeddings": ops.normalize(text, axis=-1),
            "image_embeddings": ops.normalize(image, axis=-1),
            "logits_per_text": logits_per_text,
            "logits_per_image": ops.transpose(logits_per_text),
        }
        inputs = {"tokens": tokens, "images": images}
        super().__init__(inputs, outputs, name=name, **kwargs)

        self.text_pooling = text_pooling
        self.image_pooling = image_pooling
        self.text_projection_dim = text_projection_dim
        self.image_projection_dim = image_projection_dim
        self.projection_bias = projection_bias
        self.logit_scale = self.similarity.initial_scale
        self.logit_bias = self.similarity.initial_bias

    def embed_text(self, tokens):
        """The text embeddings of `tokens` `(batch, seq)`, before
        normalisation: pooled and projected, `(batch, dim)`."""
        x = self.text_pooling_layer(self.text_encoder(tokens), tokens)
        if self.text_projection is not None:
            x = self.text_projection(x)
        return x

    def embed_images(self, images):
        """The image embeddings of `images` `(batch, height, width,
        channels)`, before normalisation: pooled and projected,
        `(batch, dim)`."""
        x = self.image_pooling_layer(self.image_encoder(images))
        if self.image_projection is not None:
            x = self.image_projection(x)
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "text_encoder": keras.saving.serialize_keras_object(
                self.text_encoder
            ),
            "image_encoder": keras.saving.serialize_keras_object(
                self.image_encoder
            ),
            "text_pooling": self.text_pooling,
            "image_pooling": self.image_pooling,
            "text_projection_dim": self.text_projection_dim,
            "image_projection_dim": self.image_projection_dim,
            "projection_bias": self.projection_bias,
            "logit_scale": self.logit_scale,
            "logit_bias": self.logit_bias,
        }

    @classmethod
    def from_config(cls, config):
        towers = {
            key: keras.saving.deserialize_keras_object(config[key])
            for key in ("text_encoder", "image_encoder")
        }
        return cls(**{**config, **towers})

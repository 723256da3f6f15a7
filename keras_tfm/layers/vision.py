"""Images as token sequences, for the Vision Transformer."""

import keras
from keras import ops

from keras_tfm.layers.validation import check_positive_int, check_rank


@keras.saving.register_keras_serializable(package="keras_tfm")
class PatchEmbedding(keras.layers.Layer):
    """Splits images into patches, embeds them, and adds a class token.

    Each non-overlapping `patch_size x patch_size` patch is projected to
    `embed_dim` (a strided convolution, equivalent to flattening the patch
    and applying a dense layer). A learned class token is prepended and
    learned position embeddings are added (Dosovitskiy et al., 2020).

    Args:
        patch_size: Side of each square patch; must divide the image sides.
        embed_dim: Width of the patch embeddings.
        **kwargs: Standard layer arguments.

    Call arguments:
        images: `(batch, height, width, channels)`.

    Returns:
        `(batch, 1 + num_patches, embed_dim)`, the class token first.

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers import PatchEmbedding

    images = np.random.rand(2, 8, 8, 1).astype("float32")
    tokens = PatchEmbedding(patch_size=2, embed_dim=16)(images)  # (2, 17, 16)
    ```

    References:
        - [Dosovitskiy et al., 2020](https://arxiv.org/abs/2010.11929)
    """

    def __init__(self, patch_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("patch_size", patch_size)
        check_positive_int("embed_dim", embed_dim)
        self.patch_size = patch_size
        self.embed_dim = embed_dim

    def build(self, images_shape):
        check_rank(
            "images", images_shape, 4, "(batch, height, width, channels)"
        )
        height, width = images_shape[1], images_shape[2]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"`patch_size`={self.patch_size} must divide the image height "
                f"and width. Received: images.shape={tuple(images_shape)}"
            )
        num_patches = (height // self.patch_size) * (width // self.patch_size)
        self.projection = keras.layers.Conv2D(
            self.embed_dim,
            self.patch_size,
            strides=self.patch_size,
            name="projection",
            dtype=self.dtype_policy,
        )
        self.projection.build(images_shape)
        self.class_token = self.add_weight(
            name="class_token",
            shape=(1, 1, self.embed_dim),
            initializer="zeros",
        )
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(1 + num_patches, self.embed_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, images):
        patches = self.projection(images)
        batch = ops.shape(patches)[0]
        patches = ops.reshape(patches, (batch, -1, self.embed_dim))
        class_token = ops.broadcast_to(
            ops.cast(self.class_token, patches.dtype),
            (batch, 1, self.embed_dim),
        )
        tokens = ops.concatenate([class_token, patches], axis=1)
        return tokens + ops.cast(self.position_embeddings, tokens.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "embed_dim": self.embed_dim,
        }

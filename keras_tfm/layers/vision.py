"""Images as token sequences, for the Vision Transformer."""

import keras
import numpy as np
from keras import ops

from keras_tfm.layers.validation import (
    check_non_negative_int,
    check_positive_int,
    check_rank,
)

# The cubic convolution coefficients of PyTorch's bicubic interpolation,
# without and with antialiasing.
CUBIC_COEFFICIENT = -0.75
ANTIALIAS_CUBIC_COEFFICIENT = -0.5


def _cubic(x, a):
    """Keys's (1981) cubic convolution kernel at distances `x`."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def bicubic_resize_matrix(source, target, antialias=False):
    """The `(target, source)` matrix that resizes one axis as PyTorch's
    `interpolate(mode="bicubic", align_corners=False)` does.

    Bicubic interpolation is linear and separable: resizing a grid is this
    matrix applied along each axis. Samples are taken at pixel centres.
    Without antialiasing, the four taps around each sample are weighted by
    the kernel `a = -0.75` (not `keras.ops.image.resize`'s) and those past
    an edge repeat the edge; with it (`antialias=True`), the kernel is
    `a = -0.5`, widened by the shrinking factor when shrinking, its taps
    past an edge dropped and the rest renormalised.

    Args:
        source: Length of the axis before resizing.
        target: Length after.
        antialias: Whether to resize as PyTorch's `antialias=True`.

    Returns:
        A float64 NumPy array `(target, source)`.

    Example:

    ```python
    from keras_tfm.layers.vision import bicubic_resize_matrix

    matrix = bicubic_resize_matrix(4, 6)  # (6, 4); each row sums to 1
    ```
    """
    check_positive_int("source", source)
    check_positive_int("target", target)
    scale = source / target
    centres = (np.arange(target) + 0.5) * scale
    rows = np.arange(target)[:, None]
    if antialias:
        stretch = max(scale, 1.0)
        taps = np.arange(source)[None, :]
        # PyTorch's window: the taps whose centres are within the support.
        low = np.maximum((centres - 2 * stretch + 0.5).astype(int), 0)
        high = np.minimum((centres + 2 * stretch + 0.5).astype(int), source)
        inside = (taps >= low[:, None]) & (taps < high[:, None])
        distance = (taps + 0.5 - centres[:, None]) / stretch
        weights = _cubic(distance, ANTIALIAS_CUBIC_COEFFICIENT) * inside
        total = weights.sum(axis=1, keepdims=True)
        return weights / np.where(total == 0, 1.0, total)
    position = centres - 0.5
    below = np.floor(position)
    matrix = np.zeros((target, source))
    for offset in range(-1, 3):
        taps = np.clip(below + offset, 0, source - 1).astype(int)
        weight = _cubic(position - below - offset, CUBIC_COEFFICIENT)
        np.add.at(matrix, (rows[:, 0], taps), weight)
    return matrix


@keras.saving.register_keras_serializable(package="keras_tfm")
class PatchEmbedding(keras.layers.Layer):
    """Splits images into patches, embeds them, and adds a class token.

    Each non-overlapping `patch_size x patch_size` patch is projected to
    `embed_dim` (a strided convolution, equivalent to flattening the patch
    and applying a dense layer). A learned class token is prepended and
    learned position embeddings are added (Dosovitskiy et al., 2020).

    Variants of later models: no class token (SigLIP); a learned
    distillation token after the class token, with a position of its own
    (DeiT); register tokens after the class token, with no position
    (DINOv2 with registers); and a position table for a grid of another
    size than the image's (DINOv2), resized bicubically to the image's grid
    as PyTorch's `interpolate(mode="bicubic")` resizes it.

    Args:
        patch_size: Side of each square patch; must divide the image sides.
        embed_dim: Width of the patch embeddings.
        use_bias: Whether the patch projection has a bias.
        class_token: Whether a learned class token comes first.
        distillation_token: Whether a learned distillation token follows
            the class token (DeiT).
        num_registers: Number of learned register tokens, placed after the
            class and distillation tokens, which get no position
            embedding (Darcet et al., 2023).
        position_grid: Side of the square grid of patches the position
            table covers, resized to the image's grid where they differ;
            None for a table of the image's own grid.
        position_antialias: Whether that resizing antialiases, as
            PyTorch's `antialias=True` (DINOv2 with registers).
        **kwargs: Standard layer arguments.

    Call arguments:
        images: `(batch, height, width, channels)`.

    Returns:
        `(batch, tokens, embed_dim)`: the class token (if any), the
        distillation token (if any), the registers, then the patches, row
        by row.

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers import PatchEmbedding

    images = np.random.rand(2, 8, 8, 1).astype("float32")
    tokens = PatchEmbedding(patch_size=2, embed_dim=16)(images)  # (2, 17, 16)
    dinov2 = PatchEmbedding(2, 16, num_registers=4, position_grid=6)
    tokens = dinov2(images)  # (2, 21, 16): 4 x 4 patches, table of 6 x 6
    ```

    References:
        - [Dosovitskiy et al., 2020](https://arxiv.org/abs/2010.11929)
        - [Touvron et al., 2021](https://arxiv.org/abs/2012.12877) (DeiT)
        - [Darcet et al., 2023](https://arxiv.org/abs/2309.16588)
          (registers)
    """

    def __init__(
        self,
        patch_size,
        embed_dim,
        use_bias=True,
        class_token=True,
        distillation_token=False,
        num_registers=0,
        position_grid=None,
        position_antialias=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("patch_size", patch_size)
        check_positive_int("embed_dim", embed_dim)
        check_non_negative_int("num_registers", num_registers)
        if position_grid is not None:
            check_positive_int("position_grid", position_grid)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.use_bias = use_bias
        self.class_token_enabled = class_token
        self.distillation_token_enabled = distillation_token
        self.num_registers = num_registers
        self.position_grid = position_grid
        self.position_antialias = position_antialias
        # Tokens before the patches that have a position embedding.
        self.num_leading = int(class_token) + int(distillation_token)

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
        if self.position_grid is not None:
            num_patches = self.position_grid**2
        self.projection = keras.layers.Conv2D(
            self.embed_dim,
            self.patch_size,
            strides=self.patch_size,
            use_bias=self.use_bias,
            name="projection",
            dtype=self.dtype_policy,
        )
        self.projection.build(images_shape)
        self.class_token = self._token("class_token", self.class_token_enabled)
        self.distillation_token = self._token(
            "distillation_token", self.distillation_token_enabled
        )
        self.register_tokens = None
        if self.num_registers:
            self.register_tokens = self.add_weight(
                name="register_tokens",
                shape=(self.num_registers, self.embed_dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(self.num_leading + num_patches, self.embed_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def _token(self, name, enabled):
        if not enabled:
            return None
        return self.add_weight(
            name=name, shape=(1, 1, self.embed_dim), initializer="zeros"
        )

    def call(self, images):
        patches = self.projection(images)  # (batch, rows, columns, width)
        grid = tuple(patches.shape[1:3])
        batch = ops.shape(patches)[0]
        patches = ops.reshape(patches, (batch, -1, self.embed_dim))
        leading = [
            ops.broadcast_to(
                ops.cast(token, patches.dtype), (batch, 1, self.embed_dim)
            )
            for token in (self.class_token, self.distillation_token)
            if token is not None
        ]
        tokens = ops.concatenate([*leading, patches], axis=1)
        tokens = tokens + ops.cast(self._positions(grid), tokens.dtype)
        if self.register_tokens is None:
            return tokens
        registers = ops.broadcast_to(
            ops.cast(self.register_tokens, tokens.dtype)[None],
            (batch, self.num_registers, self.embed_dim),
        )
        return ops.concatenate(
            [
                tokens[:, : self.num_leading],
                registers,
                tokens[:, self.num_leading :],
            ],
            axis=1,
        )

    def _positions(self, grid):
        """The position table for an image of `grid` patches: the table
        itself, or its patch rows resized in float32 (as PyTorch does)."""
        table = self.position_embeddings
        side = self.position_grid
        if side is None or grid == (side, side):
            return table
        patches = ops.reshape(
            ops.cast(table[self.num_leading :], "float32"),
            (side, side, self.embed_dim),
        )
        rows, columns = (
            ops.convert_to_tensor(
                bicubic_resize_matrix(side, n, self.position_antialias),
                "float32",
            )
            for n in grid
        )
        patches = ops.einsum("ia,jb,abd->ijd", rows, columns, patches)
        patches = ops.reshape(patches, (-1, self.embed_dim))
        leading = ops.cast(table[: self.num_leading], "float32")
        return ops.concatenate([leading, patches], axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "embed_dim": self.embed_dim,
            "use_bias": self.use_bias,
            "class_token": self.class_token_enabled,
            "distillation_token": self.distillation_token_enabled,
            "num_registers": self.num_registers,
            "position_grid": self.position_grid,
            "position_antialias": self.position_antialias,
        }

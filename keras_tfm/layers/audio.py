"""Audio features as token sequences, for speech encoders (Whisper)."""

import keras
from keras import ops

from keras_tfm.layers.positional import sinusoid
from keras_tfm.layers.validation import check_positive_int, check_rank


@keras.saving.register_keras_serializable(package="keras_tfm")
class AudioEmbedding(keras.layers.Layer):
    """Embeds audio feature frames (log-mel spectrograms) as a sequence.

    Two 1-D convolutions over time, kernel 3, each followed by (exact)
    GELU: the first keeps the frame rate, the second (stride 2) halves it.
    Both pad one frame on each side, as PyTorch's `padding=1` does. A fixed
    position table is then added: Whisper's sinusoids (Radford et al.,
    2022), held as a non-trainable weight so that a checkpoint's own table
    loads into it.

    Features carry no padding mask: audio is padded with silence, which
    the encoder attends to.

    Args:
        embed_dim: Width of the embeddings; even, and at least 4.
        sequence_length: Number of positions (embedded frames) the table
            holds: inputs may have up to `2 * sequence_length` frames.
            Whisper's is 1500 (30 s of audio at 100 frames per second).
        channels: Number of feature channels per frame (Whisper: 80 mel
            bins, or 128 from large-v3 on).
        max_wavelength: Longest wavelength of the position sinusoids.
        **kwargs: Standard layer arguments.

    Call arguments:
        features: Float features `(batch, frames, channels)`, channels last
            (transformers' `input_features` transposed).

    Returns:
        `(batch, (frames + 1) // 2, embed_dim)`: `frames // 2` for an even
        number of frames.

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers.audio import AudioEmbedding

    features = np.random.rand(2, 20, 8).astype("float32")
    embed = AudioEmbedding(embed_dim=16, sequence_length=10, channels=8)
    embed(features)  # (2, 10, 16)
    ```

    References:
        - [Radford et al., 2022](https://arxiv.org/abs/2212.04356)
    """

    def __init__(
        self,
        embed_dim,
        sequence_length,
        channels,
        max_wavelength=10000,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("embed_dim", embed_dim)
        check_positive_int("sequence_length", sequence_length)
        check_positive_int("channels", channels)
        check_positive_int("max_wavelength", max_wavelength)
        if embed_dim % 2 or embed_dim < 4:
            raise ValueError(
                "`embed_dim` must be even and at least 4 (sine and cosine "
                f"pairs of the position table). Received: embed_dim={embed_dim}"
            )
        self.embed_dim = embed_dim
        self.sequence_length = sequence_length
        self.channels = channels
        self.max_wavelength = max_wavelength

    def build(self, features_shape):
        check_rank("features", features_shape, 3, "(batch, frames, channels)")
        if features_shape[-1] != self.channels:
            raise ValueError(
                f"`features` must have `channels`={self.channels} channels "
                f"on its last axis. Received: features.shape="
                f"{tuple(features_shape)}"
            )
        self.conv_1, self.conv_2 = (
            keras.layers.Conv1D(
                self.embed_dim,
                3,
                strides=strides,
                name=f"conv_{index}",
                dtype=self.dtype_policy,
            )
            for index, strides in ((1, 1), (2, 2))
        )
        self.conv_1.build((None, None, self.channels))
        self.conv_2.build((None, None, self.embed_dim))
        # Whisper's sinusoids, which its checkpoints also hold.
        table = sinusoid(
            self.sequence_length,
            self.embed_dim,
            "tensor2tensor",
            max_wavelength=self.max_wavelength,
        )
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(self.sequence_length, self.embed_dim),
            initializer=lambda shape, dtype: ops.cast(table, dtype),
            trainable=False,
        )

    def call(self, features):
        x = features
        for conv in (self.conv_1, self.conv_2):
            # PyTorch's `padding=1`: Keras's "same" pads a strided
            # convolution on the right only.
            x = ops.pad(x, ((0, 0), (1, 1), (0, 0)))
            x = ops.gelu(conv(x), approximate=False)
        frames = x.shape[1]
        if isinstance(frames, int) and frames > self.sequence_length:
            raise ValueError(
                f"`features` has {features.shape[1]} frames, which embed to "
                f"{frames} positions, more than this AudioEmbedding's "
                f"`sequence_length`={self.sequence_length}."
            )
        # A gather, not a slice, as in `PositionalEmbedding`.
        positions = ops.take(
            self.position_embeddings, ops.arange(ops.shape(x)[1]), axis=0
        )
        return x + ops.cast(positions, x.dtype)

    def compute_output_shape(self, features_shape):
        frames = features_shape[1]
        if frames is not None:
            frames = (frames + 1) // 2
        return (features_shape[0], frames, self.embed_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "sequence_length": self.sequence_length,
            "channels": self.channels,
            "max_wavelength": self.max_wavelength,
        }

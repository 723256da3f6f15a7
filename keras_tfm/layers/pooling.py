"""Sequence pooling that Keras lacks: the first ("class") token."""

import keras

from keras_tfm.layers.validation import check_rank


@keras.saving.register_keras_serializable(package="keras_tfm")
class FirstTokenPooling(keras.layers.Layer):
    """Returns the hidden state of the first position of each sequence.

    BERT-style classifiers put a class token first and classify from its
    final hidden state. For mean pooling over real tokens use
    `keras.layers.GlobalAveragePooling1D`, which honours the Keras mask.

    Args:
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: `(batch, seq, width)`.

    Returns:
        `(batch, width)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm.layers import FirstTokenPooling

    pooled = FirstTokenPooling()(np.ones((2, 5, 8), "float32"))  # (2, 8)
    ```
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.built = True

    def call(self, x):
        check_rank("x", x.shape, 3, "(batch, seq, width)")
        return x[:, 0]

    def compute_mask(self, x, mask=None):
        return None

    def compute_output_shape(self, x_shape):
        return (x_shape[0], x_shape[2])

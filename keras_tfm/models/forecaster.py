"""A Transformer encoder that forecasts time series."""

import keras

from keras_tfm.layers import EncoderBlock, SinusoidalEncoding
from keras_tfm.layers.options import block_options
from keras_tfm.layers.validation import check_positive_int
from keras_tfm.models.base import (
    FunctionalModel,
    make_blocks,
    run_stack,
    stack_norm,
)


@keras.saving.register_keras_serializable(package="keras_tfm")
class Forecaster(FunctionalModel):
    """A Transformer encoder that forecasts the next `horizon` steps.

    Each time step's features are projected to `embed_dim`, the sinusoidal
    position signal is added, pre-norm encoder blocks mix the steps, and a
    dense head maps the flattened sequence to the forecast. Scale the series
    (for example to zero mean and unit variance) before training.

    Args:
        input_length: Number of past steps the model reads.
        horizon: Number of future steps it predicts.
        num_features: Number of variables per step.
        num_layers: Number of encoder blocks.
        embed_dim: Model width.
        num_heads: Attention heads per block.
        ff_dim: Feed-forward hidden width.
        dropout: Dropout rate.
        name: Model name.
        **kwargs: Standard model arguments (`trainable`, ...).

    Call arguments:
        series: `(batch, input_length, num_features)` floats (input name
            `series`).

    Returns:
        The forecast, `(batch, horizon, num_features)`.

    Attributes:
        input_projection: The Dense layer from features to `embed_dim`.
        positions: The `SinusoidalEncoding` added to it.
        embedding_dropout: Dropout after the positions are added.
        blocks: The `EncoderBlock`s (`encoder_block_0`, ...).
        final_norm: The LayerNormalization after the last block.
        head: The Dense layer from the flattened sequence to the forecast.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.Forecaster(
        input_length=24, horizon=6, num_layers=1, embed_dim=16, num_heads=2,
        ff_dim=32,
    )
    forecast = model(np.random.rand(4, 24, 1))  # (4, 6, 1)
    ```
    """

    def __init__(
        self,
        input_length,
        horizon,
        num_features=1,
        num_layers=2,
        embed_dim=64,
        num_heads=4,
        ff_dim=128,
        dropout=0.1,
        name="forecaster",
        **kwargs,
    ):
        for argument, value in (
            ("input_length", input_length),
            ("horizon", horizon),
            ("num_features", num_features),
            ("num_layers", num_layers),
        ):
            check_positive_int(argument, value)
        self.input_projection = keras.layers.Dense(
            embed_dim, name="input_projection"
        )
        self.positions = SinusoidalEncoding(name="positions")
        self.embedding_dropout = keras.layers.Dropout(
            dropout, name="embedding_dropout"
        )
        options = block_options(
            {},
            num_heads=num_heads,
            ff_dim=ff_dim,
            feed_forward={"activation": "gelu"},
            norm={"placement": "pre"},
        )
        self.blocks = make_blocks(
            EncoderBlock, num_layers, "encoder", options, dropout=dropout
        )
        self.final_norm = stack_norm("encoder", True, options["norm"])
        self.head = keras.layers.Dense(horizon * num_features, name="head")

        series = keras.Input((input_length, num_features), name="series")
        x = self.input_projection(series)
        x = keras.layers.Add(name="add_positions")([x, self.positions(x)])
        x = self.embedding_dropout(x)
        x = run_stack(x, self.blocks, self.final_norm)
        x = self.head(keras.layers.Flatten(name="flatten")(x))
        forecast = keras.layers.Reshape(
            (horizon, num_features), name="forecast"
        )(x)
        super().__init__(series, forecast, name=name, **kwargs)

        self.input_length = input_length
        self.horizon = horizon
        self.num_features = num_features
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout

    def get_config(self):
        return {
            **super().get_config(),
            "input_length": self.input_length,
            "horizon": self.horizon,
            "num_features": self.num_features,
            "num_layers": self.num_layers,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
        }


def forecaster(*args, **kwargs):
    """Builds a `Forecaster`; takes the same arguments.

    Args:
        *args: Positional arguments of `Forecaster`.
        **kwargs: Keyword arguments of `Forecaster`.

    Returns:
        A `Forecaster` from `(batch, input_length, num_features)` floats
        (input name `series`) to `(batch, horizon, num_features)`.

    Example:

    ```python
    import numpy as np
    from keras_tfm import models

    model = models.forecaster(
        input_length=24, horizon=6, num_layers=1, embed_dim=16, num_heads=2,
        ff_dim=32,
    )
    forecast = model(np.random.rand(4, 24, 1))  # (4, 6, 1)
    ```
    """
    return Forecaster(*args, **kwargs)

"""Forecast a multi-seasonal time series with a Transformer encoder.

The series is generated in code: hourly values with a daily and a weekly
cycle, a slow trend and noise. `models.forecaster` reads one week (168 hours)
and predicts the next day (24 hours) as a correction to the seasonal naive
forecast (tomorrow = the same hours one week earlier); its error is compared
with that baseline and with the daily naive forecast (tomorrow = today).

    python examples/forecast.py                  # about 3 minutes
    python examples/forecast.py --csv my.csv     # your own series

`--csv` takes a file with a header row and one numeric column per variable,
one row per time step.
"""

import keras
import numpy as np
from common import (
    parse_arguments,
    progress_verbosity,
    save_figure,
    training_callbacks,
)

from keras_tfm import models

INPUT_LENGTH, HORIZON = 168, 24


def generated_series(hours, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(hours)
    daily = 3.0 * np.sin(2 * np.pi * t / 24) + np.sin(4 * np.pi * t / 24)
    weekly = 2.0 * np.sin(2 * np.pi * t / 168)
    weekend = np.where((t // 24) % 7 >= 5, -2.0, 0.0)
    trend = 0.002 * t
    noise = rng.normal(scale=0.5, size=hours)
    return (10 + daily + weekly + weekend + trend + noise)[:, None]


def read_csv(path):
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def make_windows(series, input_length, horizon, stride=1):
    """(past, future) pairs from a `(time, features)` array."""
    series = np.asarray(series, dtype="float32")
    if series.ndim != 2:
        raise ValueError(
            "`series` must have shape (time, features). "
            f"Received: series.shape={series.shape}"
        )
    if not np.isfinite(series).all():
        bad = np.argwhere(~np.isfinite(series))[0]
        raise ValueError(
            "`series` contains NaN or infinite values (first at time step "
            f"{bad[0]}, feature {bad[1]}); fill or drop them before training."
        )
    if len(series) < input_length + horizon:
        raise ValueError(
            f"`series` has {len(series)} steps, fewer than input_length + "
            f"horizon = {input_length + horizon}."
        )
    starts = range(0, len(series) - input_length - horizon + 1, stride)
    past = np.stack([series[s : s + input_length] for s in starts])
    future = np.stack(
        [series[s + input_length : s + input_length + horizon] for s in starts]
    )
    return past, future


def seasonal_naive(past):
    """The same hours one week (168 steps) before the forecast starts."""
    return past[:, -168 : -168 + HORIZON]


def to_model_space(past, future, scale):
    """Inputs centred on each window's mean; targets as corrections to the
    seasonal naive forecast. Both scaled by the training series' spread."""
    level = past.mean(axis=1, keepdims=True)
    return (past - level) / scale, (future - seasonal_naive(past)) / scale


def plot_forecast(past, future, forecast, naive):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 3.5))
    history = np.arange(-72, 0)
    ahead = np.arange(HORIZON)
    axis.plot(history, past[-72:, 0], color="gray", label="past 3 days")
    axis.plot(ahead, future[:, 0], color="black", label="actual")
    axis.plot(ahead, naive[:, 0], "--", label="seasonal naive")
    axis.plot(ahead, forecast[:, 0], label="keras_tfm forecaster")
    axis.set_xlabel("hours from the forecast start")
    axis.legend(loc="upper left")
    figure.tight_layout()
    return figure


def main():
    args = parse_arguments(
        __doc__.splitlines()[0],
        epochs=20,
        csv={"default": None, "help": "CSV file, one column per variable"},
    )
    series = (
        read_csv(args.csv)
        if args.csv
        else generated_series(24 * 7 * 80, args.seed)
    )
    split = int(len(series) * 0.8)
    train, test = series[:split], series[split - INPUT_LENGTH :]
    stride = 24 if args.quick else 4
    train_x, train_y = make_windows(train, INPUT_LENGTH, HORIZON, stride)
    test_x, test_y = make_windows(test, INPUT_LENGTH, HORIZON, HORIZON)
    # The model learns what the seasonal naive forecast gets wrong (noise,
    # the trend, the weekly shape), which is easier than the whole signal.
    scale = train.std(axis=0) + 1e-8
    test_past, test_future = test_x, test_y
    train_x, train_y = to_model_space(train_x, train_y, scale)
    test_x, test_y = to_model_space(test_x, test_y, scale)
    print(
        f"{len(train_x)} training windows, {len(test_x)} test windows, "
        f"{series.shape[1]} variable(s)"
    )

    model = models.forecaster(
        input_length=INPUT_LENGTH,
        horizon=HORIZON,
        num_features=series.shape[1],
        num_layers=1 if args.quick else 2,
        embed_dim=32,
        num_heads=2,
        ff_dim=64,
        dropout=0.1,
    )
    steps = args.epochs * int(np.ceil(len(train_x) / 64))
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(1e-3, steps, alpha=0.05)
        ),
        loss="mse",
        metrics=["mae"],
    )
    model.fit(
        train_x,
        train_y,
        validation_data=(test_x, test_y),
        epochs=args.epochs,
        batch_size=64,
        callbacks=training_callbacks(args),
        verbose=progress_verbosity(),
    )

    correction = model.predict(test_x, verbose=0) * scale
    forecast = seasonal_naive(test_past) + correction
    errors = {
        "keras_tfm forecaster": np.abs(forecast - test_future).mean(),
        "seasonal naive (same hours last week)": np.abs(
            seasonal_naive(test_past) - test_future
        ).mean(),
        "daily naive (same hours yesterday)": np.abs(
            test_past[:, -HORIZON:] - test_future
        ).mean(),
    }
    figure = plot_forecast(
        test_past[-1],
        test_future[-1],
        forecast[-1],
        seasonal_naive(test_past)[-1],
    )
    save_figure(figure, args.output_dir, "forecast")
    print("\nMean absolute error of the next-24-hour forecast (test weeks):")
    for name, error in errors.items():
        print(f"  {name:40s} {error:.3f}")


if __name__ == "__main__":
    main()

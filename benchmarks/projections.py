"""One joined query/key/value matmul against three, in keras_tfm's training.

Self-attention can project queries, keys and values with one matmul over
the three kernels joined (what keras_tfm does on PyTorch) or with the three
projection layers (what it does on JAX and TensorFlow). For the current
KERAS_BACKEND this builds `benchmarks.train_step`'s encoder classifier
(keras_tfm, 4 layers, 4 heads, ReLU, post-norm) once per way and times their
training steps alternately in one process, for each model size given.

    KERAS_BACKEND=torch python -m benchmarks.projections
    KERAS_BACKEND=tensorflow python -m benchmarks.projections \\
        --shapes 32x16x2 --dropouts 0
"""

import argparse
import statistics
from unittest import mock

import keras

from benchmarks.attention import parse_shapes
from benchmarks.train_step import build, random_batch, time_steps
from keras_tfm.layers import kernels

SHAPES = [(32, 16, 2), (256, 128, 8)]  # width, sequence, batch


def runner(cell, joined):
    """A training step of `cell`'s model with the projections `joined` or
    not; the choice is made while the step runs, so a compiled step
    traces it and an eager one reads it each call."""
    model = build("keras_tfm", cell)
    x, y = random_batch(cell)

    def step():
        with mock.patch.object(
            kernels, "fuses_projections", lambda size: joined
        ):
            model.train_on_batch(x, y)

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        default=SHAPES,
        help="width x sequence x batch, comma-separated",
    )
    parser.add_argument("--dropouts", default="0,0.1")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    print(f"\nbackend: {keras.backend.backend()}")
    print("| width | seq | batch | dropout | joined ms | three ms "
          "| three/joined |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for width, seq, batch in args.shapes:
        for dropout in map(float, args.dropouts.split(",")):
            cell = {
                **{"layers": 4, "width": width, "heads": 4, "ff": 4 * width},
                **{"batch": batch, "seq": seq, "activation": "relu"},
                **{"dropout": dropout, "norm": "post", "jit_compile": "auto"},
            }
            steps = {joined: runner(cell, joined) for joined in (True, False)}
            timings = {joined: [] for joined in steps}
            for step in steps.values():
                step()  # compile and warm up
            for _ in range(args.repeats):
                for joined, step in steps.items():
                    timings[joined].append(time_steps(step, args.steps))
            ms = {j: 1000 * statistics.median(t) for j, t in timings.items()}
            print(f"| {width} | {seq} | {batch} | {dropout} "
                  f"| {ms[True]:.2f} | {ms[False]:.2f} "
                  f"| {ms[False] / ms[True]:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()

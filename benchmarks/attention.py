"""Which attention implementation is faster on this machine and backend?

Times `keras.ops.dot_product_attention` (the backend's fused kernel where it
has one) against the explicit einsum + float32 softmax of
`keras_tfm.layers.kernels.attention_with_scores`, forward and backward,
compiled as the backend's `model.fit` would run it, on the same inputs in the
same process. keras_tfm uses its result to pick a default per device.

    KERAS_BACKEND=jax python -m benchmarks.attention
    KERAS_BACKEND=torch python -m benchmarks.attention \\
        --precision mixed_bfloat16 --shapes 32x128x4x64,8x512x4x64
"""

import argparse
import statistics
import time

import keras
import numpy as np

from keras_tfm.layers.kernels import attention_with_scores

SHAPES = [  # batch, length, heads, head_dim
    (32, 64, 4, 32),
    (32, 128, 4, 64),
    (64, 168, 4, 8),
    (8, 512, 8, 64),
]


def fused(query, key, value):
    return keras.ops.dot_product_attention(query, key, value, is_causal=True)


def explicit(query, key, value):
    length = query.shape[1]
    mask = np.tril(np.ones((length, length), bool))[None, None]
    return attention_with_scores(query, key, value, mask)[0]


def parse_shapes(text):
    """`"32x128x4x64,8x512x8x64"` -> `[(32, 128, 4, 64), (8, 512, 8, 64)]`."""
    return [tuple(map(int, shape.split("x"))) for shape in text.split(",")]


def training_model(attention, shape):
    """Projection + attention + loss, so backward passes are timed too."""
    inputs = keras.Input(shape[1:])
    query = keras.layers.Dense(shape[3])(inputs)
    outputs = keras.layers.Lambda(lambda q: attention(q, q, q))(query)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--precision", default="float32", help="a Keras dtype policy"
    )
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        default=SHAPES,
        help="batch x length x heads x head_dim, comma-separated",
    )
    args = parser.parse_args()
    keras.config.set_dtype_policy(args.precision)
    print(f"\nbackend: {keras.backend.backend()}, device: "
          f"{keras.ops.zeros(()).device}, {args.precision}")  # fmt: skip
    print("| batch, length, heads, head_dim | fused ms | explicit ms | "
          "explicit speed-up |")  # fmt: skip
    print("|---|---|---|---|")
    for shape in args.shapes:
        data = np.random.default_rng(0).normal(size=shape).astype("float32")
        models = {
            name: training_model(attention, shape)
            for name, attention in (("fused", fused), ("explicit", explicit))
        }
        timings = {name: [] for name in models}
        for model in models.values():
            model.train_on_batch(data, data)  # compile and warm up
        for _ in range(args.repeats):
            for name, model in models.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    model.train_on_batch(data, data)
                timings[name].append((time.perf_counter() - start) / args.steps)
        ms = {name: 1000 * statistics.median(t) for name, t in timings.items()}
        print(f"| {shape} | {ms['fused']:.1f} | {ms['explicit']:.1f} | "
              f"{ms['fused'] / ms['explicit']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()

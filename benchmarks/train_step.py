"""Training and inference speed: keras_tfm vs keras-hub (vs torch.nn).

For the current KERAS_BACKEND, builds the same encoder classifier twice in
one process, from keras_tfm's `PositionalEmbedding` + `EncoderBlock` and from
keras-hub's `TokenAndPositionEmbedding` + `TransformerEncoder` (same
configuration, same parameter count, checked), and times them alternately:
warm-up excluded, median over repetitions. On the torch backend a plain
`torch.nn.TransformerEncoder` of the same configuration, trained with the
same optimizer, adds a third row. Model-FLOPs utilisation is measured
against this machine's matrix-multiply peak in the row's compute dtype
(float32 or bfloat16), measured in the same run. `--batch` overrides the
configs' batch size (a GPU needs more than 32 sequences to fill).

    KERAS_BACKEND=jax python -m benchmarks.train_step
    KERAS_BACKEND=torch python -m benchmarks.train_step --configs small
"""

import argparse
import statistics
import time

import keras
import keras_hub
import numpy as np

from keras_tfm import EncoderBlock, PositionalEmbedding

CONFIGS = {
    "small": {"layers": 2, "width": 128, "heads": 4, "ff": 512, "seq": 64,
              "batch": 32},
    "bert_small": {"layers": 4, "width": 256, "heads": 4, "ff": 1024,
                   "seq": 128, "batch": 32},
}  # fmt: skip
VOCAB = 8192
PEAK_DTYPES = ("float32", "bfloat16")


def devices():
    """This backend's devices (Keras's torch backend cannot list them)."""
    if keras.backend.backend() == "torch":
        import torch

        return ["cuda:0" if torch.cuda.is_available() else "cpu:0"]
    return keras.distribution.list_devices()


def on_accelerator():
    return not all(device.lower().startswith("cpu") for device in devices())


def matmul_peak_flops(dtype, repeats=5):
    """Best matrix-multiply throughput of this backend in `dtype`, FLOP/s."""
    # Large enough that a GPU's launch overhead is negligible; small enough
    # that a CPU takes a fraction of a second.
    size = 8192 if on_accelerator() else 2048
    a = keras.random.normal((size, size), dtype=dtype)
    b = keras.random.normal((size, size), dtype=dtype)

    def multiply():
        # Summing on the device keeps the transfer to the host to one number
        # (in float32: TensorFlow cannot hand NumPy a bfloat16 scalar).
        total = keras.ops.sum(keras.ops.matmul(a, b))
        keras.ops.convert_to_numpy(keras.ops.cast(total, "float32"))

    multiply()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        multiply()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def build(library, config, jit_compile):
    tokens = keras.Input((config["seq"],), dtype="int32")
    if library == "keras_tfm":
        x = PositionalEmbedding(VOCAB, config["seq"], config["width"])(tokens)
        for _ in range(config["layers"]):
            x = EncoderBlock(config["heads"], config["ff"], activation="gelu")(
                x
            )
    else:
        x = keras_hub.layers.TokenAndPositionEmbedding(
            VOCAB, config["seq"], config["width"]
        )(tokens)
        for _ in range(config["layers"]):
            x = keras_hub.layers.TransformerEncoder(
                config["ff"],
                config["heads"],
                dropout=0.1,
                activation="gelu",
                layer_norm_epsilon=1e-5,
            )(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(tokens, keras.layers.Dense(2)(x))
    model.compile(
        jit_compile=jit_compile,
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def model_flops(config, training):
    """Matmul FLOPs of one step: weights plus attention scores and mixing."""
    tokens = config["batch"] * config["seq"]
    width, layers = config["width"], config["layers"]
    weights = layers * (4 * width * width + 2 * width * config["ff"])
    attention = layers * 2 * config["seq"] * width  # per token, QK and AV
    forward = 2 * tokens * (weights + attention)
    return 3 * forward if training else forward


def time_steps(step, steps):
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def keras_runner(model, x, y, training):
    if training:
        return lambda: model.train_on_batch(x, y)
    return lambda: model.predict_on_batch(x)


def torch_runner(config, x, y, training):
    """The same classifier from torch.nn, trained with torch's Adam."""
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            width = config["width"]
            self.tokens = torch.nn.Embedding(VOCAB, width)
            self.positions = torch.nn.Parameter(
                torch.zeros(config["seq"], width)
            )
            layer = torch.nn.TransformerEncoderLayer(
                width, config["heads"], config["ff"], dropout=0.1,
                activation="gelu", batch_first=True,
            )  # fmt: skip
            self.encoder = torch.nn.TransformerEncoder(
                layer, config["layers"], enable_nested_tensor=False
            )
            self.head = torch.nn.Linear(width, 2)

        def forward(self, tokens):
            hidden = self.encoder(self.tokens(tokens) + self.positions)
            return self.head(hidden.mean(dim=1))

    # The device Keras's torch backend places its tensors on.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = Classifier().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    tokens = torch.as_tensor(x, dtype=torch.long, device=device)
    labels = torch.as_tensor(y, dtype=torch.long, device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step():
        model.train()
        optimizer.zero_grad()
        loss = loss_fn(model(tokens), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    def predict_step():
        model.eval()
        with torch.no_grad():
            return model(tokens).cpu().numpy()

    parameters = sum(p.numel() for p in model.parameters())
    return (train_step if training else predict_step), parameters


def random_batch(config):
    """`(tokens, labels)`: one batch of `config`'s shape, the same each call."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, VOCAB, (config["batch"], config["seq"]), dtype="int32")
    y = rng.integers(0, 2, (config["batch"],), dtype="int32")
    return x, y


def benchmark(config, precision, training, options, peaks):
    keras.config.set_dtype_policy(precision)
    peak = peaks[keras.config.dtype_policy().compute_dtype]
    x, y = random_batch(config)
    runners, compile_seconds, parameters = {}, {}, {}
    for library in ("keras-hub", "keras_tfm"):
        model = build(library, config, options.jit_compile)
        runners[library] = keras_runner(model, x, y, training)
        parameters[library] = model.count_params()
        start = time.perf_counter()
        runners[library]()
        compile_seconds[library] = time.perf_counter() - start
    if parameters["keras-hub"] != parameters["keras_tfm"]:
        raise AssertionError(f"parameter counts differ: {parameters}")
    if keras.backend.backend() == "torch" and precision == "float32":
        runner, count = torch_runner(config, x, y, training)
        runners["torch.nn"] = runner
        start = time.perf_counter()
        runner()
        compile_seconds["torch.nn"] = time.perf_counter() - start
        # torch.nn adds no parameters beyond the same layers' weights.
        parameters["torch.nn"] = count
    timings = {library: [] for library in runners}
    for _ in range(options.repeats):  # alternate: drift hits every library
        for library, runner in runners.items():
            timings[library].append(time_steps(runner, options.steps))
    seconds = {lib: statistics.median(t) for lib, t in timings.items()}
    flops = model_flops(config, training)
    keras.config.set_dtype_policy("float32")
    return {
        "config": config["name"],
        "precision": precision,
        "mode": "train" if training else "infer",
        "ms": {lib: 1000 * s for lib, s in seconds.items()},
        "compile": compile_seconds,
        "tokens_per_s": config["batch"] * config["seq"] / seconds["keras_tfm"],
        "mfu": flops / seconds["keras_tfm"] / peak,
        "parameters": parameters,
    }


def print_table(rows, peaks, jit_compile):
    backend = keras.backend.backend()
    measured = ", ".join(f"{d} {f / 1e12:.2f}" for d, f in peaks.items())
    print(f"\nbackend: {backend}; devices: "
          f"{', '.join(devices())}; jit_compile: {jit_compile}; matmul peak "
          f"measured (TFLOP/s): {measured}")  # fmt: skip
    header = ("| config | precision | mode | keras-hub ms | keras_tfm ms | "
              "hub/tfm | torch.nn ms | tokens/s | compile s (hub/tfm) | "
              "MFU |")  # fmt: skip
    print(header)
    print("|---" * 10 + "|")
    for row in rows:
        ms, compile_s = row["ms"], row["compile"]
        torch_ms = f"{ms['torch.nn']:.1f}" if "torch.nn" in ms else "-"
        print(
            f"| {row['config']} | {row['precision']} | {row['mode']} "
            f"| {ms['keras-hub']:.1f} | {ms['keras_tfm']:.1f} "
            f"| {ms['keras-hub'] / ms['keras_tfm']:.2f}x | {torch_ms} "
            f"| {row['tokens_per_s']:,.0f} "
            f"| {compile_s['keras-hub']:.1f} / {compile_s['keras_tfm']:.1f} "
            f"| {row['mfu']:.0%} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small,bert_small")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, help="overrides the configs'")
    parser.add_argument(
        "--jit-compile",
        default="auto",
        type=lambda value: {"true": True, "false": False}.get(value, value),
        help="model.compile's jit_compile: auto (default), true or false",
    )
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    peaks = {dtype: matmul_peak_flops(dtype) for dtype in PEAK_DTYPES}
    rows = []
    for name in args.configs.split(","):
        config = {**CONFIGS[name], "name": name}
        if args.batch:
            config.update(batch=args.batch, name=f"{name}, batch {args.batch}")
        for precision in args.precisions.split(","):
            rows.append(benchmark(config, precision, True, args, peaks))
        rows.append(benchmark(config, "float32", False, args, peaks))
        # A partial table, in case of interruption.
        print_table(rows, peaks, args.jit_compile)
    print_table(rows, peaks, args.jit_compile)


if __name__ == "__main__":
    main()

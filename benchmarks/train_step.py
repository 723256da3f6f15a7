"""Training speed over a grid of configurations: keras_tfm vs keras-hub.

For the current KERAS_BACKEND, builds the same encoder classifier twice in
one process, from keras_tfm's `PositionalEmbedding` + `EncoderBlock` and from
keras-hub's `TokenAndPositionEmbedding` + `TransformerEncoder` (same
configuration, same parameter count, checked), and times their training
steps alternately: warm-up excluded, median over repetitions. It does so for
every cell of a grid: activation (relu, gelu, swiglu), dropout (0, 0.1),
post- or pre-norm, sequence length (128, 512), precision (float32,
mixed_bfloat16) and `jit_compile` (auto, True); each axis is a flag, so a
part of the grid can be run. keras-hub's encoder has no SwiGLU, so swiglu
cells time keras_tfm alone. On the torch backend a plain
`torch.nn.TransformerEncoder` of the same configuration, trained with the
same optimizer, adds a column (float32, relu and gelu). Model-FLOPs
utilisation is measured against this machine's matrix-multiply peak in the
cell's compute dtype, measured in the same run. The last lines give the
range of keras-hub / keras_tfm over the cells and how many cells meet the
targets: 1.2x keras-hub, and 55% MFU in float32.

    KERAS_BACKEND=jax python -m benchmarks.train_step        # the whole grid
    KERAS_BACKEND=torch python -m benchmarks.train_step --seqs 128 \\
        --precisions float32 --jit-compile auto --batch 8
"""

import argparse
import itertools
import statistics
import time

import keras
import keras_hub
import numpy as np

from keras_tfm import EncoderBlock, PositionalEmbedding

# BERT-small; `--layers`, `--width`, `--heads`, `--ff` and `--batch` change it.
MODEL = {"layers": 4, "width": 256, "heads": 4, "ff": 1024, "batch": 32}
GRID = {
    "activation": ["relu", "gelu", "swiglu"],
    "dropout": [0.0, 0.1],
    "norm": ["post", "pre"],
    "seq": [128, 512],
    "precision": ["float32", "mixed_bfloat16"],
    "jit_compile": ["auto", True],
}
VOCAB = 8192
PEAK_DTYPES = ("float32", "bfloat16")
# The targets the benchmark reports against (not asserted anywhere).
TARGET_RATIO = 1.2
TARGET_MFU = 0.55


def devices():
    """This backend's devices (Keras's torch backend cannot list them)."""
    if keras.backend.backend() == "torch":
        import torch

        return ["cuda:0" if torch.cuda.is_available() else "cpu:0"]
    return keras.distribution.list_devices()


def on_accelerator():
    return not all(device.lower().startswith("cpu") for device in devices())


def matmul_peak_flops(dtype, repeats=5):
    """Best matrix-multiply throughput of this backend in `dtype`, FLOP/s.

    The size doubles from 256 until one product takes a tenth of a second,
    up to 8192 on an accelerator (where launch overhead must be negligible)
    and 2048 on a CPU: a CPU without fast bfloat16 products (2048 takes a
    minute in PyTorch's bfloat16 on some) is measured in a second.
    """
    largest = 8192 if on_accelerator() else 2048
    size = 256
    seconds = _best_product_time(size, dtype, repeats)
    while seconds < 0.1 and size < largest:
        size *= 2
        seconds = _best_product_time(size, dtype, repeats)
    return 2 * size**3 / seconds


def _best_product_time(size, dtype, repeats):
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
    return best


def build(library, cell):
    tokens = keras.Input((cell["seq"],), dtype="int32")
    norm_first = cell["norm"] == "pre"
    if library == "keras_tfm":
        x = PositionalEmbedding(VOCAB, cell["seq"], cell["width"])(tokens)
        for _ in range(cell["layers"]):
            x = EncoderBlock(
                cell["heads"],
                cell["ff"],
                dropout=cell["dropout"],
                activation=cell["activation"],
                norm_first=norm_first,
            )(x)
    else:
        x = keras_hub.layers.TokenAndPositionEmbedding(
            VOCAB, cell["seq"], cell["width"]
        )(tokens)
        for _ in range(cell["layers"]):
            x = keras_hub.layers.TransformerEncoder(
                cell["ff"],
                cell["heads"],
                dropout=cell["dropout"],
                activation=cell["activation"],
                normalize_first=norm_first,
                layer_norm_epsilon=1e-5,
            )(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(tokens, keras.layers.Dense(2)(x))
    model.compile(
        jit_compile=cell["jit_compile"],
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def model_flops(cell):
    """Matmul FLOPs of one training step: weights, attention scores and
    mixing; backward counted as twice the forward."""
    tokens = cell["batch"] * cell["seq"]
    width, layers = cell["width"], cell["layers"]
    ff_matrices = 3 if cell["activation"] == "swiglu" else 2
    weights = layers * (4 * width * width + ff_matrices * width * cell["ff"])
    attention = layers * 2 * cell["seq"] * width  # per token, QK and AV
    return 3 * 2 * tokens * (weights + attention)


def time_steps(step, steps):
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def torch_runner(cell, x, y):
    """The same classifier from torch.nn, trained with torch's Adam."""
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            width = cell["width"]
            self.tokens = torch.nn.Embedding(VOCAB, width)
            self.positions = torch.nn.Parameter(torch.zeros(cell["seq"], width))
            layer = torch.nn.TransformerEncoderLayer(
                width, cell["heads"], cell["ff"], dropout=cell["dropout"],
                activation=cell["activation"], batch_first=True,
                norm_first=cell["norm"] == "pre",
            )  # fmt: skip
            self.encoder = torch.nn.TransformerEncoder(
                layer, cell["layers"], enable_nested_tensor=False
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

    return train_step


def random_batch(cell):
    """`(tokens, labels)`: one batch of `cell`'s shape, the same each call."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, VOCAB, (cell["batch"], cell["seq"]), dtype="int32")
    y = rng.integers(0, 2, (cell["batch"],), dtype="int32")
    return x, y


def runners_for(cell):
    """`{library: train step}` for the libraries that can build `cell`."""
    x, y = random_batch(cell)
    runners, parameters = {}, {}
    libraries = ["keras_tfm"]
    if cell["activation"] != "swiglu":  # keras-hub's encoder has no SwiGLU
        libraries.insert(0, "keras-hub")
    for library in libraries:
        model = build(library, cell)
        runners[library] = lambda model=model: model.train_on_batch(x, y)
        parameters[library] = model.count_params()
    if len(set(parameters.values())) > 1:
        raise AssertionError(f"parameter counts differ: {parameters}")
    if (
        keras.backend.backend() == "torch"
        and cell["precision"] == "float32"
        and cell["activation"] != "swiglu"
    ):
        runners["torch.nn"] = torch_runner(cell, x, y)
    return runners


def benchmark(cell, options, peaks):
    keras.config.set_dtype_policy(cell["precision"])
    peak = peaks[keras.config.dtype_policy().compute_dtype]
    runners = runners_for(cell)
    compile_seconds = {}
    for library, runner in runners.items():
        compile_seconds[library] = time_steps(runner, 1)
    timings = {library: [] for library in runners}
    for _ in range(options.repeats):  # alternate: drift hits every library
        for library, runner in runners.items():
            timings[library].append(time_steps(runner, options.steps))
    keras.config.set_dtype_policy("float32")
    ms = {lib: 1000 * statistics.median(t) for lib, t in timings.items()}
    return {
        **cell,
        "ms": ms,
        "compile": compile_seconds,
        "mfu": model_flops(cell) / (ms["keras_tfm"] / 1000) / peak,
    }


def hub_over_tfm(row):
    """keras-hub's step time over keras_tfm's, or None (no keras-hub row)."""
    ms = row["ms"]
    return ms["keras-hub"] / ms["keras_tfm"] if "keras-hub" in ms else None


def hub_over_tfm_ratios(rows):
    """`hub_over_tfm` of the rows that have a keras-hub time."""
    return [ratio for ratio in map(hub_over_tfm, rows) if ratio is not None]


def print_table(rows, peaks):
    measured = ", ".join(f"{d} {f / 1e12:.2f}" for d, f in peaks.items())
    model = ", ".join(f"{key} {rows[0][key]}" for key in MODEL)
    print(f"\nbackend: {keras.backend.backend()}; devices: "
          f"{', '.join(devices())}; {model}; matmul peak measured "
          f"(TFLOP/s): {measured}")  # fmt: skip
    print("| activation | dropout | norm | seq | precision | jit_compile "
          "| keras-hub ms | keras_tfm ms | hub/tfm | torch.nn ms "
          "| compile s (tfm) | MFU |")  # fmt: skip
    print("|---" * 12 + "|")
    for row in rows:
        ms = row["ms"]
        hub = f"{ms['keras-hub']:.1f}" if "keras-hub" in ms else "-"
        ratio = hub_over_tfm(row)
        ratio = "-" if ratio is None else f"{ratio:.2f}x"
        torch_ms = f"{ms['torch.nn']:.1f}" if "torch.nn" in ms else "-"
        print(
            f"| {row['activation']} | {row['dropout']} | {row['norm']} "
            f"| {row['seq']} | {row['precision']} | {row['jit_compile']} "
            f"| {hub} | {ms['keras_tfm']:.1f} | {ratio} | {torch_ms} "
            f"| {row['compile']['keras_tfm']:.1f} | {row['mfu']:.0%} |"
        )
    ratios = hub_over_tfm_ratios(rows)
    if ratios:
        print(
            f"hub/tfm over {len(ratios)} cells: min {min(ratios):.2f}x, "
            f"median {statistics.median(ratios):.2f}x, "
            f"max {max(ratios):.2f}x"
        )


def print_targets(rows):
    """How many cells meet the speed targets."""
    ratios = hub_over_tfm_ratios(rows)
    fast = sum(ratio >= TARGET_RATIO for ratio in ratios)
    print(f"target keras_tfm >= {TARGET_RATIO}x keras-hub: {fast} of "
          f"{len(ratios)} cells")  # fmt: skip
    float32 = [row["mfu"] for row in rows if row["precision"] == "float32"]
    busy = sum(mfu >= TARGET_MFU for mfu in float32)
    print(f"target MFU >= {TARGET_MFU:.0%} of the float32 peak: {busy} of "
          f"{len(float32)} float32 cells")  # fmt: skip


def axis(kind):
    def parse(text):
        return [kind(value) for value in text.split(",")]

    return parse


def jit_compile_value(text):
    return {"true": True, "false": False}.get(text.lower(), text)


def add_model_arguments(parser):
    """`--layers`, `--width`, `--heads`, `--ff`, `--batch` (MODEL's keys)."""
    for name, value in MODEL.items():
        parser.add_argument(f"--{name}", type=int, default=value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    flags = {
        "activation": ("--activations", str),
        "dropout": ("--dropouts", float),
        "norm": ("--norms", str),
        "seq": ("--seqs", int),
        "precision": ("--precisions", str),
        "jit_compile": ("--jit-compile", jit_compile_value),
    }
    for name, (flag, kind) in flags.items():
        parser.add_argument(
            flag,
            dest=name,
            type=axis(kind),
            default=GRID[name],
            help=f"comma-separated; default {','.join(map(str, GRID[name]))}",
        )
    add_model_arguments(parser)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    peaks = {dtype: matmul_peak_flops(dtype) for dtype in PEAK_DTYPES}
    model = {name: getattr(args, name) for name in MODEL}
    rows = []
    for values in itertools.product(*(getattr(args, name) for name in GRID)):
        cell = {**model, **dict(zip(GRID, values, strict=True))}
        rows.append(benchmark(cell, args, peaks))
        print_table(rows[-1:], peaks)  # each cell as it comes
    print_table(rows, peaks)
    print_targets(rows)


if __name__ == "__main__":
    main()

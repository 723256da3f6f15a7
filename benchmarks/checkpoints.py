"""Checkpoints at real size: loading, memory, first call and decoding speed.

Makes checkpoints with the published configs of SmolLM2-135M, Qwen2.5-0.5B
and Llama-3.2-1B (random weights, offline, with `transformers`; saved in
`--checkpoint-dtype` under `--cache-dir` and reused by later runs), then,
each in a fresh process, measures for every checkpoint and `--dtypes` entry:

- `transformers` (PyTorch): `from_pretrained`, then `generate`; with
  `--torch-compile` also its static cache with `torch.compile`;
- keras_tfm on each of `--backends` (`KERAS_BACKEND` set in the process's
  environment): `interop.from_huggingface(directory, dtype=...)`, then
  `generation.generate`; with `--int8`, also in a process of its own,
  the same with `model.quantize("int8")` after loading; with
  `--compilation-cache` (JAX, TensorFlow), the keras_tfm process fills an
  empty on-disk cache of compiled XLA programs (JAX's
  `jax_compilation_cache_dir`, TensorFlow's
  `--tf_xla_persistent_cache_directory`) and a second process, the
  warm-cache row, starts from it: the first call a user waits for once
  the programs have been compiled on this machine before.

Each row gives the load time (quantizing included for int8 rows), the peak
resident memory after loading, the resident memory then, the first
greedy call at batch 1 (compilation included: the user's wait for the first
token), tokens/s after it at batch 1 and 8 (a `--prompt-length` prompt,
`--new-tokens` new tokens, greedy, no end token), keras_tfm's ratios to
`transformers` at the same dtype, and how many of the batch-1 tokens equal
`transformers`' at the same dtype (int8 rows: the unquantized model's).
Under each table, the issue's targets per keras_tfm row: load time at most
`transformers`', peak memory at most 1.2x, first call at most 5 s, tokens/s
at least 1.5x at batch 1 and 8 (set at SmolLM2-135M's size).

    python -m benchmarks.checkpoints --backends jax,torch --models smollm2
    python -m benchmarks.checkpoints --quick --int8 --torch-compile
    python -m benchmarks.checkpoints --backends jax --compilation-cache
"""

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# config.json of each published checkpoint, less its tokenizer-only fields.
CONFIGS = {
    "smollm2": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": 30,
        "hidden_size": 576,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 8192,
        "hidden_act": "silu",
        "initializer_range": 0.041666666666666664,
        "bos_token_id": 0,
        "eos_token_id": 0,
    },
    "qwen2.5": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "num_hidden_layers": 24,
        "hidden_size": 896,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 32768,
        "sliding_window": 32768,
        "max_window_layers": 24,
        "use_sliding_window": False,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
    },
    "llama3.2": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": 16,
        "hidden_size": 2048,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "intermediate_size": 8192,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 131072,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    },
}
NAMES = {
    "smollm2": "SmolLM2-135M",
    "qwen2.5": "Qwen2.5-0.5B",
    "llama3.2": "Llama-3.2-1B",
}
# --quick: each family at 2 layers, width 64, with its own options.
QUICK = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 512,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
BATCHES = (1, 8)
# The targets, keras_tfm against transformers at the same dtype.
TARGET_LOAD = 1.0
TARGET_PEAK = 1.2
TARGET_FIRST_CALL_S = 5.0
TARGET_SPEED = 1.5
RESULT_PREFIX = "RESULT "
COMPILED = "transformers static+compile"
INT8 = "keras_tfm int8"
WARM = "keras_tfm warm cache"
# Each backend's own on-disk cache of compiled XLA programs, switched on by
# the environment of a fresh process (PyTorch's traced steps have none).
COMPILATION_CACHES = {
    "jax": lambda directory: {"JAX_COMPILATION_CACHE_DIR": directory},
    "tensorflow": lambda directory: {
        "TF_XLA_FLAGS": os.environ.get("TF_XLA_FLAGS", "")
        + f" --tf_xla_persistent_cache_directory={directory}"
    },
}
HEADER = (
    "library", "backend", "dtype", "load s", "peak MB", "RSS MB",
    "first call s", "tok/s b1", "tok/s b8", "load/hf", "peak/hf",
    "b1/hf", "b8/hf", "agree",
)  # fmt: skip


def checkpoint_config(name, quick):
    """The config.json the checkpoint `name` is made with."""
    config = dict(CONFIGS[name])
    if quick:
        config.update(QUICK)
        if "head_dim" in config:
            config["head_dim"] = (
                QUICK["hidden_size"] // QUICK["num_attention_heads"]
            )
    return config


def make_checkpoint(name, args):
    """The checkpoint's directory, written once with random weights."""
    tag = "-quick" if args.quick else ""
    directory = os.path.join(
        args.cache_dir, f"{name}{tag}-{args.checkpoint_dtype}"
    )
    if os.path.exists(os.path.join(directory, "config.json")):
        return directory
    import torch
    import transformers

    torch.manual_seed(0)
    config = checkpoint_config(name, args.quick)
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(**config),
        dtype=getattr(torch, args.checkpoint_dtype),
    )
    os.makedirs(args.cache_dir, exist_ok=True)
    # Written aside and renamed, so that an interrupted run leaves no
    # half-written checkpoint to be reused.
    partial = tempfile.mkdtemp(dir=args.cache_dir)
    model.save_pretrained(partial)
    del model
    gc.collect()
    os.replace(partial, directory)
    return directory


def peak_mb():
    """The process's peak resident memory so far (ru_maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def resident_mb():
    """The process's resident memory now (Linux), else None."""
    gc.collect()
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def prompts(config, length):
    """The prompts every process decodes: `(8, length)` random ids."""
    rng = np.random.default_rng(0)
    return rng.integers(1, config["vocab_size"], (max(BATCHES), length))


def time_generation(generate, config, args):
    """First call at batch 1 (compilation included), then tokens/s at each
    batch after a first call at that batch, and the batch-1 tokens."""
    tokens = prompts(config, args.prompt_length)

    def seconds(batch):
        start = time.perf_counter()
        output = generate(tokens[:batch])
        return time.perf_counter() - start, output

    first_call, output = seconds(1)
    result = {"first_call": first_call, "tokens": output[0].tolist()}
    for batch in BATCHES:
        if batch != 1:
            seconds(batch)
        median = statistics.median(
            seconds(batch)[0] for _ in range(args.repeats)
        )
        result[f"b{batch}"] = batch * args.new_tokens / median
    return result


def run_transformers(args, compiled):
    """transformers' row: eager, or its static cache and `torch.compile`."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(args.checkpoint)
    # Imported before the clock starts, as keras_tfm is.
    model_class = getattr(transformers, config.architectures[0])
    start = time.perf_counter()
    model = model_class.from_pretrained(
        args.checkpoint, dtype=getattr(torch, args.dtype)
    )
    load = time.perf_counter() - start
    result = {"load": load, "peak_mb": peak_mb(), "rss_mb": resident_mb()}
    # Random weights end anywhere: every row decodes all its tokens.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    options = {}
    if compiled:
        compile_config = transformers.CompileConfig(mode="default")
        compile_config._compile_all_devices = True  # it skips CPUs otherwise
        options = {
            "cache_implementation": "static",
            "compile_config": compile_config,
        }

    @torch.no_grad()
    def generate(tokens):
        tokens = torch.from_numpy(tokens)
        output = model.generate(
            tokens,
            attention_mask=torch.ones_like(tokens),
            do_sample=False,
            max_new_tokens=args.new_tokens,
            **options,
        )
        return output[:, tokens.shape[1] :].numpy()

    result.update(time_generation(generate, config.to_dict(), args))
    return result


def run_keras_tfm(args, int8):
    """keras_tfm's row on this process's backend, quantized if `int8`."""
    from keras_tfm import generation, interop

    start = time.perf_counter()
    model = interop.from_huggingface(args.checkpoint, dtype=args.dtype)
    if int8:
        model.quantize("int8")
    load = time.perf_counter() - start
    # After quantizing, the peak still holds the unquantized model: the
    # memory int8 saves is in the resident memory.
    result = {"load": load, "peak_mb": peak_mb(), "rss_mb": resident_mb()}
    with open(os.path.join(args.checkpoint, "config.json")) as file:
        config = json.load(file)

    def generate(tokens):
        return generation.generate(
            model, tokens, args.new_tokens, end_token_id=None,
            pad_token_id=None,
        )  # fmt: skip

    result.update(time_generation(generate, config, args))
    return result


def run_worker(args):
    """One row, in this process; printed as JSON for the parent."""
    if args.worker.startswith("keras_tfm"):
        result = run_keras_tfm(args, int8=args.worker == INT8)
    else:
        result = run_transformers(args, compiled=args.worker != "transformers")
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def measure(kind, backend, directory, dtype, args, environment=None):
    """Runs one worker in a fresh process: its result, or an error line.
    `environment` adds to this process's."""
    command = [
        sys.executable, "-m", "benchmarks.checkpoints", "--worker", kind,
        "--checkpoint", directory, "--dtype", dtype,
        "--new-tokens", str(args.new_tokens),
        "--prompt-length", str(args.prompt_length),
        "--repeats", str(args.repeats),
    ]  # fmt: skip
    environment = {
        **os.environ, "KERAS_BACKEND": backend, **(environment or {})
    }  # fmt: skip
    try:
        done = subprocess.run(
            command, env=environment, capture_output=True, text=True,
            timeout=args.timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"no result in {args.timeout} s"
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
    return lines[-1]


def ratio(value, reference):
    if value is None or not reference:
        return None
    return value / reference


def agreement(tokens, reference):
    if tokens is None or reference is None:
        return None
    same = sum(a == b for a, b in zip(tokens, reference, strict=True))
    return f"{same}/{len(reference)}"


def row_cells(result, reference, agree_with):
    """The row's numbers after its label, `-` where there is none."""
    hf = reference if isinstance(reference, dict) else {}
    numbers = (
        (result.get("load"), "{:.1f}"),
        (result.get("peak_mb"), "{:.0f}"),
        (result.get("rss_mb"), "{:.0f}"),
        (result.get("first_call"), "{:.1f}"),
        (result.get("b1"), "{:.1f}"),
        (result.get("b8"), "{:.1f}"),
        (ratio(result.get("load"), hf.get("load")), "{:.2f}x"),
        (ratio(result.get("peak_mb"), hf.get("peak_mb")), "{:.2f}x"),
        (ratio(result.get("b1"), hf.get("b1")), "{:.2f}x"),
        (ratio(result.get("b8"), hf.get("b8")), "{:.2f}x"),
        (agreement(result.get("tokens"), agree_with), "{}"),
    )
    return [
        "-" if value is None else form.format(value) for value, form in numbers
    ]


def target_line(label, result, reference):
    """The issue's targets for one keras_tfm row: met or missed, each."""
    if not isinstance(reference, dict):
        return f"targets, {label}: not measured (no transformers row)"
    load = result["load"] / reference["load"]
    peak = result["peak_mb"] / reference["peak_mb"]
    first = result["first_call"]
    b1 = result["b1"] / reference["b1"]
    b8 = result["b8"] / reference["b8"]
    cells = (
        ("load <= transformers'", load <= TARGET_LOAD, f"{load:.2f}x"),
        (f"peak <= {TARGET_PEAK}x", peak <= TARGET_PEAK, f"{peak:.2f}x"),
        (f"first call <= {TARGET_FIRST_CALL_S:.0f} s",
         first <= TARGET_FIRST_CALL_S, f"{first:.1f} s"),
        (f"tok/s b1 >= {TARGET_SPEED}x", b1 >= TARGET_SPEED, f"{b1:.2f}x"),
        (f"tok/s b8 >= {TARGET_SPEED}x", b8 >= TARGET_SPEED, f"{b8:.2f}x"),
    )  # fmt: skip
    return f"targets, {label}: " + "; ".join(
        f"{text}: {'met' if met else 'missed'} ({value})"
        for text, met, value in cells
    )


def print_table(name, directory, rows, args):
    """`rows`: `(library, backend, dtype, result, reference, agree_with)`."""
    size = "quick config" if args.quick else "published config"
    print(f"\n{NAMES[name]} ({size}, random {args.checkpoint_dtype} weights "
          f"in {directory}); prompt {args.prompt_length}, "
          f"{args.new_tokens} new tokens, greedy")  # fmt: skip
    print("peak MB: after loading; RSS MB: resident then; first call: batch "
          "1, compilation included; x/hf: against transformers at the same "
          "dtype; agree: batch-1 tokens equal to transformers' (int8 rows: "
          "to keras_tfm's unquantized)\n")  # fmt: skip
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    failures, targets = [], []
    for library, backend, dtype, result, reference, agree_with in rows:
        label = f"{library} {backend} {dtype}"
        if isinstance(result, dict):
            cells = row_cells(result, reference, agree_with)
            if library.startswith("keras_tfm"):
                targets.append(target_line(label, result, reference))
        else:
            cells = ["-"] * (len(HEADER) - 3)
            failures.append(f"{label} failed: {result}")
        print("| " + " | ".join([library, backend, dtype, *cells]) + " |")
    for line in (*failures, *targets):
        print(line)


def benchmark(name, args):
    directory = make_checkpoint(name, args)
    rows = []
    for dtype in args.dtypes.split(","):
        reference = measure("transformers", "torch", directory, dtype, args)
        rows.append(("transformers", "torch", dtype, reference, None, None))
        hf_tokens = tokens_of(reference)
        if args.torch_compile:
            compiled = measure(COMPILED, "torch", directory, dtype, args)
            rows.append(
                (COMPILED, "torch", dtype, compiled, reference, hf_tokens)
            )
        for backend in args.backends.split(","):
            cache = compilation_cache(backend, args)
            result = measure(
                "keras_tfm", backend, directory, dtype, args, cache
            )
            rows.append(
                ("keras_tfm", backend, dtype, result, reference, hf_tokens)
            )
            if cache:
                # A fresh process that finds the first one's programs.
                warm = measure(
                    "keras_tfm", backend, directory, dtype, args, cache
                )
                rows.append((WARM, backend, dtype, warm, reference, hf_tokens))
            if args.int8:
                quantized = measure(INT8, backend, directory, dtype, args)
                rows.append((
                    INT8, backend, dtype, quantized, reference,
                    tokens_of(result),
                ))  # fmt: skip
    print_table(name, directory, rows, args)


def compilation_cache(backend, args):
    """The environment that gives a process an empty on-disk cache of
    compiled programs, with `--compilation-cache` on a backend that has
    one; else None."""
    if not args.compilation_cache or backend not in COMPILATION_CACHES:
        return None
    return COMPILATION_CACHES[backend](tempfile.mkdtemp(prefix="xla-cache-"))


def tokens_of(result):
    return result.get("tokens") if isinstance(result, dict) else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default=",".join(CONFIGS), help="among the default"
    )
    parser.add_argument(
        "--backends", default="tensorflow,jax,torch",
        help="Keras backends, one process each",
    )  # fmt: skip
    parser.add_argument(
        "--dtypes", default="float32,bfloat16",
        help="what every library loads the checkpoint in",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint-dtype", default="bfloat16",
        choices=("bfloat16", "float32"),
        help="the dtype the random weights are saved in",
    )  # fmt: skip
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(tempfile.gettempdir(), "keras_tfm_checkpoints"),
        help="where the checkpoints are made once and reused",
    )
    parser.add_argument(
        "--new-tokens", type=int, help="per prompt; default 64, 4 with --quick"
    )
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument(
        "--repeats", type=int, default=1,
        help="timed calls after the first, per batch size (median)",
    )  # fmt: skip
    parser.add_argument(
        "--int8", action="store_true",
        help='also keras_tfm after model.quantize("int8")',
    )  # fmt: skip
    parser.add_argument(
        "--compilation-cache", action="store_true",
        help="on JAX and TensorFlow: the keras_tfm row fills an empty "
        "on-disk cache of compiled programs, and a second process (the "
        "warm-cache row) starts from it",
    )  # fmt: skip
    parser.add_argument(
        "--torch-compile", action="store_true",
        help="also transformers with its static cache and torch.compile",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help="each family at 2 layers, width 64 (for tests)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=int, default=3600, help="seconds per process"
    )
    # A measuring process, started by this script itself.
    parser.add_argument(
        "--worker", choices=("transformers", COMPILED, "keras_tfm", INT8),
        help=argparse.SUPPRESS,
    )  # fmt: skip
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args)
    if args.new_tokens is None:
        args.new_tokens = 4 if args.quick else 64
    names = args.models.split(",")
    for name in names:
        if name not in CONFIGS:
            parser.error(f"--models: unknown {name!r}, one of {list(CONFIGS)}")
    for name in names:
        benchmark(name, args)


if __name__ == "__main__":
    main()

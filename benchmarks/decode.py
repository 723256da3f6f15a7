"""How much faster is generation with the key/value cache?

Generates with `keras_tfm.generation.generate` from a small `causal_lm`,
once with the cache and once running the whole model at every step
(`use_cache=False`), in the same process on the same prompts. The first call
of each compiles the decode loop (XLA on TensorFlow and JAX; PyTorch runs
eagerly); its extra time is reported as compile time, and the later calls are
timed.

    KERAS_BACKEND=jax python -m benchmarks.decode
"""

import argparse
import statistics
import time

import keras
import numpy as np

from keras_tfm import generation, models

CONFIG = {  # a small GPT: 4 layers, width 256
    "vocab_size": 1000,
    "num_layers": 4,
    "embed_dim": 256,
    "num_heads": 4,
    "ff_dim": 1024,
}


def time_generation(model, prompts, new_tokens, use_cache, repeats):
    """`(compile seconds, median seconds per call)`."""

    def run():
        start = time.perf_counter()
        generation.generate(model, prompts, new_tokens, use_cache=use_cache)
        return time.perf_counter() - start

    first = run()
    times = [run() for _ in range(repeats)]
    median = statistics.median(times)
    return first - median, median


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    model = models.causal_lm(
        sequence_length=args.prompt_length + args.new_tokens, **CONFIG
    )
    prompts = np.random.default_rng(0).integers(
        1, CONFIG["vocab_size"], (args.batch, args.prompt_length)
    )
    results = {
        use_cache: time_generation(
            model, prompts, args.new_tokens, use_cache, args.repeats
        )
        for use_cache in (True, False)
    }
    tokens = args.batch * args.new_tokens
    print(f"\nbackend: {keras.backend.backend()}; causal_lm {CONFIG}; "
          f"batch {args.batch}, prompt {args.prompt_length}, "
          f"{args.new_tokens} new tokens; greedy")  # fmt: skip
    print("| decoding | s per call | tokens/s | compile s | speed-up |")
    print("|---|---|---|---|---|")
    for use_cache, label in ((False, "uncached"), (True, "KV cache")):
        compile_seconds, seconds = results[use_cache]
        speed_up = results[False][1] / seconds
        print(f"| {label} | {seconds:.2f} | {tokens / seconds:.0f} | "
              f"{compile_seconds:.1f} | {speed_up:.1f}x |")  # fmt: skip


if __name__ == "__main__":
    main()

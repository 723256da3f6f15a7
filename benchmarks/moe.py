"""Mixture of experts: grouped experts against all experts and a dense FFN.

For the current KERAS_BACKEND this times a training step (forward and
backward) of three models around one feed-forward layer, alternately in one
process: keras_tfm's `MixtureOfExperts` (tokens grouped by expert), the same
layer applying every expert to every token and masking by the routing
weights, and a dense `FeedForward` of the same active FLOPs (hidden width
`experts_per_token * hidden_dim`), for each number of experts and top-k.

    KERAS_BACKEND=jax python -m benchmarks.moe
    KERAS_BACKEND=torch python -m benchmarks.moe --experts 8 --top-k 2

The issue's targets: with 64 experts top-8, the layer costs at most 1.5x the
dense FFN of the same active FLOPs and at least 4x less than all experts.
"""

import argparse
import statistics

import keras
import numpy as np
from keras import ops

from benchmarks.train_step import time_steps
from keras_tfm.layers.feed_forward import FeedForward
from keras_tfm.layers.mixture_of_experts import MixtureOfExperts

# The targets the benchmark reports against (not asserted anywhere).
TARGET_CELL = (64, 8)  # experts, top-k
TARGET_OVER_DENSE = 1.5
TARGET_UNDER_ALL = 4.0


class AllExpertsMixture(MixtureOfExperts):
    """The reference: every expert on every token, weighted by the routing
    weights scattered over all experts (0 for the experts not chosen)."""

    def _run_experts(self, tokens, expert_ids, weights):
        every_expert = ops.arange(self.num_experts, dtype="int32")
        rows = ops.broadcast_to(tokens, (self.num_experts, *tokens.shape))
        outputs = self._experts(rows, every_expert)  # (experts, tokens, width)
        chosen = ops.one_hot(expert_ids, self.num_experts, dtype=weights.dtype)
        dense_weights = ops.einsum("tke,tk->et", chosen, weights)
        dense_weights = ops.cast(dense_weights, outputs.dtype)
        return ops.einsum("etw,et->tw", outputs, dense_weights)


def build(kind, args, experts, top_k):
    """A one-layer regression model around the feed-forward layer `kind`."""
    if kind == "dense FFN":
        layer = FeedForward(top_k * args.hidden, activation="swiglu")
    else:
        layer_class = (
            MixtureOfExperts if kind == "grouped" else AllExpertsMixture
        )
        layer = layer_class(
            args.hidden, num_experts=experts, experts_per_token=top_k
        )
    inputs = keras.Input((args.seq, args.width))
    model = keras.Model(inputs, layer(inputs))
    model.compile(
        optimizer="sgd", loss="mse", jit_compile=parse_jit(args.jit_compile)
    )
    return model


def parse_jit(text):
    return {"true": True, "false": False}.get(text.lower(), text)


def time_cell(args, experts, top_k):
    """Median seconds per step of each kind, timed alternately."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.seq, args.width)).astype("float32")
    steps = {}
    for kind in ("grouped", "all experts", "dense FFN"):
        model = build(kind, args, experts, top_k)
        steps[kind] = lambda model=model: model.train_on_batch(x, x)
        steps[kind]()  # compile and warm up
    timings = {kind: [] for kind in steps}
    for _ in range(args.repeats):
        for kind, step in steps.items():
            timings[kind].append(time_steps(step, args.steps))
    return {kind: statistics.median(t) for kind, t in timings.items()}


def print_targets(cells):
    """The issue's targets at 64 experts top-8, where that cell was run."""
    if TARGET_CELL not in cells:
        print(f"targets: not measured (needs --experts {TARGET_CELL[0]} "
              f"--top-k {TARGET_CELL[1]})")  # fmt: skip
        return
    seconds = cells[TARGET_CELL]
    over_dense = seconds["grouped"] / seconds["dense FFN"]
    under_all = seconds["all experts"] / seconds["grouped"]
    for text, value, met in (
        (f"grouped <= {TARGET_OVER_DENSE}x dense FFN", over_dense,
         over_dense <= TARGET_OVER_DENSE),
        (f"all experts >= {TARGET_UNDER_ALL}x grouped", under_all,
         under_all >= TARGET_UNDER_ALL),
    ):  # fmt: skip
        verdict = "met" if met else "missed"
        print(f"target at 64 experts top-8: {text}: {value:.2f}x, {verdict}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", default="8,64")
    parser.add_argument("--top-k", default="1,2,8")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--jit-compile", default="auto")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    print(f"\nbackend: {keras.backend.backend()}, width {args.width}, "
          f"expert hidden {args.hidden}, {args.batch}x{args.seq} tokens, "
          f"jit_compile={args.jit_compile}")  # fmt: skip
    print("| experts | top-k | grouped ms | all experts ms | dense FFN ms "
          "| grouped/dense | all/grouped |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    cells = {}
    for experts in map(int, args.experts.split(",")):
        for top_k in map(int, args.top_k.split(",")):
            if top_k > experts:
                continue
            ms = {
                k: 1000 * s for k, s in time_cell(args, experts, top_k).items()
            }
            cells[experts, top_k] = ms
            print(f"| {experts} | {top_k} | {ms['grouped']:.2f} "
                  f"| {ms['all experts']:.2f} | {ms['dense FFN']:.2f} "
                  f"| {ms['grouped'] / ms['dense FFN']:.2f}x "
                  f"| {ms['all experts'] / ms['grouped']:.2f}x |")  # fmt: skip
    print_targets(cells)


if __name__ == "__main__":
    main()

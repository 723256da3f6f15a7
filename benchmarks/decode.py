"""Generation speed: keras_tfm against keras-hub and against plain PyTorch.

Greedy generation of `--new-tokens` tokens after random prompts from a
4-layer, width-256 GPT (GELU, tied embeddings), in one process on the same
prompts. Rows:

- keras-hub's `GPT2CausalLM.generate` with the same sizes;
- keras_tfm without the cache (`use_cache=False`) and with it; on PyTorch
  once per `torch_step` (`eager`, `export`, `compile`);
- on PyTorch, the same decoder written in plain PyTorch (fused QKV, SDPA,
  an `index_copy_` cache), eager and `torch.compile`d: the floor.

Each row's first call (compilation, tracing) is reported as "compile s" and
the later calls are timed.

    KERAS_BACKEND=torch python -m benchmarks.decode
"""

import argparse
import statistics
import time

import keras
import keras_hub
import numpy as np

from keras_tfm import generation, models

VOCAB, LAYERS, WIDTH, HEADS, HIDDEN = 1000, 4, 256, 4, 1024


def timed(run, repeats):
    """`(compile seconds, median seconds per call)`."""

    def once():
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    first = once()
    median = statistics.median(once() for _ in range(repeats))
    return max(first - median, 0.0), median


def keras_tfm_rows(prompts, new_tokens, repeats):
    model = models.causal_lm(
        VOCAB, prompts.shape[1] + new_tokens, num_layers=LAYERS,
        embed_dim=WIDTH, num_heads=HEADS, ff_dim=HIDDEN, dropout=0.0,
    )  # fmt: skip
    modes = [("KV cache", {})]
    if keras.backend.backend() == "torch":
        modes = [
            (f"KV cache, torch_step={mode}", {"torch_step": mode})
            for mode in ("eager", "export", "compile")
        ]
    rows = {"keras_tfm uncached": {"use_cache": False}}
    rows.update({f"keras_tfm {label}": options for label, options in modes})
    return {
        label: timed(
            lambda options=options: generation.generate(
                model, prompts, new_tokens, **options
            ),
            repeats,
        )
        for label, options in rows.items()
    }


def keras_hub_row(prompts, new_tokens, repeats):
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS,
        hidden_dim=WIDTH, intermediate_dim=HIDDEN, dropout=0.0,
        max_sequence_length=prompts.shape[1] + new_tokens,
    )  # fmt: skip
    causal_lm = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    total = prompts.shape[1] + new_tokens
    token_ids = np.zeros((len(prompts), total), "int32")
    token_ids[:, : prompts.shape[1]] = prompts
    padding_mask = np.zeros_like(token_ids, bool)
    padding_mask[:, : prompts.shape[1]] = True
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    return timed(
        lambda: causal_lm.generate(inputs, stop_token_ids=None), repeats
    )


def plain_torch_rows(prompts, new_tokens, repeats):
    import torch

    decoder = PlainTorchDecoder(prompts.shape[1] + new_tokens).eval()
    step = decoder.step
    compiled = torch.compile(decoder.step)
    prompt = torch.from_numpy(prompts.astype("int64"))
    rows = {}
    for label, function in (("eager", step), ("compiled", compiled)):
        rows[f"plain PyTorch, {label}"] = timed(
            lambda function=function: decoder.generate(
                prompt, new_tokens, function
            ),
            repeats,
        )
    return rows


def _plain_torch_decoder_class():
    """Defined on first use, so that importing this module needs no torch."""
    import torch
    from torch import nn

    class Decoder(nn.Module):
        def __init__(self, max_length):
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, WIDTH)
            self.positions = nn.Embedding(max_length, WIDTH)
            self.norms = nn.ModuleList(
                nn.LayerNorm(WIDTH) for _ in range(2 * LAYERS + 1)
            )
            self.qkv = nn.ModuleList(
                nn.Linear(WIDTH, 3 * WIDTH) for _ in range(LAYERS)
            )
            self.out = nn.ModuleList(
                nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)
            )
            self.hidden = nn.ModuleList(
                nn.Linear(WIDTH, HIDDEN) for _ in range(LAYERS)
            )
            self.down = nn.ModuleList(
                nn.Linear(HIDDEN, WIDTH) for _ in range(LAYERS)
            )
            self.max_length = max_length

        def step(self, tokens, caches, index):
            """Logits of the last position; caches written in place."""
            length = tokens.shape[1]
            positions = torch.arange(length) + index
            x = self.embedding(tokens) + self.positions(positions)
            batch, head_dim = tokens.shape[0], WIDTH // HEADS
            visible = torch.arange(self.max_length)[None] <= positions[:, None]
            for layer in range(LAYERS):
                qkv = self.qkv[layer](self.norms[2 * layer](x))
                q, k, v = qkv.view(batch, length, 3, HEADS, head_dim).unbind(2)
                cache = caches[layer]  # (2, batch, heads, max_length, dim)
                cache[0].index_copy_(2, positions, k.transpose(1, 2))
                cache[1].index_copy_(2, positions, v.transpose(1, 2))
                attended = nn.functional.scaled_dot_product_attention(
                    q.transpose(1, 2), cache[0], cache[1], attn_mask=visible
                )
                x = x + self.out[layer](
                    attended.transpose(1, 2).reshape(batch, length, WIDTH)
                )
                hidden = self.hidden[layer](self.norms[2 * layer + 1](x))
                x = x + self.down[layer](nn.functional.gelu(hidden))
            x = self.norms[-1](x[:, -1])
            return x @ self.embedding.weight.T

        @torch.no_grad()
        def generate(self, prompt, new_tokens, step):
            batch, head_dim = prompt.shape[0], WIDTH // HEADS
            caches = [
                torch.zeros(2, batch, HEADS, self.max_length, head_dim)
                for _ in range(LAYERS)
            ]
            logits = self.step(prompt, caches, 0)
            index = torch.tensor(prompt.shape[1])
            tokens = []
            for _ in range(new_tokens):
                token = logits.argmax(-1, keepdim=True)
                tokens.append(token)
                logits = step(token, caches, index)
                index += 1
            return torch.cat(tokens, 1)

    return Decoder


def PlainTorchDecoder(max_length):  # noqa: N802 (a class, made on demand)
    return _plain_torch_decoder_class()(max_length)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    prompts = (
        np.random.default_rng(0)
        .integers(1, VOCAB, (args.batch, args.prompt_length))
        .astype("int32")
    )
    results = {
        "keras-hub GPT2CausalLM": keras_hub_row(
            prompts, args.new_tokens, args.repeats
        ),
        **keras_tfm_rows(prompts, args.new_tokens, args.repeats),
    }
    floor = None
    if keras.backend.backend() == "torch":
        results.update(plain_torch_rows(prompts, args.new_tokens, args.repeats))
        floor = results["plain PyTorch, compiled"][1]
    hub = results["keras-hub GPT2CausalLM"][1]
    tokens = args.batch * args.new_tokens
    print(f"\nbackend: {keras.backend.backend()}; GPT {LAYERS} layers, "
          f"width {WIDTH}, {HEADS} heads, FFN {HIDDEN}, vocabulary {VOCAB}; "
          f"batch {args.batch}, prompt {args.prompt_length}, "
          f"{args.new_tokens} new tokens; greedy")  # fmt: skip
    print("| decoding | tokens/s | ms per step | compile s | vs keras-hub "
          "| vs PyTorch floor |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for label, (compile_seconds, seconds) in results.items():
        versus_floor = "-" if floor is None else f"{floor / seconds:.2f}x"
        print(f"| {label} | {tokens / seconds:.0f} | "
              f"{1000 * seconds / args.new_tokens:.1f} | "
              f"{compile_seconds:.1f} | {hub / seconds:.2f}x | "
              f"{versus_floor} |")  # fmt: skip


if __name__ == "__main__":
    main()

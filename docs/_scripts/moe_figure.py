"""Draws the mixture-of-experts figure: which experts each token went to.

Run by `figures.py` (and runnable on its own: `python
docs/_scripts/moe_figure.py`), with its `save` and output folder.
"""

import os
import runpy

import keras
import numpy as np

from keras_tfm.layers.mixture_of_experts import MixtureOfExperts

FIGURES = runpy.run_path(os.path.join(os.path.dirname(__file__), "figures.py"))
SENTENCE = "the cat sat on the mat because the mat was warm".split()
NUM_EXPERTS = 8


def routing_table(layer, embeddings):
    """`(experts, tokens)` routing weights, 0 where a token did not go."""
    expert_ids, weights = layer.route(embeddings)
    expert_ids = keras.ops.convert_to_numpy(expert_ids)[0]  # (tokens, k)
    weights = keras.ops.convert_to_numpy(weights)[0]
    table = np.zeros((NUM_EXPERTS, len(SENTENCE)))
    for token, (ids, values) in enumerate(
        zip(expert_ids, weights, strict=True)
    ):
        table[ids, token] = values
    return table


def mixture_of_experts_routing():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    vectors = {word: rng.normal(size=32) for word in set(SENTENCE)}
    embeddings = np.array([[vectors[word] for word in SENTENCE]], "float32")
    layer = MixtureOfExperts(
        hidden_dim=64, num_experts=NUM_EXPERTS, experts_per_token=2
    )
    table = routing_table(layer, embeddings)
    figure, axis = plt.subplots(figsize=(8, 3.6))
    image = axis.imshow(table, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    axis.set_xticks(range(len(SENTENCE)), SENTENCE, rotation=30)
    axis.set_yticks(
        range(NUM_EXPERTS), [f"expert {e}" for e in range(NUM_EXPERTS)]
    )
    for expert, token in zip(*np.nonzero(table), strict=True):
        axis.text(token, expert, f"{table[expert, token]:.2f}",
                  ha="center", va="center", fontsize=8)  # fmt: skip
    axis.set_title("Each token's two experts and their weights")
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    FIGURES["save"](figure, "moe_routing.png")


if __name__ == "__main__":
    os.makedirs(os.environ.get("FIGURES_DIR", FIGURES["OUTPUT"]), exist_ok=True)
    keras.utils.set_random_seed(0)
    mixture_of_experts_routing()

"""Draws every figure of the docs with keras_tfm itself.

Run by the MkDocs hook in this folder before each build (and runnable on its
own: `python docs/_scripts/figures.py`). Figures go to docs/images/generated/,
which git ignores: the pictures always show what the current code does.
"""

import os
import runpy

import keras
import numpy as np

from keras_tfm import EncoderBlock, MultiHeadSelfAttention, models
from keras_tfm.layers.masks import causal_mask, merge_masks
from keras_tfm.layers.positional import sinusoidal_signal
from keras_tfm.layers.rotary import RotaryEmbedding
from keras_tfm.visualize import plot_attention, plot_positional_encoding

OUTPUT = os.path.join(
    os.path.dirname(__file__), os.pardir, "images", "generated"
)
SENTENCE = ["the", "cat", "sat", "on", "the", "mat"]


def save(figure, name):
    figure.savefig(
        os.path.join(os.environ.get("FIGURES_DIR", OUTPUT), name), dpi=110
    )
    import matplotlib.pyplot as plt

    plt.close(figure)


def sentence_embeddings(width):
    rng = np.random.default_rng(0)
    table = {word: rng.normal(size=width) for word in set(SENTENCE)}
    return np.array([[table[word] for word in SENTENCE]], "float32")


def scaled_dot_product_attention():
    layer = MultiHeadSelfAttention(num_heads=1)
    result = layer(sentence_embeddings(8), return_attention_scores=True)
    save(
        plot_attention(
            result.scores, SENTENCE, SENTENCE, title="softmax(QKᵀ/√d)"
        ),
        "attention_weights.png",
    )


def multi_head_attention():
    layer = MultiHeadSelfAttention(num_heads=4)
    result = layer(sentence_embeddings(32), return_attention_scores=True)
    save(
        plot_attention(result.scores, SENTENCE, SENTENCE),
        "multi_head_weights.png",
    )


def positional_encodings():
    save(plot_positional_encoding(length=64, dim=64), "sinusoidal.png")
    import matplotlib.pyplot as plt

    signal = np.asarray(keras.ops.convert_to_numpy(sinusoidal_signal(64, 64)))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    image = left.imshow(signal @ signal.T, cmap="viridis")
    left.set_title("Sinusoidal: PE(i) · PE(j)")
    left.set_xlabel("position j")
    left.set_ylabel("position i")
    figure.colorbar(image, ax=left)

    rng = np.random.default_rng(0)
    query = np.broadcast_to(rng.normal(size=(1, 1, 1, 32)), (1, 64, 1, 32))
    key = np.broadcast_to(rng.normal(size=(1, 1, 1, 32)), (1, 64, 1, 32))
    rotary = RotaryEmbedding()
    q = keras.ops.convert_to_numpy(rotary(query.astype("float32")))[0, :, 0]
    k = keras.ops.convert_to_numpy(rotary(key.astype("float32")))[0, :, 0]
    for query_position in (10, 30, 50):
        right.plot(np.arange(64) - query_position, q[query_position] @ k.T,
                   label=f"query at {query_position}")  # fmt: skip
    right.set_title("Rotary: score depends on distance only")
    right.set_xlabel("key position - query position")
    right.set_ylabel("q · k after rotation")
    right.legend()
    figure.tight_layout()
    save(figure, "position_similarity.png")


def masks():
    import matplotlib.pyplot as plt

    length = 6
    padding = np.array([[1, 1, 1, 1, 0, 0]], bool)
    panels = {
        "padding mask": merge_masks(padding_mask=padding),
        "causal mask": merge_masks(causal=causal_mask(length, length)),
        "padding + causal": merge_masks(
            padding_mask=padding, causal=causal_mask(length, length)
        ),
    }
    tokens = ["<s>", "the", "cat", "sat", "pad", "pad"]
    figure, axes = plt.subplots(1, 3, figsize=(12, 4))
    for axis, (title, mask) in zip(axes, panels.items(), strict=True):
        mask = np.broadcast_to(keras.ops.convert_to_numpy(mask)[0, 0], (6, 6))
        axis.imshow(mask, cmap="Greens", vmin=0, vmax=1)
        axis.set_title(title)
        axis.set_xticks(range(6), tokens, rotation=45)
        axis.set_yticks(range(6), tokens)
        axis.set_xlabel("key")
    axes[0].set_ylabel("query")
    figure.suptitle("Green: a query (row) may attend to a key (column)")
    figure.tight_layout()
    save(figure, "masks.png")


def attention_variant_masks():
    """A causal mask, a sliding-window one, and which keys the last query
    sees in each layer of a model with a local/global pattern."""
    import matplotlib.pyplot as plt

    length, window = 12, 4
    # Gemma 3's pattern, shortened: five sliding-window layers, one global.
    local = {"attention": {"sliding_window": window}}
    model = models.CausalLM(
        vocab_size=32, sequence_length=length, num_layers=6, embed_dim=16,
        num_heads=2, ff_dim=32, attention={"rotary": True},
        layer_overrides=[local] * 5 + [None],
    )  # fmt: skip
    last_query = [
        causal_mask(1, length, length - 1, block.self_attention.sliding_window)[
            0
        ]
        for block in model.blocks
    ]
    panels = {
        "causal": causal_mask(length, length),
        f"sliding_window={window}": causal_mask(
            length, length, sliding_window=window
        ),
        "last query, layer by layer": keras.ops.stack(last_query),
    }
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    for axis, (title, mask) in zip(axes, panels.items(), strict=True):
        axis.imshow(keras.ops.convert_to_numpy(mask), cmap="Greens", vmin=0)
        axis.set_title(title)
        axis.set_xlabel("key position")
    axes[0].set_ylabel("query position")
    axes[2].set_ylabel("layer")
    axes[2].set_yticks(range(6), ["local"] * 5 + ["global"])
    figure.suptitle("Green: a query may attend to a key")
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    save(figure, "sliding_window.png")


def rotary_scalings():
    """The wavelength of each rotary channel pair under each scaling, for a
    model trained on 256 positions and run on 1024."""
    import matplotlib.pyplot as plt

    head_dim, original, length = 64, 256, 1024
    stretch = {"factor": 4.0, "original_max_position_embeddings": original}
    ramp = np.linspace(1.0, 4.0, head_dim // 2).tolist()
    scalings = {
        "none": None,
        "linear": {"type": "linear", "factor": 4.0},
        "dynamic": {"type": "dynamic", **stretch},
        "llama3": {
            "type": "llama3", "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, **stretch,
        },
        "yarn": {"type": "yarn", **stretch},
        "longrope": {
            "type": "longrope", "short_factor": [1.0] * (head_dim // 2),
            "long_factor": ramp, "original_max_position_embeddings": original,
        },
    }  # fmt: skip
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, scaling in scalings.items():
        rotary = RotaryEmbedding(scaling=scaling)
        inverse = rotary.inverse_frequencies(head_dim, length)
        wavelengths = 2 * np.pi / keras.ops.convert_to_numpy(inverse)
        axis.plot(
            wavelengths, label=name, linestyle="--" if name == "none" else "-"
        )
    axis.axhline(original, color="gray", linewidth=0.8)
    axis.text(0, original * 1.2, "original length", color="gray")
    axis.set_yscale("log")
    axis.set_xlabel("channel pair i")
    axis.set_ylabel("wavelength (positions)")
    axis.set_title(f"Rotary wavelengths at length {length}, base 10000")
    axis.legend()
    figure.tight_layout()
    save(figure, "rotary_scalings.png")


def residual_norms():
    """How the residual stream grows with depth, post-norm vs pre-norm."""
    import matplotlib.pyplot as plt

    x = np.random.default_rng(0).normal(size=(4, 16, 64)).astype("float32")
    figure, axis = plt.subplots(figsize=(6, 4))
    for placement in ("post", "pre"):
        hidden, norms = x, [np.linalg.norm(x, axis=-1).mean()]
        for _ in range(12):
            block = EncoderBlock(
                4, 128, dropout=0.0, norm={"placement": placement}
            )
            hidden = keras.ops.convert_to_numpy(block(hidden))
            norms.append(np.linalg.norm(hidden, axis=-1).mean())
        label = f'{placement}-norm (placement "{placement}")'
        axis.plot(norms, marker="o", label=label)
    axis.set_xlabel("blocks")
    axis.set_ylabel("mean ‖x‖ of the residual stream")
    axis.legend()
    figure.tight_layout()
    save(figure, "residual_norms.png")


def encoder_decoder_diagram():
    """The layers of a 2+2 seq2seq model, drawn from the model itself."""
    import matplotlib.pyplot as plt

    model = models.seq2seq_transformer(
        100, 16, num_layers=2, embed_dim=32, num_heads=2, ff_dim=64
    )

    def stack(side):
        names = [layer.name for layer in model.layers]
        names = [name for name in names if name.startswith(side)]
        inputs = [name for name in names if name.endswith("tokens")]
        rest = [name for name in names if not name.endswith("tokens")]
        return inputs + ["embedding (shared)"] + rest

    encoder, decoder = stack("encoder"), stack("decoder")
    figure, axis = plt.subplots(figsize=(9, 6))
    axis.axis("off")
    heights = {}
    columns = ((0.25, encoder), (0.75, decoder + ["logits (tied embedding)"]))
    box = {"boxstyle": "round", "facecolor": "#e8f0fe"}
    for column, names in columns:
        ys = [0.08 + row * 0.8 / (len(names) - 1) for row in range(len(names))]
        for name, y in zip(names, ys, strict=True):
            axis.text(column, y, name, ha="center", va="center", bbox=box)
            heights[(column, name)] = y
        for lower, upper in zip(ys, ys[1:], strict=False):
            axis.annotate(
                "",
                (column, upper - 0.03),
                (column, lower + 0.03),
                arrowprops={"arrowstyle": "->"},
            )
    encoder_top = heights[(0.25, encoder[-1])]
    for name in decoder:
        if "block" in name:
            axis.annotate(
                "",
                (0.62, heights[(0.75, name)]),
                (0.38, encoder_top),
                arrowprops={"arrowstyle": "->", "color": "gray"},
            )
    axis.set_title("seq2seq_transformer(num_layers=2): every decoder block "
                   "attends to the encoder output")  # fmt: skip
    save(figure, "encoder_decoder.png")


def main():
    os.makedirs(os.environ.get("FIGURES_DIR", OUTPUT), exist_ok=True)
    keras.utils.set_random_seed(0)
    scaled_dot_product_attention()
    multi_head_attention()
    positional_encodings()
    masks()
    attention_variant_masks()
    rotary_scalings()
    residual_norms()
    encoder_decoder_diagram()
    # The mixture-of-experts figure lives with its own helpers.
    runpy.run_path(
        os.path.join(os.path.dirname(__file__), "moe_figure.py"),
        run_name="__main__",
    )


if __name__ == "__main__":
    main()

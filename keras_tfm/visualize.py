"""Pictures of attention weights and position signals (needs matplotlib).

matplotlib is an optional dependency (`pip install "keras_tfm[docs]"`); it
is imported when a plot is made, not when keras_tfm is.
"""

import numpy as np
from keras import ops

from keras_tfm.extras import require
from keras_tfm.layers.positional import sinusoidal_signal


def _pyplot():
    matplotlib = require("matplotlib", "docs", "keras_tfm.visualize")
    matplotlib.use("Agg", force=False)
    return require("matplotlib.pyplot", "docs", "keras_tfm.visualize")


def plot_attention(
    scores, query_tokens=None, key_tokens=None, head=None, title=None
):
    """Draws attention weights as heat maps, one per head.

    Args:
        scores: Attention weights of shape `(heads, q_len, k_len)` or
            `(q_len, k_len)` (a batch of one may keep its batch axis), as
            returned with `return_attention_scores=True`.
        query_tokens: Labels for the rows (queries).
        key_tokens: Labels for the columns (keys).
        head: Draw only this head; by default every head side by side.
        title: Figure title.

    Returns:
        A `matplotlib.figure.Figure`. Cells carry their values when the map
        is small enough to read them.

    Example:

    ```python
    import numpy as np
    from keras_tfm import MultiHeadSelfAttention
    from keras_tfm.visualize import plot_attention

    x = np.random.rand(1, 4, 8).astype("float32")
    _, scores = MultiHeadSelfAttention(2, causal=True)(
        x, return_attention_scores=True
    )
    figure = plot_attention(scores, ["a", "b", "c", "d"], ["a", "b", "c", "d"])
    ```
    """
    scores = np.asarray(ops.convert_to_numpy(scores), dtype="float32")
    if scores.ndim == 4 and scores.shape[0] == 1:
        scores = scores[0]
    if scores.ndim == 2:
        scores = scores[None]
    if scores.ndim != 3:
        raise ValueError(
            "`scores` must have shape (heads, q_len, k_len) or (q_len, k_len)."
            f" Received: scores.shape={scores.shape}"
        )
    heads = range(scores.shape[0]) if head is None else [head]
    plt = _pyplot()
    size = max(2.5, 0.45 * scores.shape[2] + 1)
    figure, axes = plt.subplots(
        1, len(heads), figsize=(size * len(heads), size), squeeze=False
    )
    for axis, index in zip(axes[0], heads, strict=True):
        _heat_map(axis, scores[index], query_tokens, key_tokens)
        if len(heads) > 1 or head is not None:
            axis.set_title(f"head {index}")
    axes[0][0].set_ylabel("query")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def _heat_map(axis, values, row_labels, column_labels):
    axis.imshow(values, cmap="viridis", vmin=0, vmax=max(values.max(), 1e-9))
    if row_labels is not None:
        axis.set_yticks(range(len(row_labels)), row_labels)
    if column_labels is not None:
        axis.set_xticks(
            range(len(column_labels)), column_labels, rotation=45, ha="right"
        )
    axis.set_xlabel("key")
    if values.shape[0] * values.shape[1] <= 64:
        for (row, column), value in np.ndenumerate(values):
            color = "black" if value > 0.6 * values.max() else "white"
            axis.text(column, row, f"{value:.2f}", ha="center", va="center",
                      fontsize=8, color=color)  # fmt: skip


def plot_positional_encoding(
    encoding=None, length=64, dim=64, max_wavelength=10000, title=None
):
    """Draws a position signal as a heat map (positions by channels).

    Args:
        encoding: A `(length, dim)` array to draw, such as the learned
            `position_embeddings` of a `PositionalEmbedding`. By default, the
            paper's sinusoidal signal.
        length: Number of positions of the default signal.
        dim: Number of channels of the default signal.
        max_wavelength: Longest wavelength of the default signal.
        title: Figure title.

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    ```python
    from keras_tfm.visualize import plot_positional_encoding

    figure = plot_positional_encoding(length=50, dim=32)
    ```
    """
    if encoding is None:
        encoding = sinusoidal_signal(length, dim, max_wavelength)
        title = title or "Sinusoidal position encoding"
    encoding = np.asarray(ops.convert_to_numpy(encoding), dtype="float32")
    if encoding.ndim != 2:
        raise ValueError(
            "`encoding` must have shape (length, dim). "
            f"Received: encoding.shape={encoding.shape}"
        )
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    image = axis.imshow(encoding, aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
    axis.set_xlabel("channel")
    axis.set_ylabel("position")
    figure.colorbar(image, ax=axis)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    return figure

"""Sharding keras_tfm models over several devices with `keras.distribution`.

Keras's distribution API places each weight according to a `LayoutMap` from
weight paths to layouts over a `DeviceMesh`. `layout_map()` gives the map for
keras_tfm's layers, Megatron-style: attention heads and feed-forward hidden
units are split over the mesh's model axis, so each device holds a slice of
every block and XLA inserts the collectives. Keras implements distribution on
the JAX backend.
"""

import keras

from keras_tfm.layers.validation import check_choice

__all__ = ["layout_map"]

# Weight paths (regular expressions, matched against the whole path) and the
# axes of each weight that the model axis shards; `None` keeps an axis whole.
# Embeddings are split across the width rather than the vocabulary, so that
# any vocabulary size works. Every other weight (normalization scales and
# offsets, output biases) is small and replicated.
_SHARDED_AXES = {
    r".*attention/(query|key|value)/kernel": (None, "model", None),
    r".*attention/(query|key|value)/bias": ("model", None),
    r".*attention/output/kernel": ("model", None, None),
    r".*feed_forward/(hidden|gate)/kernel": (None, "model"),
    r".*feed_forward/(hidden|gate)/bias": ("model",),
    r".*feed_forward/output/kernel": ("model", None),
    # A mixture of experts: whole experts per device (expert parallelism).
    r".*feed_forward/(gate|up|down)_kernel": ("model", None, None),
    r".*feed_forward/(gate|up|down)_bias": ("model", None),
    r".*shared_expert/(hidden|gate)/kernel": (None, "model"),
    r".*shared_expert/output/kernel": ("model", None),
    r".*token_embedding/embeddings": (None, "model"),
    r".*position_embeddings": (None, "model"),
    r".*patch_embedding/projection/kernel": (None, None, None, "model"),
    r".*patch_embedding/class_token": (None, None, "model"),
    r"(input_projection|mlm_dense)/kernel": (None, "model"),
    r"(logits|head)/kernel": ("model", None),
}


def layout_map(device_mesh, model_axis="model"):
    """A `keras.distribution.LayoutMap` that shards keras_tfm models.

    Query, key and value projections are split by head, the attention output
    projection by its input heads, the feed-forward network by hidden unit
    (a `MixtureOfExperts` by whole experts: expert parallelism), and token
    and position embeddings and the builders' input and output projections
    by model width. Use it with
    `keras.distribution.ModelParallel`; the mesh's other axis carries the
    batch.

    The model axis size must divide `num_heads`, `num_kv_heads`, `ff_dim`
    and the model width.

    Args:
        device_mesh: A `keras.distribution.DeviceMesh`, for example of shape
            `(2, 4)` with axis names `("batch", "model")`.
        model_axis: The name of the mesh axis that weights are split over.

    Returns:
        A `keras.distribution.LayoutMap` matching the weight paths of every
        keras_tfm layer and of the builders in `keras_tfm.models`.

    Example:

    ```python
    import keras
    from keras_tfm import distribution, models

    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh(
        shape=(len(devices), 1), axis_names=("batch", "model"),
        devices=devices,
    )
    strategy = keras.distribution.ModelParallel(
        layout_map=distribution.layout_map(mesh), batch_dim_name="batch"
    )
    with strategy.scope():
        model = models.text_classifier(
            vocab_size=100, sequence_length=16, num_classes=2,
            num_layers=1, embed_dim=16, num_heads=2, ff_dim=32,
        )
    ```
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            "keras.distribution shards models on the JAX backend only "
            "(its TensorFlow version is an unfinished prototype and PyTorch "
            "has none). Received: KERAS_BACKEND="
            f"{keras.backend.backend()!r}; set KERAS_BACKEND=jax."
        )
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(
            "`device_mesh` must be a `keras.distribution.DeviceMesh`. "
            f"Received: {type(device_mesh).__name__}"
        )
    check_choice("model_axis", model_axis, tuple(device_mesh.axis_names))
    layouts = keras.distribution.LayoutMap(device_mesh)
    for path, axes in _SHARDED_AXES.items():
        layouts[path] = tuple(
            model_axis if axis == "model" else axis for axis in axes
        )
    return layouts

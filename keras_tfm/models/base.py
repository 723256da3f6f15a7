"""What every keras_tfm model class shares: a functional graph built in
`__init__` and a config of its constructor arguments."""

import keras

from keras_tfm.layers import MultiHeadCrossAttention, MultiHeadSelfAttention
from keras_tfm.layers.normalization import normalization
from keras_tfm.layers.options import DEFAULT_FEED_FORWARD, block_options
from keras_tfm.layers.validation import check_choice

SPECIAL_TOKENS = ("pad", "bos", "eos")
# The option dicts one entry of `layer_overrides` may change.
OVERRIDDEN_OPTIONS = ("attention", "feed_forward", "norm")


class FunctionalModel(keras.Model):
    """A `keras.Model` whose functional graph is built in `__init__`.

    keras-hub's `Backbone` pattern: a subclass creates its layers as
    attributes, wires them with the functional API and calls
    `super().__init__(inputs, outputs, name=...)`, so `summary()`, `fit`,
    `save` and `plot_model` work as for any functional model, while other
    code reaches the parts through the attributes. `get_config` returns the
    constructor arguments (each subclass adds its own), and `from_config`
    calls the constructor, so a reloaded model is of the same class.

    Every model also takes two records of where it came from, kept in its
    config: `special_token_ids`, a dict with any of `"pad"`, `"bos"` and
    `"eos"` (an id, a list of ids for `"eos"`, or None), the ids
    `keras_tfm.generation` uses by default; and `huggingface_model_type`,
    the checkpoint family `interop.to_huggingface` writes it back as. A
    model imported with `interop.from_huggingface` carries its
    checkpoint's.
    """

    def __init__(
        self,
        *args,
        special_token_ids=None,
        huggingface_model_type=None,
        **kwargs,
    ):
        special_token_ids = dict(special_token_ids or {})
        for key in special_token_ids:
            check_choice("special_token_ids key", key, SPECIAL_TOKENS)
        super().__init__(*args, **kwargs)
        self.special_token_ids = special_token_ids
        self.huggingface_model_type = huggingface_model_type

    def __setattr__(self, name, value):
        # On PyTorch a Keras layer is a `torch.nn.Module`, which refuses
        # sub-modules until its own `__init__` has run; the layers set before
        # `super().__init__` are tracked by the functional graph instead.
        if keras.backend.backend() == "torch" and not hasattr(self, "_tracker"):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def get_config(self):
        # Not `super().get_config()`: a functional model's config is its
        # graph, which the constructor cannot take.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "special_token_ids": self.special_token_ids,
            "huggingface_model_type": self.huggingface_model_type,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def enable_lora(self, rank, projections=("query", "value")):
        """Fine-tunes with LoRA: low-rank updates of attention projections.

        Calls Keras's own `enable_lora(rank)` on the chosen projections of
        every attention layer and freezes every other weight (their biases
        too), so that `fit` trains only the LoRA weights. Writing the model
        with `interop.to_huggingface` merges the updates into the kernels.

        Args:
            rank: Rank of the updates.
            projections: Which projections of each attention layer:
                `"query"`, `"key"`, `"value"`, `"output"`.

        Example:

        ```python
        import numpy as np
        from keras_tfm import models

        model = models.causal_lm(
            vocab_size=50, sequence_length=16, num_layers=1, embed_dim=16,
            num_heads=2, ff_dim=32,
        )
        model.enable_lora(rank=4)
        print(len(model.trainable_weights))  # 4: two pairs of LoRA factors
        ```
        """
        for name in projections:
            check_choice(
                "projections", name, ("query", "key", "value", "output")
            )
        for layer in self._flatten_layers(include_self=False):
            layer.trainable = False
        for layer in self._flatten_layers(include_self=False):
            if isinstance(
                layer, MultiHeadSelfAttention | MultiHeadCrossAttention
            ):
                for name in projections:
                    dense = getattr(layer, f"{name}_dense")
                    dense.trainable = True
                    dense.enable_lora(rank)
                    if dense.bias is not None:
                        dense.bias.trainable = False


def make_blocks(
    block_class,
    num_layers,
    prefix,
    options,
    layer_overrides=None,
    **arguments,
):
    """`num_layers` blocks named `{prefix}_block_{index}`, each given the
    model's `options` (from `layers.options.block_options`) with its entry
    of `layer_overrides` merged over them (see `layer_options`)."""
    overrides = _checked_overrides(layer_overrides, num_layers)
    return [
        block_class(
            name=f"{prefix}_block_{index}",
            **layer_options(options, override, index),
            **arguments,
        )
        for index, override in enumerate(overrides)
    ]


def layer_options(options, override, index):
    """The complete options of block `index`: `override` (None or a dict
    of `attention`, `feed_forward`, `norm` dicts) merged over the model's.

    Each key of an override dict replaces the model's, but a dict value
    over a dict value is merged one level down too, so that
    `{"attention": {"rotary": {"max_wavelength": 1e4}}}` keeps the model's
    other rotary options. A `feed_forward` override of another `"type"`
    (a dense layer in a mixture-of-experts model) replaces the model's
    dict: its options are another layer's.
    """
    if not override:
        return options
    merged = {
        name: _merged(options[name], override.get(name, {}))
        for name in OVERRIDDEN_OPTIONS
    }
    feed_forward = override.get("feed_forward", {})
    kind = options["feed_forward"].get("type", DEFAULT_FEED_FORWARD)
    if feed_forward.get("type", kind) != kind:
        merged["feed_forward"] = feed_forward
    try:
        return block_options({}, **merged)
    except ValueError as error:
        raise ValueError(
            f"`layer_overrides[{index}]` does not fit the blocks: {error}"
        ) from None


def _merged(base, override):
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            value = {**base[key], **value}
        merged[key] = value
    return merged


def _checked_overrides(layer_overrides, num_layers):
    if layer_overrides is None:
        return [None] * num_layers
    if (
        not isinstance(layer_overrides, list | tuple)
        or len(layer_overrides) != num_layers
    ):
        raise ValueError(
            f"`layer_overrides` must be None or a list of num_layers="
            f"{num_layers} entries, each None or a dict. Received: "
            f"layer_overrides={layer_overrides!r}"
        )
    for index, override in enumerate(layer_overrides):
        name = f"layer_overrides[{index}]"
        if override is not None and not isinstance(override, dict):
            raise ValueError(
                f"`{name}` must be None or a dict with keys among "
                f"{list(OVERRIDDEN_OPTIONS)}. Received: {name}={override!r}"
            )
        for key, value in (override or {}).items():
            check_choice(f"{name} key", key, OVERRIDDEN_OPTIONS)
            if not isinstance(value, dict):
                raise ValueError(
                    f"`{name}[{key!r}]` must be a dict of options. "
                    f"Received: {name}[{key!r}]={value!r}"
                )
    return layer_overrides


def stack_norm(prefix, enabled, norm_options):
    """The normalization `{prefix}_norm` that ends a stack, or None.

    A pre-norm stack leaves its residual stream unnormalised, so it gets one
    (`enabled` is pre-norm by default in the models); a post-norm stack
    already ends in a norm, though `torch.nn.Transformer` adds one there too.
    """
    if not enabled:
        return None
    return normalization(norm_options, f"{prefix}_norm")


def run_stack(x, blocks, norm=None, **call_arguments):
    """`x` through each block, then through `norm` if there is one."""
    for block in blocks:
        x = block(x, **call_arguments)
    return x if norm is None else norm(x)

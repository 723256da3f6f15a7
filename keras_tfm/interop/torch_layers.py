"""Trained `torch.nn` Transformer layers, copied into keras_tfm.

`from_torch(module)` builds the keras_tfm layer that computes the same
function as a `torch.nn.MultiheadAttention`, `torch.nn.TransformerEncoderLayer`
or `torch.nn.TransformerDecoderLayer`, and copies its weights; `load_torch`
copies them into a layer you already have. It works under every Keras
backend: PyTorch must be installed, not active. `torch` is imported only
when called, and only in this module.

Matching semantics: outputs are equal in evaluation mode (dropout off), for
`batch_first` either way (keras_tfm is always batch-first), `norm_first`
either way and `relu` or `gelu`. A `TransformerDecoderLayer` corresponds to a
`DecoderBlock`, whose self-attention is always causal: call the PyTorch layer
with a causal `tgt_mask` to compare.
"""

import numpy as np

from keras_tfm.extras import require
from keras_tfm.layers import (
    DecoderBlock,
    EncoderBlock,
    MultiHeadCrossAttention,
    MultiHeadSelfAttention,
)
from keras_tfm.models import Seq2SeqTransformer

__all__ = ["from_torch", "load_torch", "load_torch_transformer"]


def from_torch(module, causal=False):
    """A new keras_tfm layer with the configuration and weights of `module`.

    Args:
        module: A `torch.nn.MultiheadAttention` (gives a
            `MultiHeadSelfAttention`), `torch.nn.TransformerEncoderLayer`
            (an `EncoderBlock`) or `torch.nn.TransformerDecoderLayer` (a
            `DecoderBlock`).
        causal: For `MultiheadAttention`: whether the new layer is causal
            (PyTorch passes causality at call time).

    Returns:
        The built keras_tfm layer, computing the same function as `module`
        in evaluation mode.

    Example:

    ```python
    import numpy as np
    import torch
    from keras_tfm import interop

    torch_layer = torch.nn.TransformerEncoderLayer(
        d_model=16, nhead=4, dim_feedforward=32, batch_first=True
    ).eval()
    block = interop.from_torch(torch_layer)
    x = np.random.rand(2, 5, 16).astype("float32")
    outputs = block(x)  # equals torch_layer(torch.from_numpy(x))
    ```
    """
    nn = _torch_nn()
    if isinstance(module, nn.MultiheadAttention):
        _check_attention(module)
        layer = MultiHeadSelfAttention(
            module.num_heads,
            use_bias=module.in_proj_bias is not None,
            causal=causal,
        )
        layer.build((None, None, module.embed_dim))
    elif isinstance(
        module, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer
    ):
        options = _block_options(module)
        width = module.linear1.in_features
        if isinstance(module, nn.TransformerEncoderLayer):
            layer = EncoderBlock(**options)
            layer.build((None, None, width))
        else:
            layer = DecoderBlock(**options)
            layer.build((None, None, width), (None, None, width))
    else:
        raise ValueError(_unsupported(module))
    load_torch(layer, module)
    return layer


def load_torch(layer, module):
    """Copies the weights of a PyTorch layer into a built keras_tfm layer.

    Args:
        layer: A built `MultiHeadSelfAttention`, `MultiHeadCrossAttention`,
            `EncoderBlock` or `DecoderBlock`.
        module: The matching `torch.nn.MultiheadAttention`,
            `TransformerEncoderLayer` or `TransformerDecoderLayer`, with the
            same width, heads, feed-forward size and options.

    Returns:
        `layer`, with its weights replaced.

    Example:

    ```python
    import torch
    from keras_tfm import MultiHeadCrossAttention, interop

    torch_attention = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    attention = MultiHeadCrossAttention(num_heads=4)
    attention.build((None, None, 16), (None, None, 16))
    interop.load_torch(attention, torch_attention)
    ```
    """
    nn = _torch_nn()
    if not layer.built:
        raise ValueError(
            f"`layer` ({layer.name}) must be built before weights can be "
            "copied into it: call it on an input or `build()` it first."
        )
    if isinstance(layer, MultiHeadSelfAttention | MultiHeadCrossAttention):
        _expect(module, nn.MultiheadAttention, layer)
        _load_attention(layer, module)
    elif isinstance(layer, EncoderBlock):
        _expect(module, nn.TransformerEncoderLayer, layer)
        _check_block(layer, module)
        _load_block(layer, module, norms=("norm1", None, "norm2"))
    elif isinstance(layer, DecoderBlock):
        _expect(module, nn.TransformerDecoderLayer, layer)
        _check_block(layer, module)
        if not layer.has_cross_attention:
            raise ValueError(
                "A `TransformerDecoderLayer` has cross-attention; `layer` "
                "was built with `cross_attention=False`."
            )
        _load_attention(layer.cross_attention_layer, module.multihead_attn)
        _load_block(layer, module, norms=("norm1", "norm2", "norm3"))
    else:
        raise ValueError(
            "`layer` must be a MultiHeadSelfAttention, "
            "MultiHeadCrossAttention, EncoderBlock or DecoderBlock. "
            f"Received: {type(layer).__name__}"
        )
    return layer


def load_torch_transformer(model, transformer):
    """Copies a `torch.nn.Transformer` into a `models.Seq2SeqTransformer`.

    Every encoder and decoder layer goes into the matching block of
    `model.encoder_blocks` / `model.decoder_blocks`, and the final encoder
    and decoder norms into `model.encoder_norm` / `model.decoder_norm`.
    PyTorch's `Transformer` always ends each stack with a LayerNorm, which
    the model has with `stack_norms=True` (the default for pre-norm
    blocks). Build the model with the PyTorch layers' placement
    (`norm={"placement": "pre"}` for `norm_first=True`). Embeddings and the
    output projection are not part of `torch.nn.Transformer` and are left
    as they are.

    Args:
        model: A `models.Seq2SeqTransformer` built with `stack_norms=True`
            and as many layers as `transformer`.
        transformer: A `torch.nn.Transformer`.

    Returns:
        `model`, with its blocks' weights replaced.

    Example:

    ```python
    import torch
    from keras_tfm import interop, models

    transformer = torch.nn.Transformer(
        d_model=16, nhead=4, num_encoder_layers=1, num_decoder_layers=1,
        dim_feedforward=32, norm_first=True, batch_first=True,
    )
    model = models.seq2seq_transformer(
        vocab_size=50, sequence_length=8, num_layers=1, embed_dim=16,
        num_heads=4, ff_dim=32, norm={"placement": "pre"},
    )
    interop.load_torch_transformer(model, transformer)
    ```
    """
    nn = _torch_nn()
    if not isinstance(transformer, nn.Transformer):
        raise ValueError(
            "`transformer` must be a torch.nn.Transformer. Received: "
            f"{type(transformer).__name__}"
        )
    if not isinstance(model, Seq2SeqTransformer):
        raise ValueError(
            "`model` must be a `models.Seq2SeqTransformer`. Received: "
            f"{type(model).__name__}"
        )
    if model.encoder_norm is None or model.decoder_norm is None:
        raise ValueError(
            "torch.nn.Transformer ends each stack with a LayerNorm, which "
            "`models.seq2seq_transformer` has with `stack_norms=True` (the "
            "default for pre-norm blocks). Build `model` with "
            "`stack_norms=True`."
        )
    stacks = (
        ("encoder", model.encoder_blocks, model.encoder_norm),
        ("decoder", model.decoder_blocks, model.decoder_norm),
    )
    for stack, blocks, norm in stacks:
        torch_stack = getattr(transformer, stack)
        if len(blocks) != len(torch_stack.layers):
            raise ValueError(
                f"`model` has {len(blocks)} {stack} blocks and `transformer` "
                f"{len(torch_stack.layers)} {stack} layers; they must match."
            )
        for block, torch_layer in zip(blocks, torch_stack.layers, strict=True):
            load_torch(block, torch_layer)
        _load_norm(norm, torch_stack.norm)
    return model


def _torch_nn():
    return require("torch.nn", "torch", "keras_tfm.interop (PyTorch modules)")


def _numpy(tensor):
    return tensor.detach().cpu().float().numpy()


def _unsupported(module):
    return (
        "`module` must be a torch.nn.MultiheadAttention, "
        "TransformerEncoderLayer or TransformerDecoderLayer. Received: "
        f"{type(module).__name__}"
    )


def _expect(module, module_class, layer):
    if not isinstance(module, module_class):
        raise ValueError(
            f"A {type(layer).__name__} takes the weights of a "
            f"torch.nn.{module_class.__name__}. Received: "
            f"{type(module).__name__}"
        )


def _check_attention(module):
    if module.bias_k is not None or module.add_zero_attn:
        raise ValueError(
            "`module` uses `add_bias_kv` or `add_zero_attn`, which keras_tfm "
            "attention does not have."
        )


def _load_attention(layer, module):
    """PyTorch keeps `[W_q; W_k; W_v]` as `(3 * width, width)`; keras_tfm
    keeps one `(width, heads, head_dim)` kernel per projection."""
    _check_attention(module)
    heads, width = module.num_heads, module.embed_dim
    if layer.num_heads != heads:
        raise ValueError(
            f"`layer` has {layer.num_heads} heads and `module` {heads}; they "
            "must match."
        )
    head_dim = width // heads
    if module.in_proj_weight is not None:
        kernels = np.split(_numpy(module.in_proj_weight), 3)
    else:
        kernels = [
            _numpy(getattr(module, f"{name}_proj_weight"))
            for name in ("q", "k", "v")
        ]
    biases = (
        [None] * 3
        if module.in_proj_bias is None
        else np.split(_numpy(module.in_proj_bias), 3)
    )
    projections = (layer.query_dense, layer.key_dense, layer.value_dense)
    for dense, kernel, bias in zip(projections, kernels, biases, strict=True):
        _assign(
            dense,
            kernel.T.reshape(-1, heads, head_dim),
            None if bias is None else bias.reshape(heads, head_dim),
        )
    output = module.out_proj
    _assign(
        layer.output_dense,
        _numpy(output.weight).T.reshape(heads, head_dim, width),
        None if output.bias is None else _numpy(output.bias),
    )


def _assign(keras_layer, kernel, bias):
    if keras_layer.kernel.shape != kernel.shape:
        raise ValueError(
            f"`{keras_layer.path}` has a kernel of shape "
            f"{tuple(keras_layer.kernel.shape)}; the PyTorch weight gives "
            f"{kernel.shape}. Build the layer with the module's sizes."
        )
    keras_layer.kernel.assign(kernel)
    if (bias is None) != (keras_layer.bias is None):
        raise ValueError(
            f"`{keras_layer.path}` and the PyTorch module disagree on having "
            "a bias (`use_bias` / `bias`)."
        )
    if bias is not None:
        keras_layer.bias.assign(bias)


def _activation_name(module):
    activation = module.activation
    name = getattr(activation, "__name__", type(activation).__name__).lower()
    if name not in ("relu", "gelu"):
        raise ValueError(
            f"keras_tfm blocks take `relu` or `gelu`. Received the PyTorch "
            f"activation {activation!r}."
        )
    return name


def _block_options(module):
    """The `EncoderBlock`/`DecoderBlock` options that compute what `module`
    computes."""
    if module.linear1.bias is None:
        raise ValueError(
            "`module` has `bias=False`; keras_tfm blocks have biases."
        )
    return {
        "num_heads": module.self_attn.num_heads,
        "ff_dim": module.linear1.out_features,
        "dropout": module.dropout.p,
        "feed_forward": {"activation": _activation_name(module)},
        "norm": {
            "type": "layer",
            "epsilon": module.norm1.eps,
            "placement": "pre" if module.norm_first else "post",
        },
    }


def _check_block(layer, module):
    expected = _block_options(module)
    found = {
        "num_heads": layer.attention_options["num_heads"],
        "ff_dim": layer.feed_forward_options["hidden_dim"],
        "feed_forward": {
            "activation": layer.feed_forward_options["activation"]
        },
        "norm": layer.norm_options,
    }
    for name, value in found.items():
        if value != expected[name]:
            raise ValueError(
                f"`layer` has {name}={value!r} but the PyTorch module "
                f"needs {expected[name]!r}: build the block with the "
                "module's options, or use `interop.from_torch(module)`."
            )


def _load_block(layer, module, norms):
    self_norm, cross_norm, feed_forward_norm = norms
    _load_attention(layer.self_attention, module.self_attn)
    _load_norm(layer.self_attention_norm, getattr(module, self_norm))
    if cross_norm is not None:
        _load_norm(layer.cross_attention_norm, getattr(module, cross_norm))
    feed_forward = layer.feed_forward
    _assign(
        feed_forward.hidden_dense,
        _numpy(module.linear1.weight).T,
        _numpy(module.linear1.bias),
    )
    _assign(
        feed_forward.output_dense,
        _numpy(module.linear2.weight).T,
        _numpy(module.linear2.bias),
    )
    _load_norm(layer.feed_forward_norm, getattr(module, feed_forward_norm))


def _load_norm(norm, torch_norm):
    norm.gamma.assign(_numpy(torch_norm.weight))
    norm.beta.assign(_numpy(torch_norm.bias))

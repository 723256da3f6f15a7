"""GPT-2 (`gpt2`): a `CausalLM` with learned positions, pre-norm layer
norms and a tied head.

Its layout differs in one place: `Conv1D` layers keep their kernels
`(in, out)`, and `c_attn` holds the query, key and value projections in
one matrix.
"""

import numpy as np

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed

CONV1D = core.linear(transposed=False)
CONV1D_FROM_HEADS = core.linear(transposed=False, input_axes=2)


def _inner(config):
    return config.get("n_inner") or 4 * config["n_embd"]


FIELDS = (
    Field("vocab_size", "vocab_size"),
    Field("n_positions", "sequence_length"),
    Field("n_embd", "embed_dim"),
    Field("n_layer", "num_layers"),
    Field("n_head", "attention.num_heads"),
    Field("n_inner", "feed_forward.hidden_dim", load=_inner),
    Field("activation_function", "feed_forward.activation", "gelu_new",
          fields.ACTIVATIONS),
    Field("layer_norm_epsilon", "norm.epsilon", 1e-5),
    Field("resid_pdrop", "dropout", 0.1),
    Field("embd_pdrop", None, save=lambda options: options["dropout"]),
    Field("tie_word_embeddings", "tie_embeddings", True, {True: True}),
    Constant("attn_pdrop", 0.0, checked=False),  # no dropout on weights
    Constant("scale_attn_weights", True),
    Constant("scale_attn_by_inverse_layer_idx", False),
    Constant("add_cross_attention", False),
    Fixed("norm.type", "layer"),
    Fixed("norm.placement", "pre"),
    *fields.fixed(fields.PLAIN_BLOCKS),
    *fields.fixed(fields.NO_CAUSAL_LM_VARIANTS),
    Fixed("output_bias", True, unless="tie_embeddings"),
    Fixed("padding_id", None),
)  # fmt: skip


def _fused_attention(name, attention):
    """`c_attn`: one `Conv1D` for the query, key and value projections."""
    dense = (attention.query_dense, attention.key_dense, attention.value_dense)
    shapes = [tuple(layer.kernel.shape) for layer in dense]
    bias_shapes = [tuple(layer.bias.shape) for layer in dense]

    def split(array, axis, shapes):
        parts = np.split(array, 3, axis)
        return [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]

    def kernels(arrays):
        width = shapes[0][0]
        return np.concatenate([a.reshape(width, -1) for a in arrays], 1)

    return [
        core.Tensor(
            f"{name}.weight",
            [(layer, "kernel") for layer in dense],
            lambda matrix: split(matrix, 1, shapes),
            kernels,
        ),
        core.Tensor(
            f"{name}.bias",
            [(layer, "bias") for layer in dense],
            lambda bias: split(bias, 0, bias_shapes),
            lambda arrays: np.concatenate([a.reshape(-1) for a in arrays]),
        ),
    ]


BLOCK = (
    ("ln_1", "self_attention_norm", core.NORM),
    ("attn.c_attn", "self_attention", _fused_attention),
    ("attn.c_proj", "self_attention.output_dense", CONV1D_FROM_HEADS),
    ("ln_2", "feed_forward_norm", core.NORM),
    *core.feed_forward_rows("mlp.{}", "c_fc c_proj", CONV1D),
)
LAYOUT = (
    ("transformer.wte.weight", "embedding.token_embedding",
     core.variable("embeddings")),
    ("transformer.wpe.weight", "embedding",
     core.variable("position_embeddings")),
    core.Stack("transformer.h.{}", "blocks", BLOCK),
    ("transformer.ln_f", "final_norm", core.NORM),
)  # fmt: skip

FAMILIES = (
    core.Family(
        "gpt2", "GPT2LMHeadModel", models.CausalLM, FIELDS, LAYOUT,
        prefix="transformer.", aliases=("GPT2Model",),
    ),
)  # fmt: skip

"""OPT (`opt`): a `CausalLM` with learned positions, pre-norm layer norms,
ReLU and a tied head.

Its position table has two rows more than positions: transformers reads
row `position + 2` (the first two rows served fairseq's padding). The
model's `PositionalEmbedding` holds `max_position_embeddings` rows; the
first two are dropped on loading and written back as zeros, which no
unpadded sequence reads. OPT-350m's projections between a narrower
embedding and the blocks (`word_embed_proj_dim`), post-norm variants
(`do_layer_norm_before=False`) and norms without weights are refused.
"""

import numpy as np

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields, phi
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed

# transformers' OPTLearnedPositionalEmbedding.offset
POSITION_OFFSET = 2


def _positions_to_keras(table):
    return [table[POSITION_OFFSET:]]


def _positions_to_checkpoint(tables):
    return np.pad(tables[0], ((POSITION_OFFSET, 0), (0, 0)))


BIAS = {True: True, False: False}
PLAIN_ATTENTION = {
    path: value
    for path, value in fields.PLAIN_BLOCKS.items()
    if not path.endswith("use_bias")
}

FIELDS = (
    Field("vocab_size", "vocab_size"),
    Field("hidden_size", "embed_dim"),
    # Equal to the width, or OPT-350m's projections, which are refused.
    Field("word_embed_proj_dim", "embed_dim", None),
    Field("ffn_dim", "feed_forward.hidden_dim"),
    Field("num_hidden_layers", "num_layers"),
    Field("num_attention_heads", "attention.num_heads"),
    Field("max_position_embeddings", "sequence_length"),
    Field("activation_function", "feed_forward.activation", "relu",
          fields.ACTIVATIONS),
    Field("dropout", "dropout", 0.1),
    Field("enable_bias", "attention.use_bias", True, BIAS),
    Field("enable_bias", "feed_forward.use_bias", True, BIAS),
    Field("tie_word_embeddings", "tie_embeddings", True),
    Constant("do_layer_norm_before", True),
    Constant("_remove_final_layer_norm", False),
    Constant("layer_norm_elementwise_affine", True),
    Constant("attention_dropout", 0.0, checked=False),  # none on weights
    Constant("layerdrop", 0.0, checked=False),  # training only
    Fixed("norm.type", "layer"),
    Fixed("norm.epsilon", 1e-5),  # OPT's LayerNorm default
    Fixed("norm.placement", "pre"),
    *fields.off("residual"),
    *fields.fixed(PLAIN_ATTENTION),
    Fixed("output_bias", False, unless="tie_embeddings"),
    Fixed("padding_id", None),
    *phi.UNUSED,
    *fields.off("attention.sliding_window"),
)  # fmt: skip

BLOCK = (
    ("self_attn_layer_norm", "self_attention_norm", core.NORM),
    *core.attention_rows("self_attn.{}", "q_proj k_proj v_proj out_proj"),
    ("final_layer_norm", "feed_forward_norm", core.NORM),
    *core.feed_forward_rows("{}", "fc1 fc2"),
)
LAYOUT = (
    ("model.decoder.embed_tokens.weight", "embedding.token_embedding",
     core.variable("embeddings")),
    ("model.decoder.embed_positions.weight", "embedding",
     core.variable("position_embeddings", _positions_to_keras,
                   _positions_to_checkpoint)),
    core.Stack("model.decoder.layers.{}", "blocks", BLOCK),
    ("model.decoder.final_layer_norm", "final_norm", core.NORM),
    ("lm_head", "output_projection", core.LINEAR),
)  # fmt: skip

FAMILIES = (
    core.Family(
        "opt", "OPTForCausalLM", models.CausalLM, FIELDS, LAYOUT,
        prefix="model.",
    ),
)  # fmt: skip

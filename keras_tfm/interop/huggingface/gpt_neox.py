"""GPT-NeoX (`gpt_neox`, Pythia): a `CausalLM` with partial rotary
positions and, by default, a parallel residual.

`use_parallel_residual` runs attention and the feed-forward from two layer
norms of the same input (`residual="parallel"`); without it the block is
sequential. A quarter of each head rotates (`rotary_pct`, or the rope
parameters' `partial_rotary_factor`, as `attention.rotary["fraction"]`).
The query, key and value projections are one `query_key_value` tensor
whose rows run head by head (`fused.fused(..., per_head=True)`), and the
head, `embed_out`, is untied and has no bias.
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields, fused, phi
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed


def _rotary(config):
    return phi.partial_rotary(
        config,
        "rotary_pct",
        default_fraction=0.25,
        base_field="rotary_emb_base",
    )


FIELDS = (
    Field("vocab_size", "vocab_size"),
    Field("hidden_size", "embed_dim"),
    Field("intermediate_size", "feed_forward.hidden_dim"),
    Field("num_hidden_layers", "num_layers"),
    Field("num_attention_heads", "attention.num_heads"),
    Field("max_position_embeddings", "sequence_length"),
    Field("hidden_act", "feed_forward.activation", "gelu",
          fields.ACTIVATIONS),
    Field("layer_norm_eps", "norm.epsilon", 1e-5),
    Field("hidden_dropout", "dropout", 0.0),
    Field("use_parallel_residual", "residual", True,
          {True: "parallel", False: "sequential"}),
    Field("attention_bias", "attention.use_bias", True,
          {True: True, False: False}),
    Field("rope_parameters", "attention.rotary", load=_rotary,
          save=phi.partial_rope_parameters),
    Field("tie_word_embeddings", "tie_embeddings", False),
    Constant("attention_dropout", 0.0, checked=False),  # none on weights
    Constant("classifier_dropout", 0.1, checked=False),  # no classifier
    Fixed("attention.key_dim", None),
    Fixed("attention.num_kv_heads", None),
    Fixed("attention.attention_scale", None),
    Fixed("feed_forward.use_bias", True),
    Fixed("norm.type", "layer"),
    Fixed("norm.placement", "pre"),
    Fixed("output_bias", False, unless="tie_embeddings"),
    Fixed("padding_id", None),
    *phi.UNUSED,
    *fields.off("attention.sliding_window"),
)  # fmt: skip

BLOCK = (
    ("input_layernorm", "self_attention_norm", core.NORM),
    ("attention.query_key_value", "self_attention",
     fused.fused("query_dense key_dense value_dense", per_head=True)),
    ("attention.dense", "self_attention.output_dense",
     core.LINEAR_FROM_HEADS),
    ("post_attention_layernorm", "feed_forward_norm", core.NORM),
    *core.feed_forward_rows("mlp.{}", "dense_h_to_4h dense_4h_to_h"),
)  # fmt: skip
LAYOUT = (
    ("gpt_neox.embed_in.weight", "embedding.token_embedding",
     core.variable("embeddings")),
    core.Stack("gpt_neox.layers.{}", "blocks", BLOCK),
    ("gpt_neox.final_layer_norm", "final_norm", core.NORM),
    ("embed_out", "output_projection", core.LINEAR),
)  # fmt: skip

FAMILIES = (
    core.Family(
        "gpt_neox", "GPTNeoXForCausalLM", models.CausalLM, FIELDS, LAYOUT,
        prefix="gpt_neox.",
    ),
)  # fmt: skip

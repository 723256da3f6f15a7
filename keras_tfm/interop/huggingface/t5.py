"""T5 (`t5`, v1.0 and v1.1): `T5ForConditionalGeneration` as a
`Seq2SeqTransformer`.

Positions are T5's relative-position biases (`RelativePositionBias`, one
per stack, whose weights the first block of each stack holds), attention
is unscaled (`attention_scale=1.0`) with `key_dim=d_kv`, norms are pre-norm
RMS norms and there are no biases. v1.0 (`relu`) scales the decoder's
output before the tied projection; v1.1 (`gated-gelu`) has a gated
feed-forward, whose projections are named after the gate (`wi_0`) and the
hidden one (`wi_1`).

transformers 5 always ties T5's output projection to its embedding: a T5
with its own `lm_head` (v1.1 as transformers 4 saved it) loads, but is not
written back.
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed
from keras_tfm.layers.feed_forward import GATED_ACTIVATIONS

# `feed_forward_proj` and keras_tfm's activations; writing picks the first.
PROJECTIONS = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gated-gelu": "geglu_tanh",
    "gated-silu": "swiglu",
}


def activation(config):
    """T5's `feed_forward_proj` (and `dense_act_fn`) as an activation."""
    projection = config.get("feed_forward_proj", "relu")
    gated = projection.startswith("gated-")
    function = config.get("dense_act_fn") or projection.removeprefix("gated-")
    if projection == "gated-gelu":
        function = "gelu_new"  # what transformers runs for "gated-gelu"
    activations = (
        {"gelu_new": "geglu_tanh", "silu": "swiglu"}
        if gated
        else {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh"}
    )
    if function not in activations:
        raise ValueError(
            f"config.json has feed_forward_proj={projection!r} (activation "
            f"{function!r}), which keras_tfm does not support for T5: "
            f"expected one of {list(PROJECTIONS)}."
        )
    return activations[function]


def _tied_scaling(options):
    """`tie_word_embeddings`, from which transformers 5 reads whether the
    decoder's output is scaled (it always ties)."""
    if not options["tie_embeddings"]:
        raise ValueError(
            "`model` has tie_embeddings=False, but transformers 5 always "
            "ties T5's output projection to its embedding: T5 with its own "
            "`lm_head` loads into keras_tfm but cannot be written back."
        )
    return options["scale_tied_logits"]


def _scaled(config):
    tied = config.get("tie_word_embeddings", True)
    return tied and config.get("scale_decoder_outputs", True)


def _buckets(options):
    if options["relative_position_buckets"] is None:
        raise ValueError(
            "`model` has relative_position_buckets=None; T5 needs relative "
            "position biases."
        )
    return options["relative_position_buckets"]


FIELDS = (
    Field("vocab_size", "vocab_size"),
    Field("n_positions", "sequence_length",
          load=lambda config: config.get("n_positions") or 512),
    Field("d_model", "embed_dim"),
    Field("d_kv", "attention.key_dim", save=fields.head_dim),
    Field("d_ff", "feed_forward.hidden_dim"),
    Field("num_layers", "num_layers"),
    Field("num_decoder_layers", "num_layers", None),
    Field("num_heads", "attention.num_heads"),
    Field("feed_forward_proj", "feed_forward.activation", "relu",
          PROJECTIONS, load=activation),
    Field("layer_norm_epsilon", "norm.epsilon", 1e-6),
    Field("relative_attention_num_buckets", "relative_position_buckets", 32,
          save=_buckets),
    Field("relative_attention_max_distance",
          "relative_position_max_distance", 128),
    Field("dropout_rate", "dropout", 0.1),
    Field("tie_word_embeddings", "tie_embeddings", True, save=_tied_scaling),
    Field("scale_decoder_outputs", "scale_tied_logits", load=_scaled),
    Field("pad_token_id", "padding_id", 0),
    # The decoder starts from the padding id.
    Field("decoder_start_token_id", None,
          save=lambda options: options["padding_id"]),
    Constant("is_encoder_decoder", True),
    *fields.fixed(fields.NO_ATTENTION_VARIANTS),
    *fields.fixed({
        "position": None,
        "stack_norms": True,
        "norm.type": "rms",
        "norm.placement": "pre",
        "attention.use_bias": False,
        "attention.attention_scale": 1.0,
        "attention.rotary": None,
        "attention.num_kv_heads": None,
        "feed_forward.use_bias": False,
        "scale_embeddings": False,
        "decoder_mask_zero": False,
        "target_vocab_size": None,
        # The options of later sequence-to-sequence families, off.
        "stack_positions": None,
        "embedding_norm": False,
        "logits_bias": False,
        "encoder_features": None,
        "decoder_start_token_id": None,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
    }),
    Fixed("output_bias", False, unless="tie_embeddings"),
)  # fmt: skip


def _block(decoder, gated):
    """The rows of an encoder or decoder block."""
    rows = (
        *core.attention_rows("layer.0.SelfAttention.{}", "q k v o"),
        ("layer.0.layer_norm", "self_attention_norm", core.NORM),
    )
    if decoder:
        rows += (
            *core.attention_rows(
                "layer.1.EncDecAttention.{}", "q k v o", "cross_attention_layer"
            ),
            ("layer.1.layer_norm", "cross_attention_norm", core.NORM),
        )
    last = f"layer.{2 if decoder else 1}"
    names = "wi_1 wo wi_0" if gated else "wi wo"
    return (
        *rows,
        *core.feed_forward_rows(f"{last}.DenseReluDense.{{}}", names),
        (f"{last}.layer_norm", "feed_forward_norm", core.NORM),
    )


EMBEDDINGS = core.variable("embeddings")


def layout(model):
    gated = model.feed_forward_options["activation"] in GATED_ACTIVATIONS
    bias = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    return (
        ("shared.weight", "decoder_embedding.token_embedding", EMBEDDINGS),
        (f"encoder.{bias}", "encoder_position_bias", EMBEDDINGS),
        (f"decoder.{bias}", "decoder_position_bias", EMBEDDINGS),
        core.Stack("encoder.block.{}", "encoder_blocks", _block(False, gated)),
        core.Stack("decoder.block.{}", "decoder_blocks", _block(True, gated)),
        ("encoder.final_layer_norm", "encoder_norm", core.NORM),
        ("decoder.final_layer_norm", "decoder_norm", core.NORM),
        ("lm_head", "output_projection", core.LINEAR),
    )  # fmt: skip


FAMILIES = (
    core.Family(
        "t5", "T5ForConditionalGeneration", models.Seq2SeqTransformer,
        FIELDS, layout,
    ),
)  # fmt: skip

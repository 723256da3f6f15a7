"""BART (`bart`) and mBART (`mbart`): `BartForConditionalGeneration` and
`MBartForConditionalGeneration` as a `Seq2SeqTransformer`.

Both share one token embedding between the stacks and the tied output
projection (`model.shared`), give each stack its own learned position
table, read two rows on (`stack_positions={"offset": 2}`: fairseq kept the
first two for padding), and normalize the embeddings
(`embedding_norm`, BART's `layernorm_embedding`). BART's blocks are
post-norm; mBART's are pre-norm and each stack ends in a norm
(`stack_norms`). The logits get `final_logits_bias`, a buffer transformers
never trains (`logits_bias`, a non-trainable weight).

The decoder starts from `decoder_start_token_id` (else `bos_token_id`, as
transformers falls back to); `forced_bos_token_id` and
`forced_eos_token_id` are the tokens `generation.generate` forces first and
last (mBART's target language; BART's end id). These are read from
config.json, where older checkpoints keep them.

transformers counts positions from 0 whatever the padding, as keras_tfm
does. Untied output projections (`tie_word_embeddings=False`) are refused.
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed

# transformers' BartLearnedPositionalEmbedding.offset
POSITION_OFFSET = 2


def _start_id(config):
    """The decoder's first id: transformers takes `bos_token_id` when
    `decoder_start_token_id` is unset (mBART's config)."""
    start = config.get("decoder_start_token_id")
    return config.get("bos_token_id") if start is None else start


# The two stacks' sizes and activation, one option each (keras_tfm's
# stacks are equal): BART's layout of them, which Whisper's shares.
STACK_SIZES = (
    Field("d_model", "embed_dim"),
    Field("encoder_layers", "num_layers"),
    Field("decoder_layers", "num_layers"),
    Field("encoder_attention_heads", "attention.num_heads"),
    Field("decoder_attention_heads", "attention.num_heads"),
    Field("encoder_ffn_dim", "feed_forward.hidden_dim"),
    Field("decoder_ffn_dim", "feed_forward.hidden_dim"),
    Field("activation_function", "feed_forward.activation", "gelu",
          fields.ACTIVATIONS),
)  # fmt: skip


def common_fields(scale_embedding=False, logits_bias=True):
    """The config fields BART, mBART, Marian and M2M-100 share: the two
    stacks' sizes (equal, as keras_tfm's stacks are), dropout rates that
    act in training only, and the decoder's start and forced ids."""
    return (
        Field("vocab_size", "vocab_size"),
        Field("max_position_embeddings", "sequence_length"),
        *STACK_SIZES,
        Field("dropout", "dropout", 0.1),
        Field("scale_embedding", "scale_embeddings", scale_embedding),
        Field("pad_token_id", "padding_id", 1),
        Field("decoder_start_token_id", "decoder_start_token_id",
              load=_start_id),
        Field("forced_bos_token_id", "forced_bos_token_id", None),
        Field("forced_eos_token_id", "forced_eos_token_id", None),
        Constant("is_encoder_decoder", True),
        Constant("tie_word_embeddings", True),
        # Dropout inside attention and the feed-forward, and dropped
        # layers: training only, and keras_tfm has none.
        Constant("attention_dropout", 0.0, checked=False),
        Constant("activation_dropout", 0.0, checked=False),
        Constant("encoder_layerdrop", 0.0, checked=False),
        Constant("decoder_layerdrop", 0.0, checked=False),
        *fields.fixed({
            **fields.PLAIN_BLOCKS,
            "norm.type": "layer",
            "norm.epsilon": 1e-5,  # torch.nn.LayerNorm's default
            "target_vocab_size": None,
            "tie_embeddings": True,
            "relative_position_buckets": None,
            "relative_position_max_distance": 128,
            "scale_tied_logits": False,
            "logits_bias": logits_bias,
            "encoder_features": None,
        }),
        Fixed("output_bias", True, unless="tie_embeddings"),
    )  # fmt: skip


def _fields(pre_norm):
    return (
        *common_fields(),
        *fields.fixed({
            "position": None,
            "stack_positions": {
                "type": "learned", "offset": POSITION_OFFSET,
                "sinusoid": "interleaved",
            },
            "embedding_norm": True,
            "norm.placement": "pre" if pre_norm else "post",
            "stack_norms": pre_norm,
            "decoder_mask_zero": True,
        }),
    )  # fmt: skip


def block_rows(decoder):
    """The rows of an encoder or decoder layer (the same names in every
    family of this module and `marian`)."""
    rows = (
        *core.attention_rows("self_attn.{}", "q_proj k_proj v_proj out_proj"),
        ("self_attn_layer_norm", "self_attention_norm", core.NORM),
    )
    if decoder:
        rows += (
            *core.attention_rows(
                "encoder_attn.{}",
                "q_proj k_proj v_proj out_proj",
                "cross_attention_layer",
            ),
            ("encoder_attn_layer_norm", "cross_attention_norm", core.NORM),
        )
    return (
        *rows,
        *core.feed_forward_rows("{}", "fc1 fc2"),
        ("final_layer_norm", "feed_forward_norm", core.NORM),
    )


def _bias_to_keras(array):
    return [array[0]]  # saved as (1, vocab)


def _bias_to_checkpoint(arrays):
    return arrays[0][None]


EMBEDDINGS = core.variable("embeddings")
# Rows every family of this module and `marian` has.
SHARED_LAYOUT = (
    ("model.shared.weight", "decoder_embedding.token_embedding", EMBEDDINGS),
    core.Stack("model.encoder.layers.{}", "encoder_blocks", block_rows(False)),
    core.Stack("model.decoder.layers.{}", "decoder_blocks", block_rows(True)),
    ("model.encoder.layer_norm", "encoder_norm", core.NORM),
    ("model.decoder.layer_norm", "decoder_norm", core.NORM),
    ("final_logits_bias", "logits_bias_layer",
     core.variable("bias", _bias_to_keras, _bias_to_checkpoint)),
)  # fmt: skip
LAYOUT = (
    *SHARED_LAYOUT,
    ("model.encoder.embed_positions.weight", "encoder_positions", EMBEDDINGS),
    ("model.decoder.embed_positions.weight", "decoder_positions", EMBEDDINGS),
    ("model.encoder.layernorm_embedding", "encoder_embedding_norm",
     core.NORM),
    ("model.decoder.layernorm_embedding", "decoder_embedding_norm",
     core.NORM),
)  # fmt: skip

FAMILIES = (
    core.Family(
        "bart", "BartForConditionalGeneration", models.Seq2SeqTransformer,
        _fields(pre_norm=False), LAYOUT,
    ),
    core.Family(
        "mbart", "MBartForConditionalGeneration", models.Seq2SeqTransformer,
        _fields(pre_norm=True), LAYOUT,
    ),
)  # fmt: skip

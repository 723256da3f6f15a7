"""Whisper (`whisper`): `WhisperForConditionalGeneration` (and
`WhisperModel`'s tensors) as a `Seq2SeqTransformer` whose encoder takes
log-mel features (`encoder_features`).

The encoder embeds features `(batch, frames, num_mel_bins)`, channels last
(transformers' `input_features` transposed), with an `AudioEmbedding`: two
convolutions and the sinusoidal table the checkpoint stores. Blocks are
pre-norm with a final norm per stack; attention has no key bias
(`use_bias=["query", "value", "output"]`); the decoder adds learned
positions and its output projection is its embedding.

transformers' encoder requires exactly `2 * max_source_positions` frames
(30 s of audio, padded with silence), which are what the checkpoints were
trained on; keras_tfm takes up to that many. Whisper's decoder has no
padding id: `pad_token_id` is its end id, which a target must keep in the
loss, so the decoder masks nothing (`decoder_mask_zero=False`): its
attention is causal, so right padding leaves the real positions as they
are, and a `sample_weight` leaves padding out of a loss.

`generation.generate` decodes from the prompt given, such as
`[decoder_start_token_id, language, task, notimestamps]` ids, or from
`decoder_start_token_id` alone for a prompt dict without
`"decoder_tokens"`. The logits processors of transformers' Whisper
`generate` (its generation config's `suppress_tokens` and
`begin_suppress_tokens`, forced ids, language detection, timestamps) are
not applied: it equals transformers' greedy `generate` where those are
empty. A decoder with other sizes than the encoder (distil-whisper's 2
decoder layers) is refused.
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import bart, core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field, Fixed


def _features(options):
    """The options of the encoder's `AudioEmbedding`; a model whose
    encoder takes token ids has none."""
    features = options["encoder_features"]
    if features is None:
        raise ValueError(
            "`model` has encoder_features=None; Whisper's encoder takes "
            "audio features (a Seq2SeqTransformer with encoder_features="
            "{'channels': ..., 'sequence_length': ...})."
        )
    return features


def _source_positions(options):
    features = _features(options)
    return features.get("sequence_length", options["sequence_length"])


FIELDS = (
    Field("vocab_size", "vocab_size"),
    Field("max_target_positions", "sequence_length", 448),
    Field("max_source_positions", "encoder_features.sequence_length", 1500,
          save=_source_positions),
    Field("num_mel_bins", "encoder_features.channels", 80,
          save=lambda options: _features(options)["channels"]),
    *bart.STACK_SIZES,
    Field("dropout", "dropout", 0.0),
    Field("tie_word_embeddings", "tie_embeddings", True),
    Field("pad_token_id", "padding_id", 50256),
    Field("decoder_start_token_id", "decoder_start_token_id", 50257),
    Constant("is_encoder_decoder", True),
    # transformers reads `scale_embedding` but never scales.
    Constant("scale_embedding", False, checked=False),
    # Used in training only.
    Constant("attention_dropout", 0.0, checked=False),
    Constant("activation_dropout", 0.0, checked=False),
    Constant("encoder_layerdrop", 0.0, checked=False),
    Constant("decoder_layerdrop", 0.0, checked=False),
    Constant("apply_spec_augment", False, checked=False),
    *fields.fixed(fields.NO_ATTENTION_VARIANTS),
    *fields.fixed({
        "position": "learned",
        "stack_positions": None,
        "stack_norms": True,
        "embedding_norm": False,
        "norm.type": "layer",
        "norm.epsilon": 1e-5,
        "norm.placement": "pre",
        "attention.use_bias": ["query", "value", "output"],
        "attention.attention_scale": None,
        "attention.rotary": None,
        "attention.key_dim": None,
        "attention.num_kv_heads": None,
        "feed_forward.use_bias": True,
        "scale_embeddings": False,
        "scale_tied_logits": False,
        "logits_bias": False,
        "decoder_mask_zero": False,
        "target_vocab_size": None,
        "relative_position_buckets": None,
        "relative_position_max_distance": 128,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
    }),
    Fixed("output_bias", False, unless="tie_embeddings"),
)  # fmt: skip


def _convolution(name, layer):
    """A `Conv1D` kernel `(width, in, out)`, PyTorch's `(out, in, width)`,
    and bias."""
    return [
        core.Tensor(
            f"{name}.weight",
            [(layer, "kernel")],
            lambda kernel: [kernel.transpose(2, 1, 0)],
            lambda kernels: kernels[0].transpose(2, 1, 0),
        ),
        core.Tensor(f"{name}.bias", [(layer, "bias")]),
    ]


POSITIONS = core.variable("position_embeddings")


def _block(decoder):
    """The rows of an encoder or decoder layer."""
    rows = (
        *core.attention_rows("self_attn.{}", "q_proj k_proj v_proj out_proj"),
        ("self_attn_layer_norm", "self_attention_norm", core.NORM),
    )
    if decoder:
        rows += (
            *core.attention_rows(
                "encoder_attn.{}", "q_proj k_proj v_proj out_proj",
                "cross_attention_layer",
            ),
            ("encoder_attn_layer_norm", "cross_attention_norm", core.NORM),
        )  # fmt: skip
    return (
        *rows,
        *core.feed_forward_rows("{}", "fc1 fc2"),
        ("final_layer_norm", "feed_forward_norm", core.NORM),
    )


LAYOUT = (
    ("model.encoder.conv1", "encoder_embedding.conv_1", _convolution),
    ("model.encoder.conv2", "encoder_embedding.conv_2", _convolution),
    ("model.encoder.embed_positions.weight", "encoder_embedding", POSITIONS),
    ("model.decoder.embed_tokens.weight", "decoder_embedding.token_embedding",
     core.variable("embeddings")),
    ("model.decoder.embed_positions.weight", "decoder_embedding", POSITIONS),
    core.Stack("model.encoder.layers.{}", "encoder_blocks", _block(False)),
    core.Stack("model.decoder.layers.{}", "decoder_blocks", _block(True)),
    ("model.encoder.layer_norm", "encoder_norm", core.NORM),
    ("model.decoder.layer_norm", "decoder_norm", core.NORM),
    ("proj_out", "output_projection", core.LINEAR),
)  # fmt: skip

FAMILIES = (
    core.Family(
        "whisper", "WhisperForConditionalGeneration",
        models.Seq2SeqTransformer, FIELDS, LAYOUT, prefix="model.",
        aliases=("WhisperModel",),
    ),
)  # fmt: skip

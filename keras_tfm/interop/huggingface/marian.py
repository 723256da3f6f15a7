"""Marian (`marian`, the Opus-MT models) and M2M-100 (`m2m_100`, NLLB's
dense models too): `MarianMTModel` and `M2M100ForConditionalGeneration` as
a `Seq2SeqTransformer`.

Both share BART's layer names (`bart.block_rows`) and one token embedding
tied to the output projection, and add fixed sinusoids to each stack
(`stack_positions`), with no embedding norm:

- Marian: post-norm blocks; the paper's sinusoid with its sines first
  (`"sinusoid": "halves"`), which the checkpoint also stores: those
  tensors are not read (keras_tfm computes the same values) nor written
  (transformers computes them when they are missing); `final_logits_bias`.
  Its decoder starts from the padding id, so the target's padding is not
  masked (`decoder_mask_zero=False`). Separate source and target
  vocabularies (`share_encoder_decoder_embeddings=False`) are refused.
- M2M-100: pre-norm blocks that end each stack with a norm; fairseq's
  sinusoid (`"tensor2tensor"`) two positions on. transformers counts
  positions over the non-padding tokens only: the same for right-padded
  sources (as keras_tfm pads), not for left-padded ones.

The options a family fixes and config.json's `activation_function`
(`gelu`, `gelu_new`, `relu`, and Opus-MT's `swish`) follow
`bart.common_fields`.
"""

from keras_tfm import models
from keras_tfm.interop.huggingface import bart, core, fields
from keras_tfm.interop.huggingface.fields import Constant, Field

MARIAN_FIELDS = (
    *bart.common_fields(),
    # The target's vocabulary: unset, or the source's (one shared table).
    Field("decoder_vocab_size", "vocab_size", None),
    Constant("share_encoder_decoder_embeddings", True),
    *fields.fixed({
        "position": None,
        "stack_positions": {
            "type": "sinusoidal", "offset": 0, "sinusoid": "halves",
        },
        "embedding_norm": False,
        "norm.placement": "post",
        "stack_norms": False,
        "decoder_mask_zero": False,
    }),
)  # fmt: skip
M2M_100_FIELDS = (
    *bart.common_fields(scale_embedding=True, logits_bias=False),
    *fields.fixed({
        "position": None,
        "stack_positions": {
            "type": "sinusoidal", "offset": bart.POSITION_OFFSET,
            "sinusoid": "tensor2tensor",
        },
        "embedding_norm": False,
        "norm.placement": "pre",
        "stack_norms": True,
        "decoder_mask_zero": True,
    }),
)  # fmt: skip

FAMILIES = (
    core.Family(
        "marian", "MarianMTModel", models.Seq2SeqTransformer, MARIAN_FIELDS,
        bart.SHARED_LAYOUT,
    ),
    core.Family(
        "m2m_100", "M2M100ForConditionalGeneration",
        models.Seq2SeqTransformer, M2M_100_FIELDS, bart.SHARED_LAYOUT,
    ),
)  # fmt: skip

"""Model classes, one module per architecture, and their builders.

Each architecture is a small `keras.Model` subclass built with the
functional API in its `__init__` (keras-hub's `Backbone` pattern), so it
trains with `model.fit`, prints with `model.summary()`, and saves and
reloads with `model.save()` / `keras.models.load_model()` as the same class.
Each keeps its parts as attributes (`embedding`, `blocks`, `final_norm`,
...), and the decoders own their inference entry points: `CausalLM` and
`Seq2SeqTransformer` implement `initial_cache` and `call_with_cache`, the
decoding contract of `keras_tfm.generation`. Layer names (`embedding`,
`encoder_block_0`, ...) are stable, so weight paths are too.

The builder functions (`causal_lm(...)`, `seq2seq_transformer(...)`, ...)
are the short way to make one.
"""

from keras_tfm.models.causal_lm import CausalLM, causal_lm
from keras_tfm.models.dual_encoder import DualEncoder
from keras_tfm.models.forecaster import Forecaster, forecaster
from keras_tfm.models.masked_lm import (
    MaskedLM,
    masked_lm,
    masked_lm_encoder,
)
from keras_tfm.models.seq2seq import Seq2SeqTransformer, seq2seq_transformer
from keras_tfm.models.text import TextClassifier, TextEncoder, text_classifier
from keras_tfm.models.token_classifier import TokenClassifier
from keras_tfm.models.vision import ViTClassifier, ViTEncoder, vit_classifier

__all__ = [
    "CausalLM",
    "DualEncoder",
    "Forecaster",
    "MaskedLM",
    "Seq2SeqTransformer",
    "TextClassifier",
    "TextEncoder",
    "TokenClassifier",
    "ViTClassifier",
    "ViTEncoder",
    "causal_lm",
    "forecaster",
    "masked_lm",
    "masked_lm_encoder",
    "seq2seq_transformer",
    "text_classifier",
    "vit_classifier",
]

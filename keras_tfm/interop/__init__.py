"""Weights from elsewhere, in and out of keras_tfm.

- `from_torch`, `load_torch`, `load_torch_transformer`: copy `torch.nn`
  Transformer layers (`keras_tfm.interop.torch_layers`).
- `from_huggingface`, `to_huggingface`: read and write Hugging Face
  checkpoints, a directory with `config.json` and safetensors weights
  (`keras_tfm.interop.huggingface`).
- `load_tokenizer`: a checkpoint's tokenizer.json, special tokens and chat
  template (`keras_tfm.interop.tokenizer`).
"""

from keras_tfm.interop.huggingface import from_huggingface, to_huggingface
from keras_tfm.interop.tokenizer import load_tokenizer
from keras_tfm.interop.torch_layers import (
    from_torch,
    load_torch,
    load_torch_transformer,
)

__all__ = [
    "from_huggingface",
    "from_torch",
    "load_tokenizer",
    "load_torch",
    "load_torch_transformer",
    "to_huggingface",
]

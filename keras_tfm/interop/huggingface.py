"""Hugging Face checkpoints, in and out: `config.json` and safetensors.

`from_huggingface(directory)` builds the keras_tfm model class that computes
what the checkpoint's architecture computes and assigns its weights;
`to_huggingface(model, directory)` writes a keras_tfm model back in that
format. Weights are read and written with the `safetensors` package's NumPy
functions, so neither `torch` nor `transformers` is needed, on any backend.

Each supported `model_type` is a `_Family`: how its config becomes a model
and back, and a table of its tensors. Each entry of the table (`_Tensor`)
names the checkpoint tensor, the keras_tfm weights it fills and how the two
layouts differ, so that one table serves loading and writing.
"""

import dataclasses
import json
import math
import os
from collections.abc import Callable

import numpy as np
from keras import ops

from keras_tfm import models
from keras_tfm.extras import require

__all__ = ["from_huggingface", "to_huggingface"]

# Hugging Face's activation names and ours.
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}
_ACTIVATION_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def from_huggingface(directory):
    """Builds a keras_tfm model from a Hugging Face checkpoint directory.

    Reads `config.json` and the weights (`model.safetensors`, or the shards
    listed in `model.safetensors.index.json`) and returns the matching model
    class with the checkpoint's weights:

    | `model_type` | architectures | keras_tfm model |
    |---|---|---|
    | `gpt2` | `GPT2LMHeadModel`, `GPT2Model` | `CausalLM` |
    | `llama` | `LlamaForCausalLM` | `CausalLM` |
    | `mistral` | `MistralForCausalLM` | `CausalLM` |
    | `bert` | `BertModel` | `TextEncoder` |
    | `bert` | `BertForSequenceClassification` | `TextClassifier` |
    | `bert` | `BertForMaskedLM` | `MaskedLM` (untied head) |
    | `vit` | `ViTForImageClassification` | `ViTClassifier` |
    | `t5` | `T5ForConditionalGeneration` | `Seq2SeqTransformer` |

    Inputs follow Keras conventions: token ids `(batch, seq)` (BERT masks
    id 0 as padding and takes `segment_ids` for token types) and images
    channels-last. Llama and Mistral become a `CausalLM` with rotary
    embeddings, RMS norms and SwiGLU; a Mistral model's `sequence_length`
    is its sliding window, within which the two attentions are the same.

    Args:
        directory: The checkpoint directory (a local snapshot).

    Returns:
        The keras_tfm model, in float32.

    Raises:
        ValueError: For an unsupported `model_type`, architecture or config
            field (naming it), or a checkpoint tensor that is missing or
            has the wrong shape (naming the tensor).

    Example:

    ```python
    import transformers
    from keras_tfm import interop

    config = transformers.GPT2Config(
        vocab_size=100, n_positions=32, n_embd=32, n_layer=1, n_head=2
    )
    transformers.GPT2LMHeadModel(config).save_pretrained("tiny-gpt2")
    model = interop.from_huggingface("tiny-gpt2")  # a models.CausalLM
    ```
    """
    config = _read_json(directory, "config.json")
    family = _family(config.get("model_type"))
    model = family.build(config)
    checkpoint = _Checkpoint(directory, family.prefix)
    for tensor in family.tensors(model):
        tensor.load(checkpoint)
    return model


def to_huggingface(model, directory):
    """Writes a keras_tfm model as a Hugging Face checkpoint.

    Writes `config.json` and `model.safetensors`, which `transformers`'
    `from_pretrained` loads to the same outputs. Models of the families
    `from_huggingface` reads can be written, whether loaded from a
    checkpoint or built with keras_tfm, as long as the architecture has
    their options: a `CausalLM` becomes GPT-2 (learned positions) or Llama
    (`rotary=True`, RMS norm, SwiGLU); a `TextEncoder` or `TextClassifier`
    BERT; a `ViTClassifier` ViT. LoRA weights are merged into the kernels
    they adapt.

    Args:
        model: A keras_tfm model.
        directory: Where to write; created if needed.

    Returns:
        `directory`.

    Example:

    ```python
    from keras_tfm import interop, models

    model = models.causal_lm(
        vocab_size=100, sequence_length=32, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64, activation="gelu_tanh",
    )
    interop.to_huggingface(model, "my-gpt2")
    same = interop.from_huggingface("my-gpt2")
    ```
    """
    save_file = _safetensors("safetensors.numpy").save_file
    family = _family_of(model)
    config = {
        "model_type": family.model_type,
        "architectures": [family.architecture(model)],
        "dtype": "float32",
        **family.config(model),
    }
    tensors = {t.name: t.save() for t in family.tensors(model)}
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as file:
        json.dump(config, file, indent=2)
    save_file(
        tensors,
        os.path.join(directory, "model.safetensors"),
        metadata={"format": "pt"},
    )
    return directory


# --- Reading checkpoints -------------------------------------------------


def _safetensors(module):
    return require(
        module, "huggingface", "keras_tfm.interop (Hugging Face checkpoints)"
    )


def _read_json(directory, name):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        raise ValueError(
            f"`directory` must hold a Hugging Face checkpoint with {name}. "
            f"Received: directory={directory!r}"
        )
    with open(path) as file:
        return json.load(file)


class _Checkpoint:
    """The checkpoint's tensors by name, read lazily from its files.

    A base model's checkpoint (`GPT2Model`) names its tensors without the
    prefix of the task model's (`transformer.`); both are accepted.
    """

    def __init__(self, directory, prefix):
        safe_open = _safetensors("safetensors").safe_open
        index_path = os.path.join(directory, "model.safetensors.index.json")
        if os.path.exists(index_path):
            index = _read_json(directory, "model.safetensors.index.json")
            files = sorted(set(index["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        self.handles = {}
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                raise ValueError(
                    f"The checkpoint's weights file {name} is missing from "
                    f"{directory!r}."
                )
            handle = safe_open(path, framework="numpy")
            for key in handle.keys():
                self.handles[key] = handle
        self.prefix = prefix

    def get(self, name):
        for key in (name, name.removeprefix(self.prefix)):
            if key in self.handles:
                return self.handles[key].get_tensor(key)
        return None


@dataclasses.dataclass
class _Tensor:
    """One checkpoint tensor and the keras_tfm weights it fills.

    `weights` are `(layer, attribute)` pairs, read through the attribute so
    that a LoRA-adapted kernel is written merged. `to_keras` turns the
    checkpoint array into one array per weight; `to_checkpoint` does the
    reverse.
    """

    name: str
    weights: list
    to_keras: Callable = lambda array: [array]
    to_checkpoint: Callable = lambda arrays: arrays[0]
    # Read instead when `name` is absent (a tied tensor saved once).
    alias: str | None = None

    def _values(self):
        return [
            np.asarray(ops.convert_to_numpy(getattr(layer, attribute)))
            for layer, attribute in self.weights
        ]

    def load(self, checkpoint):
        array = checkpoint.get(self.name)
        if array is None and self.alias is not None:
            array = checkpoint.get(self.alias)
        if array is None:
            raise ValueError(
                f"The checkpoint has no tensor `{self.name}`, which the "
                "architecture in its config.json needs."
            )
        # Only the shapes matter here: uninitialised arrays, not the values.
        placeholders = [
            np.empty(getattr(layer, attribute).shape, "float32")
            for layer, attribute in self.weights
        ]
        expected = self.to_checkpoint(placeholders).shape
        if array.shape != expected:
            raise ValueError(
                f"The checkpoint's tensor `{self.name}` has shape "
                f"{array.shape}; its config.json implies {expected}."
            )
        for (layer, attribute), value in zip(
            self.weights, self.to_keras(array), strict=True
        ):
            variable = getattr(layer, attribute)
            variable.assign(value.astype(variable.dtype))

    def save(self):
        return np.ascontiguousarray(self.to_checkpoint(self._values()))


# --- Tensor tables: the layouts' differences, in both directions ---------


def _linear(name, layer, input_axes=1, transposed=True):
    """A Dense or EinsumDense kernel (and bias) as a checkpoint matrix.

    PyTorch's `Linear` keeps `(out, in)` (`transposed=True`); GPT-2's
    `Conv1D` keeps `(in, out)`. The first `input_axes` axes of the kernel
    are its inputs: attention projections split heads over two axes.
    """
    shape = tuple(layer.kernel.shape)
    inputs = math.prod(shape[:input_axes])

    def to_keras(matrix):
        return [(matrix.T if transposed else matrix).reshape(shape)]

    def to_checkpoint(kernels):
        matrix = kernels[0].reshape(inputs, -1)
        return matrix.T if transposed else matrix

    tensors = [
        _Tensor(f"{name}.weight", [(layer, "kernel")], to_keras, to_checkpoint)
    ]
    if layer.bias is not None:
        bias_shape = tuple(layer.bias.shape)
        tensors.append(
            _Tensor(
                f"{name}.bias",
                [(layer, "bias")],
                lambda bias: [bias.reshape(bias_shape)],
                lambda biases: biases[0].reshape(-1),
            )
        )
    return tensors


def _norm(name, layer):
    if hasattr(layer, "gamma"):  # LayerNormalization
        return [
            _Tensor(f"{name}.weight", [(layer, "gamma")]),
            _Tensor(f"{name}.bias", [(layer, "beta")]),
        ]
    return [_Tensor(f"{name}.weight", [(layer, "scale")])]  # RMS


def _attention(prefix, attention, names):
    """Separate query, key, value and output projections."""
    query, key, value, output = names
    return [
        *_linear(f"{prefix}.{query}", attention.query_dense),
        *_linear(f"{prefix}.{key}", attention.key_dense),
        *_linear(f"{prefix}.{value}", attention.value_dense),
        *_linear(f"{prefix}.{output}", attention.output_dense, input_axes=2),
    ]


def _fused_attention(prefix, attention):
    """GPT-2's `c_attn`: one `Conv1D` for queries, keys and values."""
    dense = (attention.query_dense, attention.key_dense, attention.value_dense)
    shapes = [tuple(layer.kernel.shape) for layer in dense]
    bias_shapes = [tuple(layer.bias.shape) for layer in dense]
    width = shapes[0][0]
    return [
        _Tensor(
            f"{prefix}.c_attn.weight",
            [(layer, "kernel") for layer in dense],
            lambda matrix: [
                part.reshape(shape)
                for part, shape in zip(
                    np.split(matrix, 3, 1), shapes, strict=True
                )
            ],
            lambda kernels: np.concatenate(
                [kernel.reshape(width, -1) for kernel in kernels], axis=1
            ),
        ),
        _Tensor(
            f"{prefix}.c_attn.bias",
            [(layer, "bias") for layer in dense],
            lambda bias: [
                part.reshape(shape)
                for part, shape in zip(
                    np.split(bias, 3), bias_shapes, strict=True
                )
            ],
            lambda biases: np.concatenate([b.reshape(-1) for b in biases]),
        ),
        *_linear(
            f"{prefix}.c_proj",
            attention.output_dense,
            input_axes=2,
            transposed=False,
        ),
    ]


def _feed_forward(prefix, feed_forward, names, transposed=True):
    hidden, output = names[:2]
    tensors = [
        *_linear(
            f"{prefix}{hidden}",
            feed_forward.hidden_dense,
            transposed=transposed,
        ),
        *_linear(
            f"{prefix}{output}",
            feed_forward.output_dense,
            transposed=transposed,
        ),
    ]
    if len(names) == 3:
        tensors += _linear(f"{prefix}{names[2]}", feed_forward.gate_dense)
    return tensors


def _token_embedding(name, embedding):
    return _Tensor(name, [(embedding.token_embedding, "embeddings")])


# --- Config checks -------------------------------------------------------


def _require(config, field, allowed, default=None):
    """The config's `field`, which must be one of `allowed`."""
    value = config.get(field, default)
    if value not in allowed:
        raise ValueError(
            f"config.json has {field}={value!r}, which keras_tfm does not "
            f"support for model_type={config['model_type']!r}: expected one "
            f"of {list(allowed)}."
        )
    return value


def _activation(config, field):
    return _ACTIVATIONS[_require(config, field, tuple(_ACTIVATIONS))]


def _activation_name(model, activation):
    if activation not in _ACTIVATION_NAMES:
        raise ValueError(
            f"`model` uses activation={activation!r}, which this Hugging "
            f"Face architecture cannot express: expected one of "
            f"{list(_ACTIVATION_NAMES)}."
        )
    return _ACTIVATION_NAMES[activation]


def _check_model(model, family, **expected):
    """Raises unless `model` has each of `expected`'s option values."""
    for option, value in expected.items():
        if getattr(model, option) != value:
            raise ValueError(
                f"`model` has {option}={getattr(model, option)!r}; "
                f"{family} needs {option}={value!r}."
            )


def _architecture(config, allowed):
    architecture = (config.get("architectures") or [allowed[0]])[0]
    if architecture not in allowed:
        raise ValueError(
            f"config.json has architectures=[{architecture!r}], which "
            f"keras_tfm does not load: expected one of {list(allowed)}."
        )
    return architecture


# --- The families --------------------------------------------------------


@dataclasses.dataclass
class _Family:
    model_type: str
    prefix: str  # of the task model's tensor names, absent in a base model
    build: Callable  # config -> model
    tensors: Callable  # model -> [_Tensor]
    config: Callable  # model -> config fields
    architecture: Callable  # model -> architecture name


def _gpt2_build(config):
    _architecture(config, ("GPT2LMHeadModel", "GPT2Model"))
    _require(config, "scale_attn_weights", (True,), True)
    _require(config, "scale_attn_by_inverse_layer_idx", (False,), False)
    _require(config, "add_cross_attention", (False,), False)
    width = config["n_embd"]
    return models.CausalLM(
        config["vocab_size"],
        config["n_positions"],
        num_layers=config["n_layer"],
        embed_dim=width,
        num_heads=config["n_head"],
        ff_dim=config.get("n_inner") or 4 * width,
        dropout=config.get("resid_pdrop", 0.1),
        activation=_activation(config, "activation_function"),
        layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-5),
    )


def _gpt2_tensors(model):
    tensors = [
        _token_embedding("transformer.wte.weight", model.embedding),
        _Tensor(
            "transformer.wpe.weight", [(model.embedding, "position_embeddings")]
        ),
    ]
    for index, block in enumerate(model.blocks):
        prefix = f"transformer.h.{index}"
        tensors += _norm(f"{prefix}.ln_1", block.self_attention_norm)
        tensors += _fused_attention(f"{prefix}.attn", block.self_attention)
        tensors += _norm(f"{prefix}.ln_2", block.feed_forward_norm)
        tensors += _feed_forward(
            f"{prefix}.mlp.",
            block.feed_forward,
            ("c_fc", "c_proj"),
            transposed=False,
        )
    return tensors + _norm("transformer.ln_f", model.final_norm)


def _gpt2_config(model):
    _check_model(
        model, "GPT-2", rotary=False, norm="layer", use_bias=True,
        tie_embeddings=True, mask_zero=False,
    )  # fmt: skip
    return {
        "vocab_size": model.vocab_size,
        "n_positions": model.sequence_length,
        "n_embd": model.embed_dim,
        "n_layer": model.num_layers,
        "n_head": model.num_heads,
        "n_inner": model.ff_dim,
        "activation_function": _activation_name(model, model.activation),
        "layer_norm_epsilon": model.layer_norm_epsilon,
        "resid_pdrop": model.dropout,
        "embd_pdrop": model.dropout,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": True,
    }


def _rope_theta(config):
    parameters = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    rope_type = (
        parameters.get("rope_type") or scaling.get("rope_type") or "default"
    )
    if rope_type != "default":
        raise ValueError(
            f"config.json has a rope scaling of type {rope_type!r}, which "
            "keras_tfm does not support: only the default rotary embedding."
        )
    theta = parameters.get("rope_theta", config.get("rope_theta", 10000.0))
    if theta != int(theta):
        raise ValueError(
            f"config.json has rope_theta={theta!r}; keras_tfm takes whole "
            "numbers."
        )
    return int(theta)


def _llama_build(config):
    model_type = config["model_type"]
    _architecture(config, ("LlamaForCausalLM", "MistralForCausalLM"))
    _require(config, "hidden_act", ("silu",), "silu")
    _require(config, "pretraining_tp", (1,), 1)
    bias = _require(config, "attention_bias", (False, True), False)
    _require(config, "mlp_bias", (bias,), False)
    width, heads = config["hidden_size"], config["num_attention_heads"]
    _require(config, "head_dim", (None, width // heads))
    sequence_length = config["max_position_embeddings"]
    if model_type == "mistral" and config.get("sliding_window"):
        # Within the window, sliding-window attention is full attention.
        sequence_length = min(sequence_length, config["sliding_window"])
    return models.CausalLM(
        config["vocab_size"],
        sequence_length,
        num_layers=config["num_hidden_layers"],
        embed_dim=width,
        num_heads=heads,
        ff_dim=config["intermediate_size"],
        rotary=True,
        num_kv_heads=config.get("num_key_value_heads"),
        dropout=config.get("attention_dropout", 0.0),
        activation="swiglu",
        tie_embeddings=config.get("tie_word_embeddings", False),
        norm="rms",
        layer_norm_epsilon=config.get("rms_norm_eps", 1e-6),
        use_bias=bias,
        rotary_max_wavelength=_rope_theta(config),
    )


def _llama_tensors(model):
    tensors = [_token_embedding("model.embed_tokens.weight", model.embedding)]
    for index, block in enumerate(model.blocks):
        prefix = f"model.layers.{index}"
        tensors += _norm(f"{prefix}.input_layernorm", block.self_attention_norm)
        tensors += _attention(
            f"{prefix}.self_attn",
            block.self_attention,
            ("q_proj", "k_proj", "v_proj", "o_proj"),
        )
        tensors += _norm(
            f"{prefix}.post_attention_layernorm", block.feed_forward_norm
        )
        tensors += _feed_forward(
            f"{prefix}.mlp.",
            block.feed_forward,
            ("up_proj", "down_proj", "gate_proj"),
        )
    tensors += _norm("model.norm", model.final_norm)
    if model.output_projection is not None:
        tensors += _linear("lm_head", model.output_projection)
    return tensors


def _llama_config(model):
    _check_model(
        model, "Llama", rotary=True, norm="rms", activation="swiglu",
        mask_zero=False,
    )  # fmt: skip
    return {
        "vocab_size": model.vocab_size,
        "max_position_embeddings": model.sequence_length,
        "hidden_size": model.embed_dim,
        "intermediate_size": model.ff_dim,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "num_key_value_heads": model.num_kv_heads or model.num_heads,
        "head_dim": model.embed_dim // model.num_heads,
        "hidden_act": "silu",
        "rms_norm_eps": model.layer_norm_epsilon,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": float(model.rotary_max_wavelength),
        },
        "attention_bias": model.use_bias,
        "mlp_bias": model.use_bias,
        "attention_dropout": model.dropout,
        "tie_word_embeddings": model.tie_embeddings,
    }


def _bert_encoder(config):
    _require(config, "position_embedding_type", ("absolute",), "absolute")
    _require(config, "pad_token_id", (0,), 0)
    _require(config, "is_decoder", (False,), False)
    _require(config, "add_cross_attention", (False,), False)
    return models.TextEncoder(
        config["vocab_size"],
        config["max_position_embeddings"],
        num_layers=config["num_hidden_layers"],
        embed_dim=config["hidden_size"],
        num_heads=config["num_attention_heads"],
        ff_dim=config["intermediate_size"],
        dropout=config.get("hidden_dropout_prob", 0.1),
        activation=_activation(config, "hidden_act"),
        layer_norm_epsilon=config.get("layer_norm_eps", 1e-12),
        num_segments=config.get("type_vocab_size", 2),
        embedding_norm=True,
    )


def _bert_build(config):
    architecture = _architecture(
        config,
        ("BertModel", "BertForSequenceClassification", "BertForMaskedLM"),
    )
    encoder = _bert_encoder(config)
    if architecture == "BertModel":
        return encoder
    if architecture == "BertForMaskedLM":
        # BERT's tied output projection has a bias; untied, a Dense layer
        # has both (loaded from the token embedding), so fine-tuning here
        # trains the two matrices apart.
        return models.MaskedLM(
            encoder,
            tie_embeddings=False,
            activation=_activation(config, "hidden_act"),
            layer_norm_epsilon=config.get("layer_norm_eps", 1e-12),
        )
    dropout = config.get("classifier_dropout")
    return models.TextClassifier(
        encoder,
        num_classes=len(config.get("id2label") or {0: 0, 1: 1}),
        pooling="cls",
        pooler=True,
        dropout=config.get("hidden_dropout_prob", 0.1)
        if dropout is None
        else dropout,
    )


def _bert_parts(model):
    """`(encoder, classifier or None, masked LM or None)` of a BERT model."""
    if isinstance(model, models.TextEncoder):
        return model, None, None
    if isinstance(model, models.TextClassifier):
        return model.encoder, model, None
    return model.encoder, None, model


def _bert_tensors(model):
    encoder, classifier, masked_lm = _bert_parts(model)
    embedding = encoder.embedding
    tensors = [
        _token_embedding("bert.embeddings.word_embeddings.weight", embedding),
        _Tensor(
            "bert.embeddings.position_embeddings.weight",
            [(embedding, "position_embeddings")],
        ),
        _Tensor(
            "bert.embeddings.token_type_embeddings.weight",
            [(embedding, "segment_embeddings")],
        ),
        *_norm("bert.embeddings.LayerNorm", encoder.embedding_norm),
    ]
    for index, block in enumerate(encoder.blocks):
        prefix = f"bert.encoder.layer.{index}"
        tensors += _attention(
            f"{prefix}.attention",
            block.self_attention,
            ("self.query", "self.key", "self.value", "output.dense"),
        )
        tensors += _norm(
            f"{prefix}.attention.output.LayerNorm", block.self_attention_norm
        )
        tensors += _feed_forward(
            f"{prefix}.",
            block.feed_forward,
            ("intermediate.dense", "output.dense"),
        )
        tensors += _norm(f"{prefix}.output.LayerNorm", block.feed_forward_norm)
    if classifier:
        tensors += _linear("bert.pooler.dense", classifier.pooler_dense)
        tensors += _linear("classifier", classifier.head)
    if masked_lm:
        head = "cls.predictions"
        tensors += _linear(f"{head}.transform.dense", masked_lm.head_dense)
        tensors += _norm(f"{head}.transform.LayerNorm", masked_lm.head_norm)
        projection = masked_lm.output_projection
        tensors += [
            _Tensor(
                f"{head}.decoder.weight",
                [(projection, "kernel")],
                lambda matrix: [matrix.T],
                lambda kernels: kernels[0].T,
                alias="bert.embeddings.word_embeddings.weight",
            ),
            _Tensor(
                f"{head}.decoder.bias",
                [(projection, "bias")],
                alias=f"{head}.bias",
            ),
        ]
    return tensors


def _bert_config(model):
    encoder, classifier, masked_lm = _bert_parts(model)
    if masked_lm:
        _check_model(masked_lm, "BERT's masked-LM head", tie_embeddings=False)
    if classifier:
        _check_model(
            classifier, "BERT's classifier", pooling="cls", pooler=True
        )
    _check_model(encoder, "BERT", position="learned", norm_first=False)
    if encoder.embedding_norm is None:
        raise ValueError(
            "`model` has embedding_norm=False; BERT needs embedding_norm=True."
        )
    if encoder.num_segments is None:
        raise ValueError(
            "`model` has num_segments=None; BERT needs token type "
            "embeddings: build the encoder with `num_segments`."
        )
    config = {
        "vocab_size": encoder.vocab_size,
        "max_position_embeddings": encoder.sequence_length,
        "hidden_size": encoder.embed_dim,
        "num_hidden_layers": encoder.num_layers,
        "num_attention_heads": encoder.num_heads,
        "intermediate_size": encoder.ff_dim,
        "hidden_act": _activation_name(model, encoder.activation),
        "hidden_dropout_prob": encoder.dropout,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": encoder.layer_norm_epsilon,
        "type_vocab_size": encoder.num_segments,
        "pad_token_id": 0,
    }
    if classifier:
        config["num_labels"] = classifier.num_classes
        config["classifier_dropout"] = classifier.dropout
    if masked_lm:
        config["tie_word_embeddings"] = False
    return config


def _vit_build(config):
    _architecture(config, ("ViTForImageClassification",))
    _require(config, "qkv_bias", (True,), True)
    return models.ViTClassifier(
        config["image_size"],
        config["patch_size"],
        num_classes=len(config.get("id2label") or {0: 0, 1: 1}),
        num_layers=config["num_hidden_layers"],
        embed_dim=config["hidden_size"],
        num_heads=config["num_attention_heads"],
        ff_dim=config["intermediate_size"],
        channels=config.get("num_channels", 3),
        dropout=config.get("hidden_dropout_prob", 0.0),
        layer_norm_epsilon=config.get("layer_norm_eps", 1e-12),
    )


def _vit_tensors(model):
    patches = model.patch_embedding
    position_shape = tuple(patches.position_embeddings.shape)
    tensors = [
        _Tensor("vit.embeddings.cls_token", [(patches, "class_token")]),
        _Tensor(
            "vit.embeddings.position_embeddings",
            [(patches, "position_embeddings")],
            lambda array: [array.reshape(position_shape)],
            lambda arrays: arrays[0][None],
        ),
        # PyTorch convolutions keep (out, in, height, width).
        _Tensor(
            "vit.embeddings.patch_embeddings.projection.weight",
            [(patches.projection, "kernel")],
            lambda kernel: [kernel.transpose(2, 3, 1, 0)],
            lambda kernels: kernels[0].transpose(3, 2, 0, 1),
        ),
        _Tensor(
            "vit.embeddings.patch_embeddings.projection.bias",
            [(patches.projection, "bias")],
        ),
    ]
    for index, block in enumerate(model.blocks):
        prefix = f"vit.encoder.layer.{index}"
        tensors += _norm(
            f"{prefix}.layernorm_before", block.self_attention_norm
        )
        tensors += _attention(
            f"{prefix}.attention",
            block.self_attention,
            (
                "attention.query",
                "attention.key",
                "attention.value",
                "output.dense",
            ),
        )
        tensors += _norm(f"{prefix}.layernorm_after", block.feed_forward_norm)
        tensors += _feed_forward(
            f"{prefix}.",
            block.feed_forward,
            ("intermediate.dense", "output.dense"),
        )
    tensors += _norm("vit.layernorm", model.final_norm)
    return tensors + _linear("classifier", model.head)


def _vit_config(model):
    return {
        "image_size": model.image_size,
        "patch_size": model.patch_size,
        "num_channels": model.channels,
        "hidden_size": model.embed_dim,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "intermediate_size": model.ff_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": model.dropout,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": model.layer_norm_epsilon,
        "qkv_bias": True,
        "num_labels": model.num_classes,
    }


def _t5_activation(config):
    """T5's `feed_forward_proj` (`relu`, `gated-gelu`, ...) as ours."""
    projection = config.get("feed_forward_proj", "relu")
    gated = projection.startswith("gated-")
    function = config.get("dense_act_fn") or projection.removeprefix("gated-")
    if gated and projection == "gated-gelu":
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
            "expected 'relu', 'gelu', 'gated-gelu' or 'gated-silu'."
        )
    return activations[function]


def _t5_build(config):
    _architecture(config, ("T5ForConditionalGeneration",))
    num_layers = config["num_layers"]
    _require(config, "num_decoder_layers", (num_layers, None))
    _require(config, "pad_token_id", (0,), 0)
    _require(config, "decoder_start_token_id", (0, None), 0)
    tied = config.get("tie_word_embeddings", True)
    return models.Seq2SeqTransformer(
        config["vocab_size"],
        config.get("n_positions") or 512,
        num_layers=num_layers,
        embed_dim=config["d_model"],
        num_heads=config["num_heads"],
        ff_dim=config["d_ff"],
        dropout=config.get("dropout_rate", 0.1),
        tie_embeddings=tied,
        position=None,
        norm_first=True,
        final_norm=True,
        activation=_t5_activation(config),
        norm="rms",
        layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-6),
        use_bias=False,
        key_dim=config["d_kv"],
        attention_scale=1.0,
        relative_position_buckets=config.get(
            "relative_attention_num_buckets", 32
        ),
        relative_position_max_distance=config.get(
            "relative_attention_max_distance", 128
        ),
        scale_embeddings=False,
        scale_tied_logits=tied and config.get("scale_decoder_outputs", True),
        decoder_mask_zero=False,
    )


def _t5_feed_forward_names(model):
    if model.activation in ("geglu_tanh", "swiglu"):
        return ("wi_1", "wo", "wi_0")
    return ("wi", "wo")


def _t5_tensors(model):
    tensors = [_token_embedding("shared.weight", model.decoder_embedding)]
    feed_forward = _t5_feed_forward_names(model)
    stacks = (
        ("encoder", model.encoder_blocks, model.encoder_position_bias),
        ("decoder", model.decoder_blocks, model.decoder_position_bias),
    )
    for stack, blocks, position_bias in stacks:
        tensors.append(
            _Tensor(
                f"{stack}.block.0.layer.0.SelfAttention."
                "relative_attention_bias.weight",
                [(position_bias, "embeddings")],
            )
        )
        for index, block in enumerate(blocks):
            prefix = f"{stack}.block.{index}.layer"
            sublayers = [("SelfAttention", block.self_attention)]
            norms = [block.self_attention_norm]
            if stack == "decoder":
                sublayers.append(
                    ("EncDecAttention", block.cross_attention_layer)
                )
                norms.append(block.cross_attention_norm)
            for position, (name, attention) in enumerate(sublayers):
                tensors += _attention(
                    f"{prefix}.{position}.{name}",
                    attention,
                    ("q", "k", "v", "o"),
                )
                tensors += _norm(
                    f"{prefix}.{position}.layer_norm", norms[position]
                )
            last = len(sublayers)
            tensors += _feed_forward(
                f"{prefix}.{last}.DenseReluDense.",
                block.feed_forward,
                feed_forward,
            )
            tensors += _norm(
                f"{prefix}.{last}.layer_norm", block.feed_forward_norm
            )
    tensors += _norm("encoder.final_layer_norm", model.encoder_norm)
    tensors += _norm("decoder.final_layer_norm", model.decoder_norm)
    if model.output_projection is not None:
        tensors += _linear("lm_head", model.output_projection)
    return tensors


def _t5_config(model):
    _check_model(
        model, "T5", position=None, norm_first=True, norm="rms",
        use_bias=False, attention_scale=1.0, scale_embeddings=False,
        decoder_mask_zero=False, target_vocab_size=None,
    )  # fmt: skip
    if model.relative_position_buckets is None:
        raise ValueError(
            "`model` has relative_position_buckets=None; T5 needs relative "
            "position biases."
        )
    if not model.tie_embeddings:
        raise ValueError(
            "`model` has tie_embeddings=False, but transformers 5 always "
            "ties T5's output projection to its embedding: T5 with its own "
            "`lm_head` loads into keras_tfm but cannot be written back."
        )
    projections = {
        "relu": "relu",
        "gelu": "gelu",
        "gelu_tanh": "gelu_new",
        "geglu_tanh": "gated-gelu",
        "swiglu": "gated-silu",
    }
    return {
        "vocab_size": model.vocab_size,
        "n_positions": model.sequence_length,
        "d_model": model.embed_dim,
        "d_kv": model.key_dim or model.embed_dim // model.num_heads,
        "d_ff": model.ff_dim,
        "num_layers": model.num_layers,
        "num_decoder_layers": model.num_layers,
        "num_heads": model.num_heads,
        "feed_forward_proj": projections[model.activation],
        "layer_norm_epsilon": model.layer_norm_epsilon,
        "relative_attention_num_buckets": model.relative_position_buckets,
        "relative_attention_max_distance": (
            model.relative_position_max_distance
        ),
        "dropout_rate": model.dropout,
        # transformers 5 always ties, and reads the output scaling from
        # `tie_word_embeddings` when it builds the config.
        "tie_word_embeddings": model.scale_tied_logits,
        "scale_decoder_outputs": model.scale_tied_logits,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "is_encoder_decoder": True,
    }


_GPT2 = _Family(
    "gpt2", "transformer.", _gpt2_build, _gpt2_tensors, _gpt2_config,
    lambda model: "GPT2LMHeadModel",
)  # fmt: skip
_LLAMA = _Family(
    "llama", "model.", _llama_build, _llama_tensors, _llama_config,
    lambda model: "LlamaForCausalLM",
)  # fmt: skip
_FAMILIES = {
    "gpt2": _GPT2,
    "llama": _LLAMA,
    "mistral": dataclasses.replace(_LLAMA, model_type="mistral"),
    "bert": _Family(
        "bert", "bert.", _bert_build, _bert_tensors, _bert_config,
        lambda model: {
            models.TextClassifier: "BertForSequenceClassification",
            models.MaskedLM: "BertForMaskedLM",
        }.get(type(model), "BertModel"),
    ),
    "vit": _Family(
        "vit", "vit.", _vit_build, _vit_tensors, _vit_config,
        lambda model: "ViTForImageClassification",
    ),
    "t5": _Family(
        "t5", "", _t5_build, _t5_tensors, _t5_config,
        lambda model: "T5ForConditionalGeneration",
    ),
}  # fmt: skip


def _family(model_type):
    if model_type not in _FAMILIES:
        raise ValueError(
            f"keras_tfm cannot load model_type={model_type!r}. Supported: "
            f"{sorted(_FAMILIES)}."
        )
    return _FAMILIES[model_type]


def _family_of(model):
    if isinstance(model, models.CausalLM):
        return _FAMILIES["llama" if model.rotary else "gpt2"]
    if isinstance(
        model, models.TextEncoder | models.TextClassifier | models.MaskedLM
    ):
        return _FAMILIES["bert"]
    if isinstance(model, models.ViTClassifier):
        return _FAMILIES["vit"]
    if isinstance(model, models.Seq2SeqTransformer):
        return _FAMILIES["t5"]
    raise ValueError(
        "`model` must be a CausalLM, Seq2SeqTransformer, TextEncoder, "
        "TextClassifier, MaskedLM or ViTClassifier to be written as a "
        f"Hugging Face checkpoint. Received: {type(model).__name__}"
    )

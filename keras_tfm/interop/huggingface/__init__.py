"""Hugging Face checkpoints, in and out: `config.json` and safetensors.

`from_huggingface(directory)` builds the keras_tfm model class that computes
what the checkpoint's architecture computes and assigns its weights;
`to_huggingface(model, directory)` writes a keras_tfm model back in that
format. Weights are read and written with the `safetensors` package's NumPy
functions, so neither `torch` nor `transformers` is needed, on any backend.

Each supported architecture is a `core.Family`, declared once in its
family's module (`gpt2`, `llama`, `bert`, `vit`, `t5`) as data that both
directions read: config fields (`fields`) and a tensor layout (`core`).
"""

import contextlib
import json
import os
import sys

import keras
from keras.src.backend.common import global_state

from keras_tfm import models
from keras_tfm.interop.huggingface import (
    bart,
    bert,
    clip,
    deberta_v2,
    deit,
    dinov2,
    distilbert,
    electra,
    gemma,
    gpt2,
    gpt_neox,
    llama,
    marian,
    mixtral,
    modernbert,
    opt,
    phi,
    roberta,
    t5,
    vit,
    whisper,
)
from keras_tfm.interop.huggingface.core import (
    Checkpoint,
    check_covered,
    read_json,
    safetensors,
)
from keras_tfm.interop.huggingface.fields import (
    checkpoint_config,
    get_path,
    model_options,
    special_token_config,
    special_token_ids,
)

__all__ = ["from_huggingface", "to_huggingface"]

# Checkpoints larger than this (in bytes) show a progress bar as they load.
PROGRESS_BYTES = 256 * 2**20

FAMILIES = (
    *gpt2.FAMILIES,
    *llama.FAMILIES,
    *gemma.FAMILIES,
    *phi.FAMILIES,
    *gpt_neox.FAMILIES,
    *opt.FAMILIES,
    *mixtral.FAMILIES,
    *bert.FAMILIES,
    *roberta.FAMILIES,
    *distilbert.FAMILIES,
    *electra.FAMILIES,
    *modernbert.FAMILIES,
    *deberta_v2.FAMILIES,
    *vit.FAMILIES,
    *dinov2.FAMILIES,
    *deit.FAMILIES,
    *clip.FAMILIES,
    *t5.FAMILIES,
    *bart.FAMILIES,
    *marian.FAMILIES,
    *whisper.FAMILIES,
)


def from_huggingface(directory, dtype=None):
    """Builds a keras_tfm model from a Hugging Face checkpoint directory.

    Reads `config.json` and the weights (`model.safetensors`, or the shards
    listed in `model.safetensors.index.json`) and returns the matching model
    class with the checkpoint's weights:

    | `model_type` | architectures | keras_tfm model |
    |---|---|---|
    | `gpt2` | `GPT2LMHeadModel`, `GPT2Model` | `CausalLM` |
    | `llama` | `LlamaForCausalLM` (Llama 1 to 3.x) | `CausalLM` |
    | `mistral` | `MistralForCausalLM` | `CausalLM` |
    | `qwen2` | `Qwen2ForCausalLM` (Qwen2, Qwen2.5) | `CausalLM` |
    | `qwen3`, `smollm3`, `olmo2` | `Qwen3ForCausalLM`, ... | `CausalLM` |
    | `gemma`, `gemma2`, `gemma3_text` | `GemmaForCausalLM`, ... | `CausalLM` |
    | `phi`, `phi3` | `PhiForCausalLM`, `Phi3ForCausalLM` | `CausalLM` |
    | `gpt_neox`, `opt` | `GPTNeoXForCausalLM`, `OPTForCausalLM` | `CausalLM` |
    | `mixtral`, `qwen2_moe`, `qwen3_moe` | `MixtralForCausalLM`, ... | idem |
    | `bert` | `BertModel` | `TextEncoder` |
    | `bert` | `BertForSequenceClassification` | `TextClassifier` |
    | `bert` | `BertForMaskedLM` | `MaskedLM` (untied head) |
    | `roberta`, `xlm-roberta` | `RobertaModel`, `XLMRoberta...` | idem |
    | `distilbert`, `electra` | `DistilBertModel`, `ElectraModel` | idem |
    | `modernbert`, `deberta-v2` | `ModernBertModel`, ... | idem |
    | `bert` and these | `...ForTokenClassification` | `TokenClassifier` |
    | `vit` | `ViTForImageClassification` | `ViTClassifier` |
    | `vit`, `dinov2`, `deit` | `ViTModel`, `Dinov2Model`, ... | `ViTEncoder` |
    | `dinov2`, `deit` | `...ForImageClassification` | `ViTClassifier` |
    | `clip`, `siglip` | `CLIPModel`, `SiglipModel` | `DualEncoder` |
    | `t5` | `T5ForConditionalGeneration` | `Seq2SeqTransformer` |
    | `bart`, `mbart`, `marian` | `...ForConditionalGeneration`, ... | idem |
    | `m2m_100` (NLLB) | `M2M100ForConditionalGeneration` | idem |
    | `whisper` | `WhisperForConditionalGeneration` | idem (features) |

    The model records where it came from, in its config (so a `.keras`
    file keeps it): `huggingface_model_type`, the family `to_huggingface`
    writes it back as, and `special_token_ids`, the checkpoint's padding,
    start and end ids (config.json's, overridden by generation_config.json's;
    None where it has none), which `generation.generate` uses by default.

    Inputs follow Keras conventions: token ids `(batch, seq)` (BERT masks
    its padding id and takes `segment_ids` for token types) and images
    channels-last. The decoder families become a `CausalLM` whose options
    say how they differ (the pretrained guide's table); a `dynamic` rope
    scaling's `sequence_length` is `max_position_embeddings` times its
    factor.

    The model is built in `dtype`, and each tensor read once, converted
    once to its weight's dtype and freed: no weight is randomly initialised
    first, and no second copy of the checkpoint is held. Every tensor's
    shape and dtype is checked first, from the files' headers, so a broken
    checkpoint fails before anything is allocated. A checkpoint over 256 MB
    shows a progress bar (Keras's; one line at the end when stdout is not a
    terminal).

    Args:
        directory: The checkpoint directory (a local snapshot).
        dtype: A Keras dtype policy name (`"float32"`, `"bfloat16"`,
            `"mixed_bfloat16"`, `"float16"`, ...) or None for the
            checkpoint's own dtype: config.json's `dtype` (`torch_dtype`
            before transformers 5), else its tensors'. The model's layers
            are built under it, as under `keras.config.set_dtype_policy`.

    Returns:
        The keras_tfm model, in `dtype`.

    Raises:
        OSError: For a `directory` that does not exist.
        ValueError: Naming the file, config field or tensor: an unsupported
            `model_type`, architecture or config value; a config.json that
            is not JSON; a size that is not a positive integer, or widths
            the heads do not divide; a weights file that is missing,
            truncated or not safetensors, or that a shard index places
            outside `directory`; a tensor that is missing, has another
            shape than config.json implies, or is not floating-point.

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
    config = _config(directory)
    family = _family_of_config(config)
    options = model_options(family.fields, config, family.model_type)
    checkpoint = Checkpoint(directory, family.prefix)
    _check_block_counts(family.fields, options, checkpoint)
    policy = _dtype_policy(dtype, config, checkpoint)
    generation_config = read_json(directory, "generation_config.json", False)
    with _unlisted_variables():
        # Variables with shapes and no values: see `_unlisted_variables`.
        with keras.StatelessScope(initialize_variables=False):
            with _dtype_policy_scope(policy):
                model = family.make(
                    options,
                    special_token_ids=special_token_ids(
                        config, generation_config
                    ),
                    huggingface_model_type=family.model_type,
                )
        tensors = family.tensors(model)
        check_covered(model, tensors, family.model_type)
        _load_all(tensors, checkpoint)
    return model


def _config(directory):
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"`directory` must be a checkpoint directory. Received: "
            f"directory={directory!r}, which does not exist."
        )
    config = read_json(directory, "config.json")
    if not isinstance(config, dict):
        raise ValueError(
            f"{os.path.join(directory, 'config.json')} must hold a JSON "
            f"object. Received: {config!r:.80}"
        )
    return config


def _check_block_counts(fields, options, checkpoint):
    """Refuses, before building, a number of blocks that the checkpoint's
    tensors cannot fill (each block has at least one): a config asking for
    millions would otherwise take hours to build."""
    for field in fields:
        path = getattr(field, "path", None) or ""
        if path.split(".")[-1] != "num_layers":
            continue
        count = get_path(options, path)
        if count is not None and count > len(checkpoint.handles):
            raise ValueError(
                f"config.json has {field.name}={count}: more blocks than "
                f"the checkpoint's {len(checkpoint.handles)} tensors fill."
            )


def _dtype_policy(dtype, config, checkpoint):
    """The policy `dtype` names, else the checkpoint's own dtype's."""
    name = "`dtype`"
    if dtype is None:
        dtype = checkpoint.float_dtype()
        for field in ("dtype", "torch_dtype"):
            if config.get(field) not in (None, "auto"):
                name, dtype = f"config.json's {field}", config[field]
                break
    try:
        policy = keras.dtype_policies.get(dtype)
    except (ValueError, TypeError):
        policy = None
    floating = policy is not None and "float" in policy.variable_dtype
    if not floating or policy.quantization_mode:
        raise ValueError(
            f"{name} must name a floating Keras dtype policy ('float32', "
            f"'bfloat16', 'mixed_bfloat16', 'float16', ...). Received: "
            f"{dtype!r}"
        )
    return policy


@contextlib.contextmanager
def _dtype_policy_scope(policy):
    """Layers created inside follow `policy`: Keras has a global dtype
    policy, but no scope that restores the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def _unlisted_variables():
    """Lets variables built in a `keras.StatelessScope(initialize_variables=
    False)` inside wait for their checkpoint values.

    Keras creates variables in a stateless scope with a shape and no value:
    nothing is allocated or randomly initialised for weights that the
    checkpoint then overwrites, or for sizes that a wrong config.json asks
    for (`core.assign` gives each its value). Keras also lists them, for
    the next scope that exits to initialise. Those created here leave that
    list on the way out (a failed load must not allocate later, nor a
    loaded variable be initialised twice); after a load, those that the
    checkpoint does not hold (dropout's seed states) are first initialised
    as Keras would.
    """
    listed = {id(variable) for variable in _deferred()}
    try:
        yield
        for variable in _deferred():
            if id(variable) not in listed and variable._initializer is not None:
                variable._deferred_initialize()
    finally:
        global_state.set_global_attribute(
            "uninitialized_variables",
            [variable for variable in _deferred() if id(variable) in listed],
        )


def _deferred():
    return global_state.get_global_attribute("uninitialized_variables") or []


def _load_all(tensors, checkpoint):
    """Loads `tensors` one at a time, all checked first from the headers.
    A checkpoint over `PROGRESS_BYTES` shows a progress bar."""
    for tensor in tensors:
        tensor.check(checkpoint)
    progress = None
    if checkpoint.size > PROGRESS_BYTES:
        verbose = 1 if sys.stdout.isatty() else 2
        progress = keras.utils.Progbar(
            len(tensors), verbose, unit_name="tensor"
        )
    for count, tensor in enumerate(tensors, 1):
        tensor.load(checkpoint)
        if progress is not None:
            progress.update(count)


def to_huggingface(model, directory, model_type=None):
    """Writes a keras_tfm model as a Hugging Face checkpoint.

    Writes `config.json` (with the model's `special_token_ids`, and its
    variable dtype as `dtype`) and `model.safetensors`, of that dtype,
    which `transformers`' `from_pretrained` loads to the same outputs.
    The family written is `model_type`, else the one the model was loaded
    from (`model.huggingface_model_type`: a Mistral checkpoint goes back
    as Mistral), else the one its class and options suggest: a `CausalLM`
    becomes GPT-2 (learned positions) or Llama (rotary positions); a
    `TextEncoder`, `TextClassifier`, `TokenClassifier` or `MaskedLM` BERT;
    a `ViTClassifier` or `ViTEncoder` ViT; a `Seq2SeqTransformer` T5 (or
    Whisper, with `encoder_features`); a `DualEncoder` CLIP. A model
    whose options that family cannot express is refused. LoRA weights are
    merged into the kernels they adapt.

    Args:
        model: A keras_tfm model.
        directory: Where to write; created if needed.
        model_type: The Hugging Face `model_type` to write (`"llama"`,
            `"mistral"`, `"qwen2"`, ...), or None for the model's own.

    Returns:
        `directory`.

    Raises:
        ValueError: For a model the family cannot express, naming the
            option and the value the family needs.

    Example:

    ```python
    from keras_tfm import interop, models

    model = models.CausalLM(
        vocab_size=100, sequence_length=32, num_layers=1, embed_dim=32,
        num_heads=2, ff_dim=64, norm="rms", output_bias=False,
        attention={"rotary": True, "num_kv_heads": 1, "use_bias": False},
        feed_forward={"activation": "swiglu", "use_bias": False},
    )
    interop.to_huggingface(model, "my-mistral", model_type="mistral")
    same = interop.from_huggingface("my-mistral")
    ```
    """
    model_type = model_type or getattr(model, "huggingface_model_type", None)
    family = _family_of_model(model, model_type or _guessed_model_type(model))
    options = family.model_options(model)
    dtype = model.dtype_policy.variable_dtype
    config = {
        "model_type": family.model_type,
        "architectures": [family.architecture],
        "dtype": dtype,
        **special_token_config(model),
        **checkpoint_config(family.fields, options, family.model_type),
    }
    tensors = family.tensors(model)
    check_covered(model, tensors, family.model_type)
    arrays = {tensor.name: tensor.save(dtype) for tensor in tensors}
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as file:
        json.dump(config, file, indent=2)
    safetensors("safetensors.numpy").save_file(
        arrays,
        os.path.join(directory, "model.safetensors"),
        metadata={"format": "pt"},
    )
    return directory


def _families(model_type, verb):
    found = [family for family in FAMILIES if family.model_type == model_type]
    if not found:
        supported = sorted({family.model_type for family in FAMILIES})
        raise ValueError(
            f"keras_tfm cannot {verb} model_type={model_type!r}. "
            f"Supported: {supported}."
        )
    return found


def _family_of_config(config):
    families = _families(config.get("model_type"), "load")
    default = [families[0].architecture]
    architecture = (config.get("architectures") or default)[0]
    for family in families:
        if architecture in (family.architecture, *family.aliases):
            return family
    expected = [name for f in families for name in (f.architecture, *f.aliases)]
    raise ValueError(
        f"config.json has architectures=[{architecture!r}], which "
        f"keras_tfm does not load: expected one of {expected}."
    )


def _family_of_model(model, model_type):
    families = _families(model_type, "write")
    for family in families:
        if isinstance(model, family.model_class):
            return family
    expected = [family.model_class.__name__ for family in families]
    raise ValueError(
        f"`model` is a {type(model).__name__}; model_type={model_type!r} "
        f"is written from a {' or '.join(expected)}."
    )


def _guessed_model_type(model):
    """The family a model built here is written as, by class and options."""
    if isinstance(model, models.CausalLM):
        rotary = model.attention_options["rotary"] is not None
        return "llama" if rotary else "gpt2"
    if isinstance(model, models.Seq2SeqTransformer):
        return "t5" if model.encoder_features is None else "whisper"
    text_models = (
        models.TextEncoder
        | models.TextClassifier
        | models.TokenClassifier
        | models.MaskedLM
    )
    for classes, model_type in (
        (text_models, "bert"),
        (models.ViTClassifier | models.ViTEncoder, "vit"),
        (models.DualEncoder, "clip"),
    ):
        if isinstance(model, classes):
            return model_type
    raise ValueError(
        "`model` must be a CausalLM, Seq2SeqTransformer, TextEncoder, "
        "TextClassifier, TokenClassifier, MaskedLM, ViTClassifier, "
        "ViTEncoder or DualEncoder to be written as a Hugging Face "
        f"checkpoint. Received: {type(model).__name__}"
    )

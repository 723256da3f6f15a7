"""A family's config.json as data, read by both loading and writing.

A family declares a tuple of these; loading turns config.json into the
keras_tfm model's options (the dict its constructor takes, as
`get_config()` returns it), writing turns the options back:

- `Field(name, path)`: the config.json field `name` holds the option at
  `path` of the options (a dotted path: `"attention.num_kv_heads"`).
  `values` maps the field's values to the option's where they differ
  (`{"silu": "swiglu"}`), and any other value is refused in both
  directions; `load` and `save` compute a value that depends on more than
  one field or option. A field with no `path` is written only.
- `Constant(name, value)`: a config.json field with no option: loading
  refuses another value (unless `checked=False`), writing writes `value`.
- `Fixed(path, value)`: an option with no config.json field: loading sets
  it, writing refuses a model whose option differs.

Every refusal is a `ValueError` that names the field or option. Loading
also refuses, naming the field, a size or count that is not a positive
integer, a rate outside [0, 1), an epsilon below 0, and a width that the
heads do not divide.
"""

import dataclasses
from collections.abc import Callable

REQUIRED = object()  # the default of a field that config.json must have

# Hugging Face's activation names and keras_tfm's; writing picks the first.
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
# Options (the last part of their path) that are sizes or counts.
SIZES = (
    "vocab_size", "sequence_length", "embed_dim", "num_layers", "num_heads",
    "num_kv_heads", "key_dim", "hidden_dim", "ff_dim", "num_segments",
    "image_size", "patch_size", "channels", "num_classes",
    "relative_position_buckets", "relative_position_max_distance",
)  # fmt: skip
SPECIAL_TOKENS = {
    "pad": "pad_token_id",
    "bos": "bos_token_id",
    "eos": "eos_token_id",
}


def get_path(options, path):
    for key in path.split("."):
        options = options[key]
    return options


def _has_path(options, path):
    *parents, key = path.split(".")
    for parent in parents:
        options = options.get(parent, {})
    return key in options


def _set_path(options, path, value):
    *parents, key = path.split(".")
    for parent in parents:
        options = options.setdefault(parent, {})
    options[key] = value


def unsupported(name, value, expected, model_type):
    """The error for a config.json value keras_tfm cannot express."""
    return ValueError(
        f"config.json has {name}={value!r}, which keras_tfm does not "
        f"support for model_type={model_type!r}: expected one of "
        f"{list(expected)}."
    )


def _put(config, name, value):
    """Writes `config[name]`, which two options may both hold: equally."""
    if name in config and config[name] != value:
        raise ValueError(
            f"`model` has two options that config.json's {name} holds, "
            f"with different values: {config[name]!r} and {value!r}."
        )
    config[name] = value


@dataclasses.dataclass(frozen=True)
class Field:
    """A config.json field and the option it holds (see the module)."""

    name: str
    path: str | None
    default: object = REQUIRED
    values: dict | None = None
    load: Callable | None = None  # config.json -> option value
    save: Callable | None = None  # options -> config.json value

    def read(self, config, options, model_type):
        if self.path is None:
            return
        if self.load is not None:
            value = self._computed(config, model_type)
        else:
            value = self._loaded(config, model_type)
        if value is not None or self.default is REQUIRED:
            check_value(self.name, self.path.split(".")[-1], value)
        if _has_path(options, self.path):  # a second field of one option
            current = get_path(options, self.path)
            if value is not None and value != current:
                raise ValueError(
                    f"config.json has {self.name}={value!r}, which keras_tfm "
                    f"needs equal to {current!r}, the value of {self.path}."
                )
            return
        _set_path(options, self.path, value)

    def _computed(self, config, model_type):
        """`load(config)`, its errors naming the config.json fields."""
        try:
            return self.load(config)
        except KeyError as error:
            raise ValueError(
                f"config.json has no {error.args[0]}, which model_type="
                f"{model_type!r} needs for {self.name}."
            ) from error
        except (TypeError, ValueError, ArithmeticError) as error:
            raise ValueError(
                f"config.json's {self.name} cannot be computed from its "
                f"fields: {error}."
            ) from error

    def _loaded(self, config, model_type):
        if self.default is REQUIRED and self.name not in config:
            raise ValueError(
                f"config.json has no {self.name}, which model_type="
                f"{model_type!r} needs."
            )
        value = config.get(self.name, self.default)
        if self.values is None:
            return value
        for key, option in self.values.items():
            if key == value:
                return option
        raise unsupported(self.name, value, self.values, model_type)

    def write(self, options, config, model_type):
        if self.save is not None:
            value = self.save(options)
        else:
            value = self._saved(options, model_type)
        _put(config, self.name, value)

    def _saved(self, options, model_type):
        value = get_path(options, self.path)
        if self.values is None:
            return value
        for key, option in self.values.items():
            if option == value:
                return key
        expected = list(dict.fromkeys(self.values.values()))
        raise ValueError(
            f"`model` has {self.path}={value!r}, which {model_type}'s "
            f"{self.name} cannot express: expected one of {expected}."
        )


@dataclasses.dataclass(frozen=True)
class Constant:
    """A config.json field with one supported value and no option."""

    name: str
    value: object
    checked: bool = True

    def read(self, config, options, model_type):
        value = config.get(self.name, self.value)
        if self.checked and value != self.value:
            raise unsupported(self.name, value, [self.value], model_type)

    def write(self, options, config, model_type):
        _put(config, self.name, self.value)


@dataclasses.dataclass(frozen=True)
class Fixed:
    """An option the family requires, with no config.json field. With
    `unless`, an option that, when true, makes this one irrelevant."""

    path: str
    value: object
    unless: str | None = None

    def read(self, config, options, model_type):
        _set_path(options, self.path, self.value)

    def write(self, options, config, model_type):
        if self.unless is not None and get_path(options, self.unless):
            return
        actual = get_path(options, self.path)
        if actual != self.value:
            alternative = f" (or {self.unless}=True)" if self.unless else ""
            raise ValueError(
                f"`model` has {self.path}={actual!r}; {model_type} needs "
                f"{self.path}={self.value!r}{alternative}."
            )


def fixed(values, prefix=""):
    """`Fixed` options for a dict `{path: value}`, each path after
    `prefix`."""
    return tuple(Fixed(prefix + path, value) for path, value in values.items())


# The value that turns each of today's variants off: what the families
# that predate a variant fix it to (`off`).
VARIANTS_OFF = {
    "attention.query_key_norm": None,
    "attention.logit_soft_cap": None,
    "attention.sliding_window": None,
    "embedding_scale": None,
    "logit_soft_cap": None,
    "layer_overrides": None,
    "residual": "sequential",
}
# Those of the attention (every model class), and of a `CausalLM`.
NO_ATTENTION_VARIANTS = {
    path: value
    for path, value in VARIANTS_OFF.items()
    if path.startswith("attention.")
}
NO_CAUSAL_LM_VARIANTS = {
    path: value
    for path, value in VARIANTS_OFF.items()
    if path not in NO_ATTENTION_VARIANTS
}


def off(*paths):
    """`Fixed` options turning the variants at `paths` off."""
    return fixed({path: VARIANTS_OFF[path] for path in paths})


# The attention and feed-forward of "Attention Is All You Need" (and of
# GPT-2, BERT, ViT): biases, no rotary positions, `width // heads` per head.
PLAIN_BLOCKS = {
    **NO_ATTENTION_VARIANTS,
    "attention.rotary": None,
    "attention.key_dim": None,
    "attention.num_kv_heads": None,
    "attention.use_bias": True,
    "attention.attention_scale": None,
    "feed_forward.use_bias": True,
}


def head_dim(options):
    """The size of an attention head, which `attention.key_dim` leaves to
    the width by default."""
    attention = options["attention"]
    return (
        attention["key_dim"] or options["embed_dim"] // attention["num_heads"]
    )


def num_labels(config):
    """A classifier's number of classes: its `id2label` entries."""
    return len(config.get("id2label") or {0: 0, 1: 1})


def check_value(name, option, value):
    """Refuses config.json's `value` of field `name` for `option` unless it
    is a positive integer (a size), a rate in [0, 1) or an epsilon >= 0."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if option in SIZES:
        valid = number and isinstance(value, int) and value > 0
        expected = "a positive integer"
    elif option == "dropout":
        valid, expected = number and 0 <= value < 1, "a rate in [0, 1)"
    elif option == "epsilon":
        valid, expected = number and value >= 0, "a number >= 0"
    else:
        return
    if valid:
        return
    raise ValueError(f"config.json has {name}={value!r}; expected {expected}.")


def _check_heads(fields, options):
    """Refuses a width that the heads do not divide (with no head size of
    its own), or query heads that the key-value heads do not divide."""
    names = {}
    for field in fields:
        if isinstance(field, Field) and field.path is not None:
            names.setdefault(field.path, field.name)
    for path in [path for path in names if path.endswith("embed_dim")]:
        prefix = path.removesuffix("embed_dim")
        heads = f"{prefix}attention.num_heads"
        heads = heads if heads in names else f"{prefix}num_heads"
        key_dim = _option(options, f"{prefix}attention.key_dim")
        kv_heads = f"{prefix}attention.num_kv_heads"
        for total, parts in ((path, heads), (heads, kv_heads)):
            if parts not in names or (total == path and key_dim):
                continue
            whole, part = _option(options, total), _option(options, parts)
            if part and whole % part:
                raise ValueError(
                    f"config.json has {names[total]}={whole} and "
                    f"{names[parts]}={part}; {names[total]} must be "
                    f"divisible by {names[parts]}."
                )


def _option(options, path):
    return get_path(options, path) if _has_path(options, path) else None


def model_options(fields, config, model_type):
    """The options of the model that config.json describes."""
    options = {}
    for field in fields:
        field.read(config, options, model_type)
    _check_heads(fields, options)
    return options


def checkpoint_config(fields, options, model_type):
    """The config.json fields of a model with these options."""
    config = {}
    for field in fields:
        field.write(options, config, model_type)
    return config


def declared_paths(fields):
    """The options that `fields` set or check."""
    return {field.path for field in fields if getattr(field, "path", None)}


def special_token_ids(config, generation_config):
    """`{"pad": ..., "bos": ..., "eos": ...}` of a checkpoint: config.json's
    ids (None where absent), overridden by generation_config.json's."""
    ids = {key: config.get(name) for key, name in SPECIAL_TOKENS.items()}
    for key, name in SPECIAL_TOKENS.items():
        if name in (generation_config or {}):
            ids[key] = generation_config[name]
    return ids


def special_token_config(model):
    """The config.json fields of `model.special_token_ids`."""
    ids = getattr(model, "special_token_ids", None) or {}
    return {SPECIAL_TOKENS[key]: value for key, value in ids.items()}

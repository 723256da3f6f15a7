"""What every checkpoint family shares: reading checkpoints, the tensor
table, its kinds of tensors and the one walk over blocks.

A family (`Family`) is data read by both directions: config fields
(`keras_tfm.interop.huggingface.fields`) and a tensor layout. A layout is a
tuple of rows `(checkpoint name, attribute path, kind)` and of `Stack`s,
whose rows repeat for each block of a list; `walk` turns it into the
model's `Tensor`s, each able to load itself from a checkpoint and to save
itself. A kind (`LINEAR`, `NORM`, `variable("embeddings")`, ...) says how
one layer's weights and the checkpoint's tensors differ in layout.
"""

import dataclasses
import json
import math
import os
from collections.abc import Callable

import keras
import ml_dtypes
import numpy as np
from keras import ops

from keras_tfm.extras import require


def safetensors(module):
    """The `safetensors` module named `module`, or an ImportError naming the
    extra that installs it."""
    return require(
        module, "huggingface", "keras_tfm.interop (Hugging Face checkpoints)"
    )


def read_json(directory, name, required=True):
    """The JSON file `name` of `directory`; None if absent and optional."""
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        if not required:
            return None
        raise ValueError(
            f"`directory` must hold a Hugging Face checkpoint with {name}. "
            f"Received: directory={directory!r}"
        )
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}.") from error


INDEX = "model.safetensors.index.json"
# safetensors' names of the dtypes weights may have, and Keras's.
FLOAT_DTYPES = dict(
    F64="float64", F32="float32", BF16="bfloat16", F16="float16"
)


def numpy_dtype(dtype):
    """The NumPy dtype of a Keras dtype name: NumPy has no bfloat16, which
    `ml_dtypes` (a Keras dependency) adds."""
    return np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)


def _weight_files(directory):
    """The checkpoint's safetensors files: one, or the index's shards."""
    index = read_json(directory, INDEX, required=False)
    if index is None:
        if not os.path.exists(os.path.join(directory, "model.safetensors")):
            raise ValueError(
                f"{directory!r} has no model.safetensors or {INDEX}, the "
                "weights keras_tfm reads (not PyTorch's pickled .bin "
                f"files). Found: {sorted(os.listdir(directory))}"
            )
        return ["model.safetensors"]
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(name, str) for name in weight_map.values()
    ):
        raise ValueError(
            f"{os.path.join(directory, INDEX)} must hold a `weight_map` of "
            "tensor names to file names."
        )
    names = sorted(set(weight_map.values()))
    for name in names:
        _check_inside(directory, name)
    return names


def _check_inside(directory, name):
    """Refuses a file name that leaves the checkpoint directory (`../x`,
    an absolute path). Lexically, so that a snapshot of symbolic links into
    Hugging Face's cache still loads."""
    root = os.path.abspath(directory)
    path = os.path.normpath(os.path.join(root, name))
    if os.path.isabs(name) or os.path.commonpath([root, path]) != root:
        raise ValueError(
            f"{INDEX} in {directory!r} lists the weights file {name!r}, "
            "which is outside the checkpoint directory: refused."
        )


def _opened(directory, name):
    """A safetensors handle on file `name`: its header read, not its
    tensors."""
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise ValueError(
            f"The checkpoint's weights file {name} is missing from "
            f"{directory!r}."
        )
    module = safetensors("safetensors")
    try:
        return module.safe_open(path, framework="numpy")
    except module.SafetensorError as error:
        raise ValueError(
            f"{path} is not a complete safetensors file (truncated, or of "
            f"another format): {error}."
        ) from error


def _data_offsets(path):
    """Where each tensor's bytes start in the safetensors file `path`,
    which `safe_open` has validated: after the header's length (8 bytes)
    and the header, a JSON object."""
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(length))
    header.pop("__metadata__", None)
    start = 8 + length
    return {
        key: start + info["data_offsets"][0] for key, info in header.items()
    }


class Checkpoint:
    """The checkpoint's tensors by name, read lazily from its files.

    Opening it reads the files' headers only, so every tensor's shape and
    dtype is known before any tensor is read. A base model's checkpoint
    (`GPT2Model`) names its tensors without the prefix of the task model's
    (`transformer.`); both are accepted.
    """

    def __init__(self, directory, prefix):
        self.handles = {}
        self.offsets = {}  # key -> (file, where its bytes start)
        self.size = 0  # bytes, of all its files
        for name in _weight_files(directory):
            handle = _opened(directory, name)
            path = os.path.join(directory, name)
            self.size += os.path.getsize(path)
            for key, offset in _data_offsets(path).items():
                self.handles[key] = handle
                self.offsets[key] = path, offset
        self.prefix = prefix

    def key(self, name):
        """The checkpoint's own name of tensor `name`, or None."""
        for key in (name, name.removeprefix(self.prefix)):
            if key in self.handles:
                return key
        return None

    def get(self, name):
        key = self.key(name)
        return None if key is None else self.handles[key].get_tensor(key)

    def header(self, key):
        """`(shape, dtype)` of tensor `key` from its file's header, in
        safetensors' dtype names (`"F32"`, `"BF16"`, ...)."""
        tensor = self.handles[key].get_slice(key)
        return tuple(tensor.get_shape()), tensor.get_dtype()

    def read(self, key):
        """Floating tensor `key`, read from its file into a new array: not
        through safetensors' memory map, whose pages would stay resident
        (a second copy of the checkpoint) until the file is closed."""
        shape, dtype = self.header(key)
        path, offset = self.offsets[key]
        dtype = numpy_dtype(FLOAT_DTYPES[dtype])  # little-endian, as stored
        array = np.fromfile(path, dtype, math.prod(shape), offset=offset)
        return array.reshape(shape)

    def float_dtype(self):
        """The Keras dtype of the checkpoint's first floating tensor."""
        dtypes = [self.header(key)[1] for key in self.handles]
        floats = [FLOAT_DTYPES[d] for d in dtypes if d in FLOAT_DTYPES]
        return (floats or ["float32"])[0]


def _first(arrays):
    return arrays[0]


def _listed(array):
    return [array]


def _placeholders(weights):
    """Arrays of the weights' shapes that hold no memory (zero strides):
    only their shapes matter, and a wrong config may ask for terabytes."""
    return [
        np.broadcast_to(np.float32(0), getattr(layer, attribute).shape)
        for layer, attribute in weights
    ]


@dataclasses.dataclass
class Tensor:
    """One checkpoint tensor and the keras_tfm weights it fills.

    `weights` are `(layer, attribute)` pairs, read through the attribute so
    that a LoRA-adapted kernel is written merged. `to_keras` turns the
    checkpoint array into one array per weight; `to_checkpoint` does the
    reverse.
    """

    name: str
    weights: list
    to_keras: Callable = _listed
    to_checkpoint: Callable = _first
    # Read instead when `name` is absent (a tied tensor saved once).
    alias: str | None = None

    def check(self, checkpoint):
        """The checkpoint's name of this tensor, once its file's header shows
        the shape the weights need and a floating dtype: nothing is read."""
        key = checkpoint.key(self.name)
        if key is None and self.alias is not None:
            key = checkpoint.key(self.alias)
        if key is None:
            raise ValueError(
                f"The checkpoint has no tensor `{self.name}`, which the "
                "architecture in its config.json needs."
            )
        shape, dtype = checkpoint.header(key)
        if dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"The checkpoint's tensor `{key}` has dtype {dtype}; a "
                f"weight needs one of {list(FLOAT_DTYPES)}."
            )
        expected = self.to_checkpoint(_placeholders(self.weights)).shape
        if shape != expected:
            raise ValueError(
                f"The checkpoint's tensor `{key}` has shape {shape}; its "
                f"config.json implies {expected}."
            )
        return key

    def load(self, checkpoint):
        """Reads the tensor and gives each weight its value, converted
        once to the weight's dtype; the array is freed on return."""
        key = self.check(checkpoint)
        array = checkpoint.read(key)
        for (layer, attribute), value in zip(
            self.weights, self.to_keras(array), strict=True
        ):
            assign(variable_of(layer, attribute), value)

    def save(self, dtype=None):
        """The checkpoint's array of the weights, in `dtype` or theirs."""
        array = self.to_checkpoint(
            [ops.convert_to_numpy(getattr(layer, attribute))
             for layer, attribute in self.weights]
        )  # fmt: skip
        if dtype is not None:
            array = array.astype(numpy_dtype(dtype), copy=False)
        return np.ascontiguousarray(array)


def variable_of(layer, attribute):
    """The variable behind `layer.attribute`: Dense's `kernel` is a property
    (merging LoRA) over the variable `_kernel`."""
    variable = getattr(layer, f"_{attribute}", None)
    if isinstance(variable, keras.Variable):
        return variable
    return getattr(layer, attribute)


def assign(variable, value):
    """Gives `variable` the NumPy array `value`, converted once to the
    variable's dtype.

    A variable created in a `keras.StatelessScope` has a shape and, until
    initialised, no value: it takes `value` as its initial value, through
    Keras's own initialisation of such variables, so that its random
    initializer never runs.
    """
    value = value.astype(numpy_dtype(variable.dtype), copy=False)
    if getattr(variable, "_initializer", None) is None:  # initialised
        variable.assign(value)
        return
    variable._initializer = lambda shape, dtype: value
    variable._deferred_initialize()


# --- Kinds: how a layer's weights and the checkpoint's tensors differ ----


def linear(transposed=True, input_axes=1):
    """The kind of a Dense or EinsumDense layer: kernel and bias.

    PyTorch's `Linear` keeps `(out, in)` (`transposed=True`); GPT-2's
    `Conv1D` keeps `(in, out)`. The first `input_axes` axes of the kernel
    are its inputs: an attention output projection takes heads on two.
    """

    def tensors(name, layer):
        shape = tuple(layer.kernel.shape)
        inputs = math.prod(shape[:input_axes])

        def to_keras(matrix):
            return [(matrix.T if transposed else matrix).reshape(shape)]

        def to_checkpoint(kernels):
            matrix = kernels[0].reshape(inputs, -1)
            return matrix.T if transposed else matrix

        found = [
            Tensor(
                f"{name}.weight", [(layer, "kernel")], to_keras, to_checkpoint
            )
        ]
        if layer.bias is not None:
            found.append(_flat(f"{name}.bias", layer, "bias"))
        return found

    return tensors


def _flat(name, layer, attribute):
    """A weight saved as one flat vector."""
    shape = tuple(getattr(layer, attribute).shape)
    return Tensor(
        name,
        [(layer, attribute)],
        lambda array: [array.reshape(shape)],
        lambda arrays: arrays[0].reshape(-1),
    )


LINEAR = linear()
LINEAR_FROM_HEADS = linear(input_axes=2)


def _norm(name, layer):
    """LayerNormalization (`weight`, `bias`) or RMSNormalization
    (`weight`)."""
    if hasattr(layer, "gamma"):
        return [
            Tensor(f"{name}.weight", [(layer, "gamma")]),
            Tensor(f"{name}.bias", [(layer, "beta")]),
        ]
    return [Tensor(f"{name}.weight", [(layer, "scale")])]


NORM = _norm


def variable(attribute, to_keras=_listed, to_checkpoint=_first):
    """The kind of one weight, `layer.attribute`, saved as one tensor."""

    def tensors(name, layer):
        return [Tensor(name, [(layer, attribute)], to_keras, to_checkpoint)]

    return tensors


# --- Layout rows shared by families --------------------------------------


def attention_rows(template, names, path="self_attention", kind=LINEAR):
    """Rows of an attention layer at `path` with separate projections,
    checkpoint names `template.format(name)` for the query, key, value and
    output `names` (space-separated)."""
    query, key, value, output = names.split()
    return (
        (template.format(query), f"{path}.query_dense", kind),
        (template.format(key), f"{path}.key_dense", kind),
        (template.format(value), f"{path}.value_dense", kind),
        (template.format(output), f"{path}.output_dense", LINEAR_FROM_HEADS),
    )


def feed_forward_rows(template, names, kind=LINEAR):
    """Rows of a `FeedForward` for its hidden, output and (gated
    activations) gate projections, `names` space-separated in that order."""
    parts = ("hidden_dense", "output_dense", "gate_dense")
    return tuple(
        (template.format(name), f"feed_forward.{part}", kind)
        for name, part in zip(names.split(), parts, strict=False)
    )


# --- The walk --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stack:
    """Rows repeated for each block of the list at `path`: block `i`'s
    names start with `template.format(i)`."""

    template: str
    path: str
    rows: tuple


def resolve(owner, path):
    """The attribute at dotted `path` of `owner`, or None if absent."""
    for name in path.split("."):
        owner = getattr(owner, name, None)
        if owner is None:
            return None
    return owner


def walk(model, layout):
    """The `Tensor`s of `model` for a layout of rows and `Stack`s.

    A row whose layer is absent (None, such as the output projection of a
    tied model) has no tensors; `check_covered` then proves that every
    weight of the model has one.
    """
    tensors = []
    for entry in layout:
        if isinstance(entry, Stack):
            for index, block in enumerate(resolve(model, entry.path)):
                prefix = entry.template.format(index)
                for name, path, kind in entry.rows:
                    layer = resolve(block, path)
                    if layer is not None:
                        tensors += kind(f"{prefix}.{name}", layer)
        else:
            name, path, kind = entry
            layer = resolve(model, path)
            if layer is not None:
                tensors += kind(name, layer)
    return tensors


def check_covered(model, tensors, model_type):
    """Raises unless every weight of `model` (but LoRA's) is in `tensors`."""
    covered = {
        id(variable_of(layer, attribute))
        for tensor in tensors
        for layer, attribute in tensor.weights
    }
    missing = [
        weight.path
        for weight in model.weights
        if id(weight) not in covered and not weight.name.startswith("lora_")
    ]
    if missing:
        raise ValueError(
            f"`model` has weights that a {model_type} checkpoint has no "
            f"tensor for: {missing}."
        )


# --- A family ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Family:
    """One Hugging Face architecture, as data that loading and writing read.

    Attributes:
        model_type: config.json's `model_type`.
        architecture: The architecture written (`LlamaForCausalLM`).
        model_class: The keras_tfm model class it becomes.
        fields: Its config, a tuple of `fields.Field`, `Constant`, `Fixed`.
        layout: Its tensors: rows and `Stack`s, or a function of the model
            that returns them.
        prefix: Of the task model's tensor names, absent in a base model's.
        aliases: Other architectures loaded the same way (`GPT2Model`).
        options: The model's options as `fields` read them; defaults to
            `model.get_config()`.
        build: Makes the model from its options and the records
            `special_token_ids` and `huggingface_model_type`; defaults to
            the class's constructor.
    """

    model_type: str
    architecture: str
    model_class: type
    fields: tuple
    layout: tuple | Callable
    prefix: str = ""
    aliases: tuple = ()
    options: Callable | None = None
    build: Callable | None = None

    def model_options(self, model):
        if self.options is None:
            return model.get_config()
        return self.options(model)

    def make(self, options, **records):
        if self.build is None:
            return self.model_class(**options, **records)
        return self.build(options, **records)

    def tensors(self, model):
        layout = self.layout(model) if callable(self.layout) else self.layout
        return walk(model, layout)

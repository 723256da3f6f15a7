"""The PyTorch decode step traced with `torch.export` (and optionally
compiled with `torch.compile`), with an eager fallback."""

import math
import warnings

import keras

# Products with at most this many rows (a decoding step's tokens) are split
# over the threads by `parallel_matmul`: beyond it MKL uses them itself.
PARALLEL_MATMUL_MAX_ROWS = 32


class TorchStep:
    """A model's `call_with_cache`, traced once per input shape on PyTorch
    for one-token steps (prefills run eagerly).

    `torch.export` in non-strict mode runs Keras's Python once and records
    only the tensor operations, so a traced step no longer pays Keras's
    per-layer call overhead; with `compile_program`, `torch.compile` then
    fuses the recorded program. The model is traced as a sub-module, so the
    program reads its current weights: training after a trace is seen. A
    trace that fails makes every later call run eagerly, after one warning.
    The traced program is rewritten by `simplify`, and writes the new
    positions into the cache it is given: a cache is passed once, and the
    returned one used after.
    """

    def __init__(self, model, compile_program):
        self.model = model
        self.compile_program = compile_program
        self.programs = {}
        self.failed = False

    def __call__(self, tokens, cache, cache_index):
        # A prefill runs once per call of `generate`: its trace (as long as
        # a step's) would cost far more than the Python it saves.
        if self.failed or tokens.shape[1] != 1:
            return self.model.call_with_cache(tokens, cache, cache_index)
        import torch

        # On the tokens' device: a program traced with the index on one
        # device refuses it on another, and callers pass a Python int
        # (`stream`) or a tensor on the accelerator (`generate`'s loop).
        index = torch.as_tensor(
            cache_index, dtype=torch.int32, device=tokens.device
        )
        key = tuple(
            tuple(tensor.shape)
            for tensor in keras.tree.flatten((tokens, cache))
        )
        if key not in self.programs:
            try:
                self.programs[key] = self._trace(tokens, cache, index)
            except Exception as error:  # any tracing failure: run eagerly
                self.failed = True
                warnings.warn(
                    "keras_tfm.generation could not trace the decode step "
                    f"with torch.export ({type(error).__name__}: {error}); "
                    "decoding runs eagerly instead.",
                    stacklevel=2,
                )
                return self.model.call_with_cache(tokens, cache, cache_index)
        return self.programs[key](tokens, cache, index)

    def _trace(self, tokens, cache, index):
        import torch

        model = self.model

        class Step(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, tokens, cache, index):
                return self.model.call_with_cache(tokens, cache, index)

        with torch.no_grad():
            program = torch.export.export(
                Step(), (tokens, cache, index), strict=False
            ).module()
        simplify(program, model)
        if self.compile_program:
            program = torch.compile(program)
        return program


def simplify(program, model):
    """Rewrites `model`'s traced step's graph in place to run faster.

    - Drops its no-op nodes: the metadata checks `torch.export` records
      before each conversion, and conversions to the dtype and device a
      tensor already has (Keras converts every layer's inputs). They were
      half of SmolLM2-135M's 7,600 nodes per step.
    - Runs products of few rows with a weight through `parallel_matmul`.
    - Writes the new keys and values into the cache it is given, not into
      a copy of it (the copy was a quarter of a SmolLM2-135M step at batch
      8): the step's caller passes each cache once.
    - Computes once what each layer computes again from the same inputs:
      the rotary angles, the visible positions, the cache's write indices
      (`_merge_repeated_work`).
    """
    import torch

    aten = torch.ops.aten
    graph = program.graph
    for node in list(graph.nodes):
        if node.target is aten._assert_tensor_metadata.default:
            graph.erase_node(node)
        elif node.target in (aten.to.dtype, aten.to.dtype_layout):
            if _converts_nothing(node):
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)
        elif node.target in (aten.matmul.default, aten.einsum.default):
            _parallelize(node)
        elif node.target is aten.index_copy.default and _only_reader(node):
            node.target = aten.index_copy_.default
    _merge_repeated_work(program, model)
    graph.eliminate_dead_code()
    program.recompile()


def _merge_repeated_work(program, model):
    """Common-subexpression elimination over the step's graph.

    Each layer's scalar constants (a rotary base, an index 0) are separate
    tensors of the graph; equal ones are merged first, so that the work
    computed from them is found equal too. The model's weights are never
    merged (training may change them apart), nor are operations that
    write into a tensor.
    """
    weights = {variable.value.data_ptr() for variable in model.variables}
    found = {}
    for node in list(program.graph.nodes):
        key = _work_key(node, program, weights)
        if key is None:
            continue
        if key in found:
            node.replace_all_uses_with(found[key])
            program.graph.erase_node(node)
        else:
            found[key] = node


def _work_key(node, program, weights):
    """What `node` computes, as a key equal for nodes that compute the same
    value; None for nodes never merged."""
    if node.op == "get_attr":
        tensor = program
        for name in node.target.split("."):
            tensor = getattr(tensor, name)
        if tensor.numel() != 1 or tensor.data_ptr() in weights:
            return None
        return ("constant", tensor.dtype, tensor.device, tensor.shape,
                tensor.item())  # fmt: skip
    if node.op != "call_function" or node.is_impure():
        return None
    schema = getattr(node.target, "_schema", None)
    if schema is not None and schema.is_mutable:
        return None
    try:
        key = (node.target, _hashable(node.args), _hashable(node.kwargs))
        hash(key)
    except TypeError:
        return None
    return key


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple((name, _hashable(item)) for name, item in value.items())
    return value


def _converts_nothing(node):
    before, after = node.args[0].meta.get("val"), node.meta.get("val")
    return (
        before is not None
        and after is not None
        and before.dtype == after.dtype
        and before.device == after.device
        and not node.kwargs.get("copy", False)
    )


def _only_reader(node):
    """Whether `node` is the only one to read its first argument, an input
    of the program (but the check of the inputs' shapes that
    `torch.export` adds)."""
    source = node.args[0]
    return source.op == "placeholder" and all(
        reader is node or reader.target == "_guards_fn"
        for reader in source.users
    )


def _parallelize(node):
    """Makes a `matmul(x, weight)` or a one-contraction `einsum` of a few
    rows with a weight (a constant of the graph, or its transpose) call
    `parallel_matmul`."""
    import torch

    parts = torch.get_num_threads()
    is_einsum = node.target is torch.ops.aten.einsum.default
    if is_einsum:
        equation, (x, kernel) = node.args[0], node.args[1]
        contracted = _contracted_dims(equation)
    else:
        (x, kernel), contracted = node.args, 1
    x_value, kernel_value = x.meta.get("val"), kernel.meta.get("val")
    if (
        parts < 2
        or contracted is None
        or not _is_weight(kernel)
        or x_value is None
        or kernel_value is None
        or (not is_einsum and kernel_value.ndim != 2)  # matmul: a matrix
        or math.prod(x_value.shape[: x_value.ndim - contracted])
        > PARALLEL_MATMUL_MAX_ROWS
    ):
        return
    node.target = parallel_matmul
    node.args = (x, kernel, contracted, parts)
    node.kwargs = {}


def _contracted_dims(equation):
    """How many axes an einsum of the form `"...c,c...->......"` sums: the
    last axes of its first operand, the first ones of the second, with
    the others kept in order (EinsumDense's projections); else None."""
    inputs, output = equation.replace(" ", "").split("->")
    operands = inputs.split(",")
    if len(operands) != 2 or "." in equation:
        return None
    x, kernel = operands
    count = len(set(x) & set(kernel))
    if count == 0 or x[len(x) - count :] != kernel[:count]:
        return None
    if output != x[: len(x) - count] + kernel[count:]:
        return None
    return count


def _is_weight(node):
    """Whether a graph node is a constant of the graph (the model's
    weights), or a transpose of one."""
    import torch

    transposes = (torch.ops.aten.numpy_T.default, torch.ops.aten.t.default)
    while node.op == "call_function" and node.target in transposes:
        node = node.args[0]
    return node.op == "get_attr"


def parallel_matmul(x, kernel, contracted, parts):
    """`x` times `kernel` over `x`'s last `contracted` axes and `kernel`'s
    first ones, as `parts` products that `torch.bmm` runs on parallel
    threads.

    MKL runs a product of one to a few rows on one thread, and a decoding
    step is such products: streaming the weights is its cost. Split into
    `parts` views of the kernel, which need no copy, the step reads them
    on every core: the kernel's outputs are split when it is a transposed
    matrix (a tied embedding), else its summed axis (the halves are added).
    """
    import torch

    inner = math.prod(kernel.shape[:contracted])
    outer = math.prod(kernel.shape[contracted:])
    batch_shape = x.shape[: x.ndim - contracted]
    rows = x.reshape(-1, inner)
    matrix = kernel.reshape(inner, outer)
    if matrix.stride(0) == 1 and outer % parts == 0:
        blocks = matrix.T.reshape(parts, outer // parts, inner)
        outputs = torch.bmm(blocks, rows.T.expand(parts, -1, -1))
        # Rows first again: attention kernels want a contiguous last axis.
        outputs = outputs.reshape(outer, -1).T.contiguous()
    elif inner % parts == 0:
        blocks = matrix.reshape(parts, inner // parts, outer)
        split_rows = rows.reshape(-1, parts, inner // parts).transpose(0, 1)
        outputs = torch.bmm(split_rows, blocks).sum(0)
    else:
        outputs = rows @ matrix
    return outputs.reshape(*batch_shape, *kernel.shape[contracted:])

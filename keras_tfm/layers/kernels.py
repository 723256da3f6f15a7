"""Which attention kernel runs where: the backend rules, in one place.

Attention layers take either the explicit formula (`attention_with_scores`:
einsum, float32 softmax, einsum) or `fused_attention`, which calls
`keras.ops.dot_product_attention` (the backend's fused kernel: flash
attention, cuDNN or SDPA). The rules below choose between them per backend
and device; the measurements behind each rule are in the performance guide
(`docs/guides/performance.md`, "Attention kernels"), made with
`python -m benchmarks.attention` and `python -m benchmarks.projections`.
"""

import functools
import math

import keras
from keras import ops

# The float32 logit given to masked keys on the explicit path. A finite value
# rather than -inf: softmax of a row with every key masked stays finite.
MASKED_LOGIT = -30000.0

# PyTorch's CPU kernel in bfloat16 loses to the explicit formula up to this
# key length (performance guide, "Attention kernels").
TORCH_CPU_BFLOAT16_EXPLICIT_MAX_LENGTH = 128


def attention_with_scores(
    query, key, value, mask=None, bias=None, scale=None, soft_cap=None
):
    """Scaled dot-product attention that also returns the weights.

    `softmax(Q K^T * scale + bias) V` written out, for when the caller asks
    for the attention weights (fused kernels do not return them) or when it
    is the faster path. Softmax runs in float32 so that mixed precision
    cannot overflow.

    Args:
        query: `(batch, q_len, heads, head_dim)`.
        key: `(batch, k_len, kv_heads, head_dim)`; `heads` must be a multiple
            of `kv_heads`.
        value: Same shape as `key`.
        mask: Boolean, broadcastable to `(batch, heads, q_len, k_len)`.
        bias: Added to the logits, broadcastable like `mask`.
        scale: Multiplies `Q K^T`; defaults to `1 / sqrt(head_dim)`.
        soft_cap: If given, the scaled logits become
            `soft_cap * tanh(logits / soft_cap)` before the bias and the mask
            (Gemma 2).

    Returns:
        `(outputs, scores)`: `(batch, q_len, heads, head_dim)` and
        `(batch, heads, q_len, k_len)`.
    """
    key, value = repeat_kv_heads(query, key, value)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    logits = ops.einsum("btnh,bsnh->bnts", query, key)
    logits = ops.cast(logits, "float32") * scale
    if soft_cap is not None:
        logits = soft_cap * ops.tanh(logits / soft_cap)
    if bias is not None:
        logits = logits + ops.cast(bias, "float32")
    if mask is not None:
        logits = ops.where(mask, logits, MASKED_LOGIT)
    scores = ops.cast(ops.softmax(logits, axis=-1), query.dtype)
    return ops.einsum("bnts,bsnh->btnh", scores, value), scores


def fused_attention(
    query, key, value, mask=None, bias=None, scale=None, is_causal=False
):
    """`keras.ops.dot_product_attention` with the inputs each backend needs.

    Same arguments and output as `attention_with_scores`, without the
    scores; `is_causal` asks the kernel for causality with no mask tensor.
    """
    if bias is not None:
        bias, mask = fold_mask_into_bias(bias, mask, query.dtype), None
    if keras.backend.backend() == "torch":
        return _torch_attention(
            query, key, value, mask if bias is None else bias, scale, is_causal
        )
    if keras.backend.backend() == "tensorflow":
        # Keras's TensorFlow kernel repeats no key/value heads (3.15: not a
        # single one); JAX's kernels take grouped heads as they are.
        key, value = repeat_kv_heads(query, key, value)
    mask = mask_for_jax_cudnn(mask, query, key)
    return ops.dot_product_attention(
        query,
        key,
        value,
        bias=bias,
        mask=mask,
        scale=scale,
        is_causal=is_causal,
    )


def _torch_attention(query, key, value, mask, scale, is_causal):
    """PyTorch's `scaled_dot_product_attention`, called directly.

    Keras's PyTorch `dot_product_attention` repeats grouped key/value heads
    into a copy, which the transpose before the kernel copies again: a
    fifth of a SmolLM2-135M decoding step. The kernel's `enable_gqa` reads
    them as they are. `mask` is boolean (true: may attend) or additive.
    """
    import torch

    def heads_first(x):
        return torch.transpose(x, 1, 2)

    if mask is not None:
        mask = ops.convert_to_tensor(mask)
    outputs = torch.nn.functional.scaled_dot_product_attention(
        heads_first(query),
        heads_first(key),
        heads_first(value),
        attn_mask=mask,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=query.shape[2] != key.shape[2],
    )
    return heads_first(outputs)


def explicit_attention_is_faster(query, key):
    """Whether to skip `ops.dot_product_attention` for these inputs.

    TensorFlow and JAX have no fused attention kernel for CPUs: there the
    explicit formula is faster at every measured shape. PyTorch's CPU kernel
    wins in float32, but not in bfloat16 over short key lengths.
    Accelerators have flash attention and keep the fused path.

    Args:
        query: `(batch, q_len, heads, head_dim)`.
        key: `(batch, k_len, kv_heads, head_dim)`.
    """
    if keras.backend.backend() == "torch":
        return (
            query.device.type == "cpu"
            and keras.backend.standardize_dtype(query.dtype) == "bfloat16"
            and key.shape[1] <= TORCH_CPU_BFLOAT16_EXPLICIT_MAX_LENGTH
        )
    return keras.backend.backend() in ("tensorflow", "jax") and _only_cpus()


@functools.cache
def _only_cpus():
    # Asks Keras, not a tensor: this may first run inside a compiled trace.
    devices = keras.distribution.list_devices()
    return all(device.lower().startswith("cpu") for device in devices)


# The largest joined query/key/value kernel (in numbers) worth joining: the
# join copies the kernels at every call, which at SmolLM2-135M's width
# (576 x 15 heads x 64) took 14% of a PyTorch decode step, more than the
# two layer calls it saves.
FUSED_PROJECTION_MAX_SIZE = 2**18


def fuses_projections(joined_size):
    """Whether self-attention projects queries, keys and values with one
    matmul over the three kernels, joined (`joined_size` numbers in all).

    Keras runs PyTorch eagerly, where a step is bound by the cost of each
    call and kernel launch, and one matmul beats three; TensorFlow and JAX
    compile the three into the same work or better. The weights stay three
    variables either way. Kernels over `FUSED_PROJECTION_MAX_SIZE` numbers
    stay three on PyTorch too: joining them copies more than it saves.
    """
    return (
        keras.backend.backend() == "torch"
        and joined_size <= FUSED_PROJECTION_MAX_SIZE
    )


def mask_for_jax_cudnn(mask, query, key):
    """Spells a padding mask out over the queries for JAX's cuDNN kernel.

    On a GPU, Keras's JAX `dot_product_attention` tries cuDNN's flash kernel,
    which rejects a mask that broadcasts over the query axis (`(batch, 1, 1,
    k_len)`) and Keras then falls back to XLA's unfused attention; with the
    mask broadcast to `(batch, 1, q_len, k_len)` the kernel is used.
    """
    if mask is None or keras.backend.backend() != "jax":
        return mask
    batch, query_length = ops.shape(query)[0], ops.shape(query)[1]
    shape = (batch, 1, query_length, ops.shape(key)[1])
    return ops.broadcast_to(mask, shape)


def fold_mask_into_bias(bias, mask, dtype):
    """One additive bias for kernels that take a bias or a mask, not both
    (Keras's PyTorch `dot_product_attention`)."""
    bias = ops.cast(bias, dtype)
    if mask is None:
        return bias
    return ops.where(mask, bias, ops.cast(MASKED_LOGIT, dtype))


def repeat_kv_heads(query, key, value):
    """Keys and values with as many heads as the query (grouped-query)."""
    groups = query.shape[2] // key.shape[2]
    if groups == 1:
        return key, value
    return _repeat_heads(key, groups), _repeat_heads(value, groups)


def _repeat_heads(x, groups):
    """`ops.repeat(x, groups, axis=2)` as a broadcast: PyTorch's `repeat`
    fails on the "meta" tensors Keras builds with, which made Keras build
    each grouped-query block again on real tensors (minutes for a deferred,
    checkpoint-sized model)."""
    batch, length, heads, size = ops.shape(x)
    x = ops.broadcast_to(
        x[:, :, :, None, :], (batch, length, heads, groups, size)
    )
    return ops.reshape(x, (batch, length, heads * groups, size))

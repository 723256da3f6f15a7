"""`MixtureOfExperts`: exact against all experts, its loss, its sharding.

The JAX expert-parallelism test runs this file as a script in a subprocess,
because the number of virtual CPU devices is fixed when JAX starts.
"""

import keras
import numpy as np
import pytest
from keras.src.testing import TestCase
from scipy.special import erf

from benchmarks.moe import AllExpertsMixture
from keras_tfm.layers.mixture_of_experts import MixtureOfExperts, expert_slots
from tests.conftest import (
    assert_same_updates,
    cpu_devices,
    installed_version,
    random_inputs,
    run_module,
    to_numpy,
)
from tests.reference import softmax
from tests.test_benchmarks import run_benchmark, table_rows

BACKEND = keras.backend.backend()
DEVICES = 8
SMALL = {"hidden_dim": 24, "num_experts": 4, "experts_per_token": 2}


def numpy_activation(hidden, gate, activation):
    """`FeedForward`'s activations, written from their formulas."""

    def gelu_tanh(v):
        return 0.5 * v * (1 + np.tanh(0.7978845608 * (v + 0.044715 * v**3)))

    if activation == "swiglu":
        return gate / (1 + np.exp(-gate)) * hidden
    if activation == "geglu_tanh":
        return gelu_tanh(gate) * hidden
    if activation == "relu":
        return np.maximum(hidden, 0)
    if activation == "gelu":
        return 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
    return gelu_tanh(hidden)


def numpy_mixture(layer, x):
    """Every expert on every token, weighted by the top-k routing weights."""
    weights = {w.path.split("/", 1)[1]: to_numpy(w) for w in layer.weights}
    tokens = x.reshape(-1, x.shape[-1])
    logits = tokens @ weights["router/kernel"]
    k = layer.experts_per_token
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    if layer.router_softmax == "before_top_k":
        top_weights = np.take_along_axis(softmax(logits), top, -1)
    else:
        top_weights = softmax(np.take_along_axis(logits, top, -1))
    if layer.normalize_top_k:
        top_weights /= top_weights.sum(-1, keepdims=True)
    routing = np.zeros_like(logits)
    np.put_along_axis(routing, top, top_weights, -1)
    outputs = 0
    for e in range(layer.num_experts):
        expert = {
            name: weights.get(f"{name}_kernel", {e: None})[e]
            for name in ("gate", "up", "down")
        }
        if layer.use_bias:
            expert.update(
                {f"{n}_bias": weights[f"{n}_bias"][e] for n in ("up", "down")}
            )
            if expert["gate"] is not None:
                expert["gate_bias"] = weights["gate_bias"][e]
        outputs += routing[:, e : e + 1] * numpy_ffn(tokens, layer, expert)
    if layer.shared_expert_dim is not None:
        shared = {
            new: weights.get(f"shared_expert/{old}")
            for new, old in (
                ("gate", "gate/kernel"),
                ("up", "hidden/kernel"),
                ("down", "output/kernel"),
                ("gate_bias", "gate/bias"),
                ("up_bias", "hidden/bias"),
                ("down_bias", "output/bias"),
            )
        }
        gate = tokens @ weights["shared_expert_gate/kernel"]
        outputs += numpy_ffn(tokens, layer, shared) / (1 + np.exp(-gate))
    return outputs.reshape(x.shape)


def numpy_ffn(x, layer, weights):
    """A feed-forward network from `weights`' kernels and biases."""

    def project(name, v):
        bias = weights.get(f"{name}_bias")
        return v @ weights[name] + (0 if bias is None else bias)

    gate = None if weights["gate"] is None else project("gate", x)
    hidden = numpy_activation(project("up", x), gate, layer.activation)
    return project("down", hidden)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"experts_per_token": 1, "normalize_top_k": False},
        {"experts_per_token": 4, "router_softmax": "after_top_k"},
        {"activation": "gelu", "use_bias": True, "normalize_top_k": False},
        {"activation": "geglu_tanh", "use_bias": True},
        {"shared_expert_dim": 20, "normalize_top_k": False},
    ],
    ids=["top2", "top1", "top4_after", "gelu_bias", "geglu_bias", "shared"],
)
def test_outputs_equal_every_expert_on_every_token(options):
    x = random_inputs(2, 7, 16)
    layer = MixtureOfExperts(**{**SMALL, **options})
    outputs = to_numpy(layer(x))
    np.testing.assert_allclose(outputs, numpy_mixture(layer, x), atol=2e-5)


def test_one_token_decode_step_reads_only_its_experts():
    # Fewer copies than experts: one-row blocks, one per routed copy.
    x = random_inputs(1, 1, 16)
    layer = MixtureOfExperts(**SMALL)
    outputs = to_numpy(layer(x))
    np.testing.assert_allclose(outputs, numpy_mixture(layer, x), atol=2e-5)


def test_route_returns_the_top_k_experts_and_weights():
    x = random_inputs(2, 7, 16)
    layer = MixtureOfExperts(**SMALL, normalize_top_k=False)
    expert_ids, weights = layer.route(x)
    logits = x @ to_numpy(layer.router.kernel)
    expected = np.argsort(-logits, axis=-1, kind="stable")[..., :2]
    np.testing.assert_array_equal(to_numpy(expert_ids), expected)
    np.testing.assert_allclose(
        to_numpy(weights),
        np.take_along_axis(softmax(logits), expected, -1),
        rtol=1e-5,
    )


def test_every_token_kept_when_all_go_to_one_expert():
    # The buffer fits any routing: no capacity, so no token is dropped.
    x = np.abs(random_inputs(3, 40, 16)) + 1.0
    layer = MixtureOfExperts(**SMALL)
    layer.build(x.shape)
    kernel = np.zeros((16, 4), "float32")
    kernel[:, 2], kernel[:, 0] = 1.0, 0.5
    layer.router.kernel.assign(kernel)
    outputs = to_numpy(layer(x))
    np.testing.assert_allclose(outputs, numpy_mixture(layer, x), atol=2e-5)


@pytest.mark.parametrize("rows_per_block", [1, 4, 16])
def test_expert_slots_sort_copies_into_blocks_of_their_expert(rows_per_block):
    expert_ids = np.random.default_rng(0).integers(0, 5, 37).astype("int32")
    slots, block_experts = map(
        to_numpy, expert_slots(expert_ids, 5, rows_per_block)
    )
    assert len(set(slots.tolist())) == len(slots)  # one row per copy
    assert len(block_experts) * rows_per_block >= slots.max() + 1
    np.testing.assert_array_equal(
        block_experts[slots // rows_per_block], expert_ids
    )


def two_models(options, jit_compile):
    """The grouped layer and the all-experts one, same weights, compiled."""
    built = []
    for layer_class in (MixtureOfExperts, AllExpertsMixture):
        keras.utils.set_random_seed(7)
        inputs = keras.Input((6, 16))
        hidden = keras.layers.Dense(16, name="input_projection")(inputs)
        outputs = layer_class(**{**SMALL, **options}, name="moe")(hidden)
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss="mse",
            jit_compile=jit_compile,
        )
        built.append(model)
    built[1].set_weights(built[0].get_weights())
    return built


# One compiled training step per backend (torch.compile of a training step
# takes minutes here, so PyTorch's runs eagerly), and one eager step on
# TensorFlow and PyTorch (JAX's eager op-by-op step is slow and not how JAX
# trains).
COMPILED = BACKEND != "torch"


@pytest.mark.parametrize(
    ("options", "jit_compile"),
    [
        ({}, COMPILED),
        (
            {"shared_expert_dim": 8, "use_bias": True, "activation": "gelu"},
            BACKEND == "jax",
        ),
    ],
    ids=["swiglu", "shared_gelu_bias"],
)
def test_training_step_equals_all_experts(options, jit_compile):
    """Same outputs, loss (with the auxiliary loss) and weight updates, so
    the same gradients for the input projection, router and experts."""
    grouped, every = two_models(options, jit_compile)
    x, y = random_inputs(4, 6, 16), random_inputs(4, 6, 16, seed=1)
    np.testing.assert_allclose(
        grouped.predict(x, verbose=0), every.predict(x, verbose=0), atol=2e-5
    )
    start = grouped.get_weights()
    losses = [model.train_on_batch(x, y) for model in (grouped, every)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    assert_same_updates(start, every.get_weights(), grouped.get_weights())


@pytest.mark.skipif(BACKEND != "torch", reason="torch.export is PyTorch's")
def test_torch_export_traces_routing_without_baking_it_in():
    import torch

    layer = MixtureOfExperts(**SMALL)
    x, other = random_inputs(2, 5, 16), random_inputs(2, 5, 16, seed=3)
    layer(x)

    class Forward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, inputs):
            return self.layer(inputs)

    with torch.no_grad():
        program = torch.export.export(
            Forward(), (torch.tensor(x),), strict=False
        ).module()
        traced = program(torch.tensor(other)).numpy()
    np.testing.assert_allclose(traced, to_numpy(layer(other)), atol=1e-6)


def numpy_load_balancing_loss(logits, k, mask):
    """`transformers`' `load_balancing_loss_func` for one layer."""
    num_experts = logits.shape[-1]
    probabilities = softmax(logits)
    top = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    expert_mask = np.eye(num_experts)[top]  # (tokens, k, experts)
    tokens_per_expert = (expert_mask * mask[:, None, None]).sum(0) / mask.sum()
    probability_per_expert = (probabilities * mask[:, None]).sum(0) / mask.sum()
    return num_experts * np.sum(tokens_per_expert * probability_per_expert)


@pytest.mark.parametrize("masked", [False, True])
def test_auxiliary_loss_is_transformers_load_balancing_loss(masked):
    x = random_inputs(2, 7, 16)
    mask = np.ones((2, 7), bool)
    mask[1, 4:] = not masked
    layer = MixtureOfExperts(**SMALL, aux_loss_coefficient=0.01)
    layer(x, training=True, mask=mask if masked else None)
    logits = x.reshape(-1, 16) @ to_numpy(layer.router.kernel)
    expected = 0.01 * numpy_load_balancing_loss(logits, 2, mask.reshape(-1))
    (loss,) = layer.losses
    np.testing.assert_allclose(to_numpy(loss), expected, rtol=1e-5)
    layer(x)  # inference adds no loss
    assert layer.losses == []


def test_fit_evens_out_the_expert_load():
    # A router that sends almost every token to expert 0; only the
    # auxiliary loss trains it (the task loss does not reach the router
    # through k=1 weights of 1).
    x = random_inputs(128, 1, 8) + 1.0
    layer = MixtureOfExperts(
        16, num_experts=4, experts_per_token=1, aux_loss_coefficient=1.0
    )
    inputs = keras.Input((1, 8))
    model = keras.Model(inputs, layer(inputs))
    kernel = np.random.default_rng(0).normal(0, 0.1, (8, 4))
    kernel[:, 0] += 0.5
    layer.router.kernel.assign(kernel.astype("float32"))

    def busiest_share():
        expert_ids = to_numpy(layer.route(x)[0]).reshape(-1)
        return np.bincount(expert_ids, minlength=4).max() / len(expert_ids)

    before = busiest_share()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    # 60 full-batch steps: the busiest expert falls to about 0.26.
    model.fit(x, np.zeros_like(x), batch_size=128, epochs=60, verbose=0)
    after = busiest_share()
    assert before > 0.9, before
    assert after < 0.4, after  # a quarter each is even


def test_config_round_trip_and_saved_model(tmp_path):
    options = {
        **SMALL,
        "activation": "gelu",
        "dropout": 0.1,
        "use_bias": True,
        "router_softmax": "after_top_k",
        "normalize_top_k": False,
        "shared_expert_dim": 8,
        "router_jitter": 0.01,
        "aux_loss_coefficient": 0.02,
    }
    layer = MixtureOfExperts(**options)
    config = layer.get_config()
    assert {key: config[key] for key in options} == options
    assert MixtureOfExperts.from_config(config).get_config() == config
    inputs = keras.Input((5, 16))
    model = keras.Model(inputs, layer(inputs))
    x = random_inputs(2, 5, 16)
    path = str(tmp_path / "moe.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)))


class MixtureOfExpertsHarnessTest(TestCase):
    def test_layer_harness(self):
        # With a shared expert: every kind of weight (router, experts,
        # shared expert and its gate).
        self.run_layer_test(
            MixtureOfExperts,
            init_kwargs={**SMALL, "shared_expert_dim": 8},
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=8,
            expected_num_seed_generators=1,
            supports_masking=True,
        )


@pytest.mark.parametrize(
    "argument, value",
    [
        ("hidden_dim", 0),
        ("num_experts", 2.5),
        ("experts_per_token", 5),
        ("activation", "tanh"),
        ("dropout", 1.0),
        ("router_softmax", "never"),
        ("normalize_top_k", "yes"),
        ("shared_expert_dim", -1),
        ("router_jitter", -0.1),
        ("aux_loss_coefficient", -1.0),
    ],
)
def test_bad_arguments_name_themselves(argument, value):
    with pytest.raises(ValueError, match=f"`{argument}`.*{value!r}"):
        MixtureOfExperts(**{**SMALL, argument: value})


def test_bad_input_rank_is_named():
    with pytest.raises(ValueError, match="`x` must have rank 3"):
        MixtureOfExperts(**SMALL)(random_inputs(2, 16))


# Expert parallelism: each device of the model axis holds a quarter of the
# experts; the router and the shared parts stay whole.
EXPERT_LAYOUTS = {
    r".*moe/(gate|up|down)_kernel": ("model", None, None),
}


def expert_parallel_model():
    inputs = keras.Input((6, 16))
    hidden = keras.layers.Dense(16, name="input_projection")(inputs)
    options = {**SMALL, "num_experts": 8, "aux_loss_coefficient": 0.1}
    model = keras.Model(inputs, MixtureOfExperts(**options, name="moe")(hidden))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    return model


def main():
    """One training step on one device, then with the experts sharded."""
    devices = keras.distribution.list_devices()
    assert len(devices) == DEVICES, devices
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
    layouts = keras.distribution.LayoutMap(mesh)
    for path, axes in EXPERT_LAYOUTS.items():
        layouts[path] = axes
    x, y = random_inputs(8, 6, 16), random_inputs(8, 6, 16, seed=1)
    single = expert_parallel_model()
    start = single.get_weights()
    expected_loss = single.train_on_batch(x, y)
    strategy = keras.distribution.ModelParallel(
        layout_map=layouts, batch_dim_name="batch"
    )
    with strategy.scope():
        sharded = expert_parallel_model()
        sharded.set_weights(start)
        loss = sharded.train_on_batch(x, y)
    for weight in sharded.weights:
        if weight.path.split("/")[-1].endswith("_kernel"):
            assert tuple(weight.value.sharding.spec)[0] == "model", weight.path
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-4)
    assert_same_updates(start, single.get_weights(), sharded.get_weights())
    print("expert parallel: same step loss and weights")


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is JAX's")
@pytest.mark.skipif(
    installed_version("keras") < (3, 15),
    reason="before 3.15, Keras's JAX trainer fails on `train_on_batch` "
    "without sample weights under a distribution",
)
def test_experts_sharded_over_8_cpus_train_as_one_device():
    result = run_module(
        "tests.test_mixture_of_experts",
        env=cpu_devices(DEVICES),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "expert parallel: same step loss and weights" in result.stdout


@pytest.mark.slow
def test_benchmark_prints_its_table_and_targets():
    output = run_benchmark(
        "benchmarks.moe",
        *("--experts", "4", "--top-k", "2", "--width", "8"),
        *("--hidden", "8", "--batch", "2", "--seq", "4"),
        *("--steps", "1", "--repeats", "1"),
    )
    assert [row[:2] for row in table_rows(output)] == [["4", "2"]]
    assert "targets: not measured" in output


if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    main()

"""The benchmark commands run and print their tables (timings not checked)."""

import keras
import pytest

from tests.conftest import run_module

pytestmark = pytest.mark.slow


def table_rows(output):
    """The cells of `output`'s Markdown table rows, header and rule left out."""
    lines = [line for line in output.splitlines() if line.startswith("| ")]
    return [line.strip("| ").split(" | ") for line in lines[1:]]


def run_benchmark(module, *arguments):
    result = run_module(module, *arguments, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_train_step_prints_every_row():
    output = run_benchmark(
        "benchmarks.train_step",
        *("--configs", "small", "--precisions", "float32,mixed_bfloat16"),
        *("--steps", "1", "--repeats", "1", "--batch", "4"),
    )
    rows = table_rows(output.split("\nbackend:")[-1])
    assert [row[:2] for row in rows] == [
        ["small, batch 4", "float32"],
        ["small, batch 4", "mixed_bfloat16"],
        ["small, batch 4", "float32"],
    ]
    torch_nn_ms = rows[0][6]
    assert (torch_nn_ms != "-") == (keras.backend.backend() == "torch")


def test_decode_prints_every_row():
    output = run_benchmark(
        "benchmarks.decode",
        *("--batch", "1", "--prompt-length", "2", "--new-tokens", "3"),
        *("--repeats", "1"),
    )
    labels = [row[0] for row in table_rows(output)]
    if keras.backend.backend() == "torch":
        cached = [
            f"keras_tfm KV cache, torch_step={mode}"
            for mode in ("eager", "export", "compile")
        ]
        floor = ["plain PyTorch, eager", "plain PyTorch, compiled"]
    else:
        cached, floor = ["keras_tfm KV cache"], []
    assert labels == [
        "keras-hub GPT2CausalLM",
        "keras_tfm uncached",
        *cached,
        *floor,
    ]


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="a TensorFlow profile"
)
def test_op_profile_prints_both_libraries():
    output = run_benchmark(
        "benchmarks.op_profile", "--config", "small", "--steps", "1"
    )
    rows = table_rows(output)
    assert rows[-1][0] == "all ops"
    assert any(row[0] == "_MklMatMul" for row in rows)

"""The benchmark commands run and print their tables (timings not checked)."""

import keras
import pytest

from tests.conftest import run_module

pytestmark = pytest.mark.slow


def table_rows(output):
    """The Markdown table rows of `output`, header and rule left out."""
    rows = [line for line in output.splitlines() if line.startswith("| ")]
    return rows[1:]


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
    assert [row.strip("| ").split(" | ")[:2] for row in rows] == [
        ["small, batch 4", "float32"],
        ["small, batch 4", "mixed_bfloat16"],
        ["small, batch 4", "float32"],
    ]
    has_torch_column = keras.backend.backend() == "torch"
    assert ("| - |" not in rows[0]) == has_torch_column


def test_decode_prints_both_rows():
    output = run_benchmark(
        "benchmarks.decode",
        *("--batch", "1", "--prompt-length", "2", "--new-tokens", "3"),
        *("--repeats", "1"),
    )
    rows = table_rows(output)
    assert [row.split(" | ")[0] for row in rows] == ["| uncached", "| KV cache"]


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="a TensorFlow profile"
)
def test_op_profile_prints_both_libraries():
    output = run_benchmark(
        "benchmarks.op_profile", "--config", "small", "--steps", "1"
    )
    rows = table_rows(output)
    assert rows[-1].startswith("| all ops |")
    assert any(row.startswith("| _MklMatMul |") for row in rows)

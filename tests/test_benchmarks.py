"""The benchmark commands run and print their tables (timings not checked)."""

import re

import keras
import pytest

from tests.conftest import run_module

pytestmark = pytest.mark.slow


def table_rows(output):
    """The cells of `output`'s Markdown table rows, header and rule left out."""
    lines = [line for line in output.splitlines() if line.startswith("| ")]
    return [line.strip("| ").split(" | ") for line in lines[1:]]


def only_on(backend):
    """Runs a benchmark's smoke test in one backend's suite only: its
    libraries' rows run on the backend of the process, and each suite
    checking every benchmark cost CI minutes for the same check."""
    return pytest.mark.skipif(
        keras.backend.backend() != backend,
        reason=f"checked once, in the {backend} suite",
    )


def run_benchmark(module, *arguments):
    result = run_module(module, *arguments, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@only_on("torch")
def test_train_step_prints_every_cell_of_the_grid():
    output = run_benchmark(
        "benchmarks.train_step",
        *("--activations", "gelu,swiglu", "--dropouts", "0", "--norms", "pre"),
        *("--seqs", "16", "--precisions", "float32,mixed_bfloat16"),
        *("--jit-compile", "auto", "--layers", "1", "--width", "16"),
        *("--ff", "32", "--batch", "2", "--steps", "1", "--repeats", "1"),
    )
    final = output.split("\nbackend:")[-1]
    rows = table_rows(final)
    assert [(row[0], row[4]) for row in rows] == [
        ("gelu", "float32"),
        ("gelu", "mixed_bfloat16"),
        ("swiglu", "float32"),
        ("swiglu", "mixed_bfloat16"),
    ]
    # keras-hub has no SwiGLU encoder; torch.nn runs in float32 on torch.
    assert [row[6] != "-" for row in rows] == [True, True, False, False]
    torch_nn_ms = rows[0][9]
    assert torch_nn_ms != "-"
    assert "hub/tfm over 2 cells: min" in final
    assert "target keras_tfm >= 1.2x keras-hub: " in final
    assert final.rstrip().endswith("of 2 float32 cells")


@only_on("torch")
def test_projections_prints_both_ways_for_every_shape():
    output = run_benchmark(
        "benchmarks.projections",
        *("--shapes", "16x8x2,32x8x2", "--dropouts", "0"),
        *("--steps", "1", "--repeats", "1"),
    )
    rows = table_rows(output)
    assert [row[:4] for row in rows] == [
        ["16", "8", "2", "0.0"],
        ["32", "8", "2", "0.0"],
    ]
    assert all(row[6].endswith("x") for row in rows)


@only_on("torch")
def test_decode_prints_every_row():
    output = run_benchmark(
        "benchmarks.decode",
        *("--batch", "1", "--prompt-length", "2", "--new-tokens", "3"),
        *("--repeats", "1"),
    )
    labels = [row[0] for row in table_rows(output)]
    assert labels == [
        "keras-hub GPT2CausalLM",
        "keras_tfm uncached",
        *(
            f"keras_tfm KV cache, torch_step={mode}"
            for mode in ("eager", "export", "compile")
        ),
        "plain PyTorch, eager",
        "plain PyTorch, compiled",
    ]


@only_on("tensorflow")
def test_op_profile_prints_both_libraries():
    output = run_benchmark(
        "benchmarks.op_profile",
        *("--layers", "1", "--width", "32", "--ff", "64", "--seq", "16"),
        *("--batch", "4", "--steps", "1"),
    )
    rows = table_rows(output)
    assert rows[-1][0] == "all ops"
    # Op names differ by CPU and library build (MKL or not, XLA's YNN or
    # Eigen), so the check is that some matrix product is listed at all.
    matrix_product = re.compile(r"mat_?mul|dot|gemm|ynn|aten::(add|b)?mm", re.I)
    assert any(matrix_product.search(row[0]) for row in rows[:-1])


# Each row runs in a process of its own backend, whatever this suite's.
@only_on("torch")
def test_checkpoints_prints_every_row_and_column(tmp_path):
    backend = "jax"
    output = run_benchmark(
        "benchmarks.checkpoints",
        *("--quick", "--backends", backend, "--dtypes", "float32"),
        *("--models", "smollm2", "--cache-dir", tmp_path),
        "--compilation-cache",
    )
    lines = output.splitlines()
    header = next(line for line in lines if line.startswith("| library"))
    assert header.strip("| ").split(" | ")[3:] == [
        "load s", "peak MB", "RSS MB", "first call s", "tok/s b1",
        "tok/s b8", "load/hf", "peak/hf", "b1/hf", "b8/hf", "agree",
    ]  # fmt: skip
    hf, tfm, warm = table_rows(output)
    assert hf[:3] == ["transformers", "torch", "float32"]
    assert tfm[:3] == ["keras_tfm", backend, "float32"]
    assert warm[:3] == ["keras_tfm warm cache", backend, "float32"]
    # transformers is the reference: its ratios and tokens are the others'.
    assert "-" not in hf[3:9] and hf[9:] == ["-"] * 5
    for row in (tfm, warm):
        assert "-" not in row and row[-1] == "4/4"
    targets = [line for line in lines if line.startswith("targets, ")]
    assert len(targets) == 2
    for line in targets:
        assert line.count(": met (") + line.count(": missed (") == 5

"""Every example runs end to end with `--quick` on the current backend."""

import os
import subprocess
import sys

import keras
import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")

# Each script and a line its output must contain.
CASES = {
    "translate.py": "Held-out exact match:",
    "classify_text.py": "bag-of-words logistic regression",
    "generate_text.py": "bits per byte",
    "vit_digits.py": "Test accuracy:",
    "forecast.py": "seasonal naive",
}


def run_example(script, output_dir, *arguments):
    environment = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    return subprocess.run(
        [sys.executable, script, "--quick", "--output-dir", str(output_dir)]
        + list(arguments),
        cwd=EXAMPLES,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize("script", CASES)
def test_example_runs_quick(script, tmp_path):
    result = run_example(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert CASES[script] in result.stdout
    assert os.path.exists(tmp_path / "best.keras")


@pytest.mark.slow
def test_translate_reads_user_pairs(tmp_path):
    pairs = tmp_path / "pairs.txt"
    lines = [f"go {i}.\tve {i}.\tattribution" for i in range(60)]
    pairs.write_text("\n".join(lines), encoding="utf-8")
    result = run_example(
        "translate.py", tmp_path / "run", "--pairs", str(pairs)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "54 training pairs, 6 held out" in result.stdout

"""Every example runs end to end with `--quick` on the current backend.

The runs share one subprocess (this file run as a script), which imports
TensorFlow, keras-hub and the backend once instead of once per example.
"""

import os
import runpy
import sys

import pytest

from tests.conftest import run_module

EXAMPLES = os.path.abspath(
    os.path.join(os.path.dirname(__file__), os.pardir, "examples")
)

# Each run's name, script, extra arguments, and a line its output must hold.
RUNS = [
    ("translate", "translate.py", [], "Held-out exact match:"),
    (
        "translate_user_pairs",
        "translate.py",
        ["--pairs", "{output}/pairs.txt"],
        "54 training pairs, 6 held out",
    ),
    ("classify_text", "classify_text.py", [], "bag-of-words"),
    ("generate_text", "generate_text.py", [], "bits per byte"),
    ("vit_digits", "vit_digits.py", [], "Test accuracy:"),
    ("forecast", "forecast.py", [], "seasonal naive"),
    (
        "pretrain_finetune",
        "pretrain_finetune.py",
        [],
        "reloaded in a fresh process",
    ),
    ("huggingface", "huggingface.py", [], "reloaded with transformers"),
]
MARKER = "=== example run: "


def run_all(output):
    """Runs every example in this process, each into `output/<name>`."""
    sys.path.insert(0, EXAMPLES)
    os.chdir(EXAMPLES)
    for name, script, arguments, _ in RUNS:
        print(f"{MARKER}{name}", flush=True)
        run_output = os.path.join(output, name)
        sys.argv = [script, "--quick", "--output-dir", run_output] + [
            argument.format(output=output) for argument in arguments
        ]
        runpy.run_path(script, run_name="__main__")
        assert os.path.exists(os.path.join(run_output, "best.keras")), name


@pytest.mark.slow
def test_examples_run_quick(tmp_path):
    lines = [f"go {i}.\tve {i}.\tattribution" for i in range(60)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines), encoding="utf-8")
    result = run_module("tests.test_examples", tmp_path, timeout=900)
    outputs = dict(
        part.split("\n", 1) for part in result.stdout.split(MARKER)[1:]
    )
    assert result.returncode == 0, (
        f"failed in {list(outputs)[-1] if outputs else 'start-up'}:\n"
        + result.stderr[-3000:]
    )
    for name, _, _, expected in RUNS:
        assert expected in outputs[name], (name, outputs[name][-2000:])
    # Every exported format serves the classifier's predictions.
    served = [
        line
        for line in outputs["pretrain_finetune"].splitlines()
        if "same predicted class" in line
    ]
    assert served and all("class 100.0%" in line for line in served), served


if __name__ == "__main__":
    run_all(sys.argv[1])

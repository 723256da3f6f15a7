"""Every example runs end to end with `--quick` on the current backend.

The runs share one subprocess (this file run as a script), which imports
TensorFlow, keras-hub and the backend once instead of once per example.
"""

import os
import pty
import re
import runpy
import select
import subprocess
import sys
import time

import keras
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
    ("semantic_search", "semantic_search.py", [], "TF-IDF baseline:"),
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
        start = time.perf_counter()
        runpy.run_path(script, run_name="__main__")
        assert os.path.exists(os.path.join(run_output, "best.keras")), name
        # Where the examples test's minutes go, in its output on failure.
        print(f"{name} took {time.perf_counter() - start:.0f} s", flush=True)


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


def read_until(fd, text, timeout):
    """What the terminal shows until `text` appears (or `timeout`)."""
    shown, deadline = b"", time.monotonic() + timeout
    while text.encode() not in shown and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                shown += os.read(fd, 4096)
            except OSError:  # the program has exited
                break
    return shown.decode("utf-8", errors="replace")


@pytest.mark.slow
def test_chat_in_a_terminal():
    """examples/chat.py as a user runs it: two messages, each reply
    streamed, then Ctrl-D."""
    terminal, program_side = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "chat.py", "--quick"],
        cwd=EXAMPLES,
        stdin=program_side,
        stdout=program_side,
        stderr=program_side,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
    )
    os.close(program_side)
    try:
        start = read_until(terminal, "you> ", timeout=240)
        assert "Ctrl-D quits" in start, start[-2000:]
        turns = []
        for message in ("Hello, who are you?", "Où est 東京?"):
            os.write(terminal, message.encode() + b"\n")
            turns.append(read_until(terminal, "you> ", timeout=120))
        os.write(terminal, b"\x04")  # Ctrl-D: end of input
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(terminal)
    for message, shown in zip(("Hello, who", "東京"), turns, strict=True):
        # The terminal echoes the message; the reply (random text, which may
        # hold newlines) follows "model> ", then the next prompt.
        assert re.fullmatch(
            rf"[^\n]*{message}[^\n]*\r?\nmodel> .*\r?\nyou> ", shown, re.DOTALL
        ), shown


if __name__ == "__main__":
    run_all(sys.argv[1])

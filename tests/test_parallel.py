"""Training across processes (JAX, PyTorch) and devices (TensorFlow) takes
the same steps as one process on the combined batch.

Each run is `examples/parallel_train.py` in fresh processes, started by
`examples/launch.py` where there are several: loopback addresses only, and
every run bounded by the launcher's `--timeout` and the test's own.
"""

import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_tfm  # noqa: F401 (registers the model classes for loading)
from tests.conftest import ROOT, assert_same_updates, installed_version

BACKEND = keras.backend.backend()
SCRIPT = os.path.join(ROOT, "examples", "parallel_train.py")
LAUNCH = os.path.join(ROOT, "examples", "launch.py")


def run(*command, timeout=300):
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": BACKEND},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def launch(*arguments, processes=2):
    return run(LAUNCH, f"--processes={processes}", "--timeout=240", *arguments)


def weights(directory):
    """The weights before and after training that process 0 saved."""
    saved = np.load(os.path.join(directory, "weights.npz"))
    arrays = [saved[f"arr_{i}"] for i in range(len(saved.files) - 1)]
    half = len(arrays) // 2
    return arrays[:half], arrays[half:]


def assert_same_training(reference, directory):
    """Same start, and every weight moved by the same update."""
    (start, want), (parallel_start, got) = (
        weights(reference),
        weights(directory),
    )
    for a, b in zip(start, parallel_start, strict=True):
        np.testing.assert_array_equal(a, b)
    assert_same_updates(start, want, got)


def assert_reloads(directory):
    """The model process 0 saved holds the trained weights."""
    model = keras.models.load_model(os.path.join(directory, "model.keras"))
    _, trained = weights(directory)
    for loaded, expected in zip(model.get_weights(), trained, strict=True):
        np.testing.assert_array_equal(loaded, expected)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, one device, the whole batch."""
    directory = tmp_path_factory.mktemp("reference")
    run(SCRIPT, f"--output-dir={directory}")
    return directory


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's multi-process path")
@pytest.mark.skipif(
    BACKEND == "jax" and installed_version("jax") < (0, 10),
    reason="JAX 0.4.30's device_put refuses a sharding over other processes' "
    "devices; multi-process training is tested with JAX 0.10",
)
@pytest.mark.parametrize("mode", ["data", "model"])
def test_two_jax_processes_train_as_one(mode, reference, tmp_path):
    # 2 processes x 4 virtual CPU devices, gloo collectives between them:
    # an 8-device mesh over 2 "hosts"; `model` is a (2, 4) mesh.
    output = launch(
        "--cpu-devices=4",
        SCRIPT,
        f"--distribute={mode}",
        f"--output-dir={tmp_path}",
    )
    assert output.count(f"Distribution: {mode} parallel over 8") == 2, output
    assert_same_training(reference, tmp_path)
    assert_reloads(tmp_path)


@pytest.mark.skipif(BACKEND != "torch", reason="torch.distributed path")
def test_two_torch_processes_train_as_one(reference, tmp_path):
    output = launch(SCRIPT, f"--output-dir={tmp_path}")
    assert output.count("last step's loss") == 2, output
    assert_same_training(reference, tmp_path)
    assert_reloads(tmp_path)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute path")
def test_mirrored_strategy_on_two_cpus_trains_as_one(reference, tmp_path):
    output = run(SCRIPT, "--cpu-devices=2", f"--output-dir={tmp_path}")
    assert "MirroredStrategy: 2 replicas" in output, output
    assert_same_training(reference, tmp_path)
    assert_reloads(tmp_path)


def start_launcher(*arguments):
    return subprocess.Popen(
        [sys.executable, LAUNCH, *arguments],
        cwd=ROOT,
        # Unbuffered, so that the workers' lines arrive as they are printed.
        env={**os.environ, "KERAS_BACKEND": "torch", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(launcher, text, count):
    """The launcher's lines up to the `count`-th holding `text`."""
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if sum(text in each for each in lines) == count:
            return lines
    raise AssertionError(f"no {count} lines with {text!r}: {lines}")


def worker_pids(lines):
    return [int(line.split()[-1]) for line in lines if " is pid " in line]


def assert_gone(pid):
    # The launcher waits for its children, so a stopped one no longer exists.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.skipif(BACKEND != "torch", reason="checked once, in the torch run")
def test_a_dead_worker_stops_the_others_instead_of_a_hang(tmp_path):
    # Killed once both workers run the script; the survivor would wait for
    # it in torch.distributed (30 minutes, gloo's default timeout).
    launcher = start_launcher(
        "--processes=2", "--timeout=120", SCRIPT, f"--output-dir={tmp_path}"
    )
    pids = worker_pids(read_until(launcher, "Keras backend", 2))
    os.kill(pids[1], signal.SIGKILL)
    output = launcher.communicate(timeout=60)[0]
    assert launcher.returncode != 0
    assert "process 1 exited with code -9; stopping the others" in output
    for pid in pids:
        assert_gone(pid)


@pytest.mark.skipif(BACKEND != "torch", reason="checked once, in the torch run")
def test_the_launcher_stops_a_run_past_its_timeout(tmp_path):
    sleeper = tmp_path / "sleep.py"
    sleeper.write_text("import time\ntime.sleep(600)\n")
    launcher = start_launcher("--processes=2", "--timeout=2", str(sleeper))
    output = launcher.communicate(timeout=60)[0]
    pids = worker_pids(output.splitlines())
    assert launcher.returncode == 124
    assert "still running after --timeout=2.0 s" in output
    for pid in pids:
        assert_gone(pid)

"""Builds keras_tfm's sdist and wheel and tests the wheel as users get it.

Usage: python -m tests.packaging.check --python PYTHON --backend jax

The wheel is built from the sdist (as `python -m build` does), both archives
are checked for the package's modules and nothing else, and the wheel is
installed with one backend's extra into a new virtual environment made with
`--python`. `tests/packaging/installed.py` then runs there: every public
module imports without the optional libraries, the README's quick start
trains, and a feature whose extra is missing raises an ImportError that
names the extra.
"""

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Modules the archives must hold; a new subpackage missing from the
# setuptools configuration shows up here first.
EXPECTED = [
    "keras_tfm/__init__.py",
    "keras_tfm/layers/attention.py",
    "keras_tfm/models/causal_lm.py",
    "keras_tfm/interop/huggingface/__init__.py",
    "keras_tfm/interop/huggingface/llama.py",
    "keras_tfm/generation/__init__.py",
    "keras_tfm/generation/torch_step.py",
]


def run(*command, **kwargs):
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def check_archives(dist):
    (wheel,) = [name for name in os.listdir(dist) if name.endswith(".whl")]
    (sdist,) = [name for name in os.listdir(dist) if name.endswith(".tar.gz")]
    with zipfile.ZipFile(os.path.join(dist, wheel)) as archive:
        wheel_files = archive.namelist()
    with tarfile.open(os.path.join(dist, sdist)) as archive:
        sdist_files = [name.partition("/")[2] for name in archive.getnames()]
    for expected in EXPECTED:
        assert expected in wheel_files, f"{wheel} lacks {expected}"
        assert expected in sdist_files, f"{sdist} lacks {expected}"
    strays = [
        name
        for name in wheel_files
        if not name.startswith(("keras_tfm/", "keras_tfm-"))
    ]
    assert not strays, f"{wheel} holds files outside keras_tfm: {strays}"
    print(f"{wheel}: {len(wheel_files)} files; {sdist}: {len(sdist_files)}")
    return os.path.join(dist, wheel)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--backend", default="jax", choices=["jax", "tensorflow", "torch"]
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        dist = os.path.join(work, "dist")
        run(sys.executable, "-m", "build", "--quiet", "--outdir", dist, ROOT)
        wheel = check_archives(dist)
        venv = os.path.join(work, "venv")
        run(args.python, "-m", "venv", venv)
        python = os.path.join(venv, "bin", "python")
        run(
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            f"{wheel}[{args.backend}]",
        )
        run(
            python,
            os.path.join(ROOT, "tests", "packaging", "installed.py"),
            os.path.join(ROOT, "README.md"),
            cwd=work,
            env={**os.environ, "KERAS_BACKEND": args.backend},
        )


if __name__ == "__main__":
    main()

"""Checks run inside a fresh virtual environment holding only the wheel.

`tests/packaging/check.py` installs the built wheel with one backend's extra
into a new environment and runs this file there, by path and from an empty
directory, so that `keras_tfm` is imported from site-packages and not from
the source tree.
"""

import importlib
import re
import sys

README = sys.argv[1]
# Optional libraries and the extra that provides each. None is installed in
# this environment; a backend's extra installs only its backend.
OPTIONAL = {
    "keras_hub": "nlp",
    "matplotlib": "docs",
    "safetensors": "huggingface",
    "torch": "torch",
    "transformers": "dev",
}
PUBLIC_MODULES = [
    "keras_tfm",
    "keras_tfm.layers",
    "keras_tfm.models",
    "keras_tfm.generation",
    "keras_tfm.interop",
    "keras_tfm.distribution",
    "keras_tfm.visualize",
]


def check_imports():
    for name in PUBLIC_MODULES:
        importlib.import_module(name)
    import keras_tfm

    assert "site-packages" in keras_tfm.__file__, keras_tfm.__file__
    loaded = sorted(name for name in OPTIONAL if name in sys.modules)
    assert not loaded, f"importing keras_tfm imported {loaded}"
    print(f"imported {len(PUBLIC_MODULES)} modules from {keras_tfm.__file__}")


def check_quick_start():
    with open(README, encoding="utf-8") as file:
        text = file.read()
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    exec(compile(code, "README quick start", "exec"), {})
    print("ran the README's quick start")


def expect_import_error(function, extra):
    try:
        function()
    except ImportError as error:
        assert f"keras_tfm[{extra}]" in str(error), str(error)
        print(f"ImportError names [{extra}]: {error}")
        return
    raise AssertionError(f"{function} ran without its [{extra}] extra")


def check_missing_extras():
    import numpy as np

    from keras_tfm import generation, interop, models, visualize

    model = models.causal_lm(
        vocab_size=10,
        sequence_length=8,
        num_layers=1,
        embed_dim=8,
        num_heads=2,
        ff_dim=8,
    )
    expect_import_error(
        lambda: generation.generate(model, np.ones((1, 2), "int32"), 4), "nlp"
    )
    expect_import_error(
        lambda: visualize.plot_positional_encoding(length=8, dim=8), "docs"
    )
    expect_import_error(
        lambda: interop.to_huggingface(model, "out"), "huggingface"
    )
    expect_import_error(lambda: interop.from_torch(None), "torch")


check_imports()
check_quick_start()
check_missing_extras()
print("the installed package works")

"""Optional dependencies, imported when a feature first needs them.

`import keras_tfm` needs only Keras and a backend. Each feature below
imports its library on first use, and a missing one raises an `ImportError`
that names the extra to install.
"""

import importlib


def require(module, extra, feature):
    """Imports `module`, or explains which extra of keras_tfm provides it.

    Args:
        module: The module to import, e.g. `"safetensors.numpy"`.
        extra: The keras_tfm extra that installs it, e.g. `"huggingface"`.
        feature: What needs it, for the message, e.g. `"keras_tfm.interop"`.

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        raise ImportError(
            f"{feature} needs `{package}`, which is not installed: "
            f"pip install 'keras_tfm[{extra}]'"
        ) from error

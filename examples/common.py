"""What the examples share: command line, callbacks, tokenizer and texts."""

import argparse
import ast
import math
import os
import sys
import sysconfig
import tempfile

import keras
import keras_hub


def parse_arguments(description, epochs, **extra_arguments):
    """`--quick`, `--epochs`, `--output-dir`, `--seed`, plus `extra_arguments`.

    Each extra argument maps a flag name to `add_argument` keyword arguments.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (used by the tests)",
    )
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--output-dir",
        default=None,
        help="where checkpoints and the backup for resuming go",
    )
    parser.add_argument("--seed", type=int, default=0)
    for flag, options in extra_arguments.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", **options)
    args = parser.parse_args()
    if args.epochs is None:
        args.epochs = 1 if args.quick else epochs
    if args.output_dir is None:
        script = os.path.splitext(os.path.basename(parser.prog))[0]
        args.output_dir = os.path.join("examples", "runs", script)
    keras.utils.set_random_seed(args.seed)
    print(f"Keras backend: {keras.backend.backend()}")
    return args


DISTRIBUTE_ARGUMENT = {
    "choices": ["data", "model"],
    "default": None,
    "help": "spread training over every device with keras.distribution "
    "(JAX backend): `data` parallel, or `model` parallel (weights split)",
}


def use_distribution(mode, num_heads):
    """Sets Keras's distribution for `--distribute data|model`.

    `model` puts as many devices on the model axis as divide `num_heads`,
    and the rest on the batch axis.
    """
    if mode is None:
        return
    if keras.backend.backend() != "jax":
        sys.exit(
            f"--distribute {mode} needs the JAX backend (keras.distribution "
            "runs there only): run with KERAS_BACKEND=jax."
        )
    from keras_tfm import distribution

    devices = keras.distribution.list_devices()
    if mode == "data":
        strategy = keras.distribution.DataParallel(devices=devices)
    else:
        model_axis = math.gcd(len(devices), num_heads)
        mesh = keras.distribution.DeviceMesh(
            (len(devices) // model_axis, model_axis),
            ("batch", "model"),
            devices,
        )
        strategy = keras.distribution.ModelParallel(
            layout_map=distribution.layout_map(mesh), batch_dim_name="batch"
        )
    keras.distribution.set_distribution(strategy)
    print(f"Distribution: {mode} parallel over {len(devices)} device(s)")


def batch_split():
    """Into how many parts the distribution splits every batch (1 if none).

    Under `--distribute`, each batch (the last, partial one included) must be
    a multiple of it.
    """
    strategy = keras.distribution.distribution()
    if strategy is None:
        return 1
    mesh = strategy.device_mesh
    return mesh.shape[mesh.axis_names.index(strategy.batch_dim_name)]


def whole_batches(items, batch_size):
    """`items` cut to a multiple of `batch_size` under `--distribute`, so that
    no partial batch is left to split unevenly across devices."""
    if batch_split() == 1:
        return items
    return items[: len(items) - len(items) % batch_size]


class SeedEachEpoch(keras.callbacks.Callback):
    """Makes each epoch's randomness a function of the seed and the epoch.

    `BackupAndRestore` brings back the weights and the optimizer, not the
    random state: a resumed run would shuffle its batches and drop units
    differently from the run that was never interrupted. Seeding every
    epoch afresh makes the epochs a resumed run repeats the same as theirs.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        # Python, NumPy, TensorFlow and torch: the batch order.
        keras.utils.set_random_seed(self.seed + epoch)
        # Dropout: each layer's generator state is `[seed, calls so far]`;
        # an epoch draws far fewer than 2**20 times.
        for variable in self.model.non_trainable_variables:
            if variable.name == "seed_generator_state":
                state = keras.ops.convert_to_numpy(variable)
                state[1] = epoch * 2**20
                variable.assign(state)


def progress_verbosity():
    """`verbose` for `fit`: Keras's progress bar in a terminal, one line per
    epoch in a log file (where the bar is one line of thousands of
    characters)."""
    return "auto" if sys.stdout.isatty() else 2


def training_callbacks(args, monitor="val_loss"):
    """Keeps the best model, and resumes an interrupted `fit` where it was.

    Re-running the same command after an interruption picks up from the last
    finished epoch (`BackupAndRestore`) and ends with the weights the
    uninterrupted run would have had (`SeedEachEpoch`); the best model so far
    is in `OUTPUT_DIR/best.keras`.
    """
    os.makedirs(args.output_dir, exist_ok=True)
    return [
        SeedEachEpoch(args.seed),
        keras.callbacks.ModelCheckpoint(
            os.path.join(args.output_dir, "best.keras"),
            monitor=monitor,
            save_best_only=True,
        ),
        keras.callbacks.BackupAndRestore(
            os.path.join(args.output_dir, "backup")
        ),
    ]


def word_piece_tokenizer(
    texts, vocabulary_size, sequence_length, reserved_tokens=("[PAD]", "[UNK]")
):
    """A keras-hub WordPiece tokenizer with a vocabulary learned from `texts`.

    Returns dense, zero-padded id arrays of `sequence_length`; id 0 is
    `[PAD]`, which the models mask.
    """
    # keras-hub learns vocabularies from files (a list of strings is read as
    # a list of file names).
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as file:
        file.write("\n".join(texts))
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        [file.name],
        vocabulary_size=vocabulary_size,
        lowercase=True,
        reserved_tokens=list(reserved_tokens),
    )
    os.remove(file.name)
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=vocabulary,
        sequence_length=sequence_length,
        lowercase=True,
        oov_token="[UNK]",
    )


# Standard-library packages with many documented functions and classes: the
# labels of the docstring classification tasks.
DOCSTRING_PACKAGES = [
    "asyncio", "email", "http", "importlib", "logging", "multiprocessing",
    "tkinter", "xml",
]  # fmt: skip


def standard_library_docstrings(packages=None):
    """`(package, docstring)` for every documented function and class.

    Real text that ships with every Python install. `packages` limits it to
    those top-level modules and packages; tests are left out.
    """
    root = sysconfig.get_paths()["stdlib"]
    examples = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if name not in ("test", "tests", "site-packages", "__pycache__")
        )
        for name in sorted(files):
            path = os.path.join(directory, name)
            package = os.path.relpath(path, root).split(os.sep)[0]
            package = package.removesuffix(".py")
            if name.endswith(".py") and (
                packages is None or package in packages
            ):
                examples += [(package, doc) for doc in _docstrings(path)]
    return examples


def _docstrings(path):
    with open(path, encoding="utf-8") as file:
        try:
            tree = ast.parse(file.read())
        except SyntaxError:  # a few files are test data for Python 2 tools
            return
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in ast.walk(tree):
        if isinstance(node, definitions):
            doc = ast.get_docstring(node)
            if doc and len(doc.split()) >= 5:
                yield " ".join(doc.split())


def read_labelled_texts(path):
    """`(label, text)` from lines of the label, a tab, then the text."""
    with open(path, encoding="utf-8") as file:
        rows = [line.rstrip("\n").split("\t", 1) for line in file]
    return [(label, text) for label, text in rows if text]


def save_figure(figure, output_dir, name):
    """Writes `figure` to OUTPUT_DIR/NAME.png and says where."""
    path = os.path.join(output_dir, f"{name}.png")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    print(f"Figure: {path}")

"""A training run killed mid-epoch and started again with the examples'
callbacks ends with the weights of the run that was never interrupted.

The runs are subprocesses (this file run as a script): the killed one exits
abruptly from inside `fit`, as a crash or a preemption would.
"""

import argparse
import os
import sys

import keras
import numpy as np
import pytest

from tests.conftest import ROOT, run_module

EPOCHS = 3
KILLED_AT = (1, 2)  # (epoch, batch)
KILLED = 3  # the killed run's exit status


class Crash(keras.callbacks.Callback):
    """Exits the process at once after batch `KILLED_AT`."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == KILLED_AT:
            os._exit(KILLED)


def train(output_dir, crash):
    """Trains a small classifier as the examples do: shuffled, with dropout."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from common import training_callbacks

    from keras_tfm import models

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20, (96, 8))
    labels = (tokens[:, 0] > tokens[:, 1]).astype("int32")
    model = models.text_classifier(
        vocab_size=20, sequence_length=8, num_classes=2, num_layers=1,
        embed_dim=8, num_heads=2, ff_dim=16, dropout=0.1,
    )  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    callbacks = training_callbacks(
        argparse.Namespace(output_dir=output_dir, seed=0)
    )
    model.fit(
        tokens,
        labels,
        validation_split=0.25,
        epochs=EPOCHS,
        batch_size=16,
        verbose=0,
        callbacks=callbacks + ([Crash()] if crash else []),
    )
    np.savez(os.path.join(output_dir, "final.npz"), *model.get_weights())


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_weights(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = run_module("tests.test_resume", straight, "run")
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_module("tests.test_resume", resumed, "crash")
    assert result.returncode == KILLED, result.stderr[-3000:]
    assert not (resumed / "final.npz").exists()
    result = run_module("tests.test_resume", resumed, "run")
    assert result.returncode == 0, result.stderr[-3000:]

    expected = np.load(straight / "final.npz")
    got = np.load(resumed / "final.npz")
    for name in expected.files:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6)


if __name__ == "__main__":
    train(sys.argv[1], crash=sys.argv[2] == "crash")

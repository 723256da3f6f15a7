"""Training in several processes, each feeding its share of every batch.

Start it with the launcher, which gives each process the environment its
backend's multi-process API reads:

    KERAS_BACKEND=jax python examples/launch.py --processes 2 \\
        --cpu-devices 4 examples/parallel_train.py --distribute model
    KERAS_BACKEND=tensorflow python examples/parallel_train.py --cpu-devices 2
    KERAS_BACKEND=torch python examples/launch.py --processes 2 \\
        examples/parallel_train.py

- JAX: `keras.distribution.initialize()` joins the processes into one set of
  devices; `--distribute data` (`DataParallel`) or `model` (`ModelParallel`
  with keras_tfm's layout map); `model.fit` as usual.
- TensorFlow, in one process: `tf.distribute.MirroredStrategy` over every
  GPU, or over `--cpu-devices` logical CPU devices; `model.fit` inside its
  scope. (Keras 3.15's `fit` fails under `MultiWorkerMirroredStrategy`, in
  the symbolic build on the first batch, so there is no launcher path.)
- PyTorch: `torch.distributed` (gloo) and `DistributedDataParallel` around
  the Keras model (a `torch.nn.Module` on this backend), with a short
  PyTorch training loop.

Run without the launcher (and without `--cpu-devices`), it trains the same
model on one device on the whole batch: the reference that
`tests/test_parallel.py` compares with. Process 0 writes the weights before
and after training (`weights.npz`) and the model (`model.keras`) to
`--output-dir`; the model axis of `--distribute model` stays inside each
process, so that every process holds whole weights to save.
"""

import os
import sys
import tempfile

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import DISTRIBUTE_ARGUMENT, parse_arguments, use_distribution

from keras_tfm import models

GLOBAL_BATCH = 8
STEPS = 3
LEARNING_RATE = 0.1
CONFIG = {
    "vocab_size": 50,
    "sequence_length": 8,
    "num_classes": 3,
    "num_layers": 1,
    "embed_dim": 16,
    "num_heads": 4,
    "ff_dim": 32,
    "dropout": 0.0,  # random masks would differ between the runs
}


def data(process_id, num_processes):
    """This process's rows of every global batch, `STEPS` batches long."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, CONFIG["vocab_size"], (STEPS, GLOBAL_BATCH, 8))
    labels = rng.integers(0, CONFIG["num_classes"], (STEPS, GLOBAL_BATCH))
    share = GLOBAL_BATCH // num_processes
    rows = slice(process_id * share, (process_id + 1) * share)
    return tokens[:, rows].reshape(-1, 8), labels[:, rows].reshape(-1), share


def build(seed):
    keras.utils.set_random_seed(seed)
    return models.text_classifier(**CONFIG)


def fit(model, tokens, labels, batch_size):
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        tokens, labels, batch_size=batch_size, shuffle=False, verbose=0
    )
    return history.history["loss"][-1]


def train_jax(args):
    num_processes = int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", 1))
    if num_processes > 1:
        keras.distribution.initialize()  # reads KERAS_DISTRIBUTION_*
    use_distribution(args.distribute, CONFIG["num_heads"])
    if num_processes > 1:
        # Each process passes its own rows (`data`): nothing to shard.
        keras.distribution.distribution().auto_shard_dataset = False
    process_id = int(os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", 0))
    tokens, labels, share = data(process_id, num_processes)
    model = build(args.seed)
    initial = model.get_weights()
    return model, initial, fit(model, tokens, labels, share), process_id


def train_tensorflow(args):
    import tensorflow as tf

    devices = None  # MirroredStrategy's default: every GPU, else the CPU
    if args.cpu_devices > 1:
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices
        )
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    print(f"MirroredStrategy: {strategy.num_replicas_in_sync} replicas")
    tokens, labels, share = data(0, 1)
    with strategy.scope():
        model = build(args.seed)
        initial = model.get_weights()
        loss = fit(model, tokens, labels, share)
    return model, initial, loss, 0


def train_torch(args):
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    tokens, labels, share = data(rank, world_size)
    model = build(args.seed)
    initial = model.get_weights()
    module = model
    if world_size > 1:
        torch.distributed.init_process_group("gloo")
        module = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    for step in range(STEPS):
        rows = slice(step * share, (step + 1) * share)
        logits = module(torch.as_tensor(tokens[rows]))
        loss = torch.nn.functional.cross_entropy(
            logits, torch.as_tensor(labels[rows])
        )
        optimizer.zero_grad()
        loss.backward()  # DDP averages the gradients over the processes
        optimizer.step()
    if world_size > 1:
        # Drop DDP first: freed after the process group, its reducer would
        # be the group's last owner and join gloo's threads while holding
        # the GIL, which those threads wait for (a deadlock, torch 2.13).
        del module
        torch.distributed.destroy_process_group()
    return model, initial, float(loss.detach()), rank


def main():
    args = parse_arguments(
        "Training in several processes",
        epochs=1,
        distribute=DISTRIBUTE_ARGUMENT,
        cpu_devices={
            "type": int,
            "default": 1,
            "help": "TensorFlow: MirroredStrategy over this many logical CPU "
            "devices",
        },
    )
    train = {
        "jax": train_jax,
        "tensorflow": train_tensorflow,
        "torch": train_torch,
    }[keras.backend.backend()]
    model, initial, loss, process_id = train(args)
    print(f"process {process_id}: last step's loss {loss:.6f}")
    # Every process saves, as every process runs every step (saving may
    # create variables, which JAX and TensorFlow agree on across processes);
    # the others write to a directory that is thrown away.
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.output_dir if process_id == 0 else scratch
        os.makedirs(directory, exist_ok=True)
        np.savez(
            os.path.join(directory, "weights.npz"),
            *initial,
            *model.get_weights(),
            loss=loss,
        )
        model.save(os.path.join(directory, "model.keras"))
    if process_id == 0:
        print(f"saved to {args.output_dir}")


if __name__ == "__main__":
    main()

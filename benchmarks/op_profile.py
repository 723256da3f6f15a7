"""Where a training step spends its time, op type by op type.

Builds one cell of `benchmarks.train_step`'s grid (BERT-small, GELU, post-norm,
dropout 0.1, sequence 128 unless told otherwise) from keras-hub and from
keras_tfm, profiles a few training steps of each with the backend's
profiler (TensorFlow's; JAX's, counting each XLA instruction, fusions by
name; or `torch.profiler` counting each aten op's own time), and prints
the op time per step of the most expensive op types side by side. Op times
add up over the threads that run ops in parallel, so their total may exceed
the step's wall time.

    KERAS_BACKEND=tensorflow python -m benchmarks.op_profile
    KERAS_BACKEND=jax python -m benchmarks.op_profile --dropout 0
    KERAS_BACKEND=torch python -m benchmarks.op_profile --activation relu \\
        --dropout 0
"""

import argparse
import collections
import glob
import tempfile

import keras

from benchmarks.train_step import (
    MODEL,
    add_model_arguments,
    build,
    random_batch,
)

# Profiler events on the op threads that are not ops (or that contain them).
NOT_OPS = {"Process", "Record", "StartRegion", "StopRegion"}
# XLA instructions whose events span the ops they run.
CONTROL_FLOW = {"while", "conditional", "call"}


def warm_up(model, x, y):
    for _ in range(3):  # tracing and warm-up stay out of the profile
        model.train_on_batch(x, y)


def torch_op_milliseconds(model, x, y, steps):
    """`{aten op: milliseconds per step}`, each op's own time."""
    import torch

    warm_up(model, x, y)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(steps):
            model.train_on_batch(x, y)
    totals = collections.Counter()
    for event in profile.key_averages():
        if event.key.startswith("aten::"):
            totals[event.key] += event.self_cpu_time_total / 1000 / steps
    return totals


def tensorflow_op_milliseconds(model, x, y, steps):
    """`{op type: milliseconds per step}` of `model.train_on_batch`."""
    import tensorflow as tf

    def profile(directory):
        tf.profiler.experimental.start(directory)
        for _ in range(steps):
            model.train_on_batch(x, y)
        tf.profiler.experimental.stop()

    # The threads that run graph ops; events are named "op name:OpType".
    def op_type(name):
        op_type = name.rpartition(":")[2]
        return op_type if ":" in name and op_type not in NOT_OPS else None

    warm_up(model, x, y)
    return xplane_op_milliseconds(profile, "tf_Compute", op_type, steps)


def jax_op_milliseconds(model, x, y, steps):
    """`{XLA op: milliseconds per step}`, fusions grouped by their name."""
    import jax

    def profile(directory):
        with jax.profiler.trace(directory):
            for _ in range(steps):
                model.train_on_batch(x, y)

    # XLA's CPU threads name events after the HLO instruction that ran
    # ("ynn_fusion.46", "copy.103"); "end: ..." marks and "Class::method"
    # events are the runtime's, and control flow contains other ops' events.
    def op_type(name):
        base, _, suffix = name.rpartition(".")
        base = base if suffix.isdigit() else name
        if name.startswith("end: ") or "::" in name or base in CONTROL_FLOW:
            return None
        return base

    warm_up(model, x, y)
    return xplane_op_milliseconds(profile, "tf_XLA", op_type, steps)


def xplane_op_milliseconds(profile, thread_prefix, op_type, steps):
    """Runs `profile(directory)` and adds up the XSpace trace it writes:
    the events on threads named `thread_prefix...`, grouped by
    `op_type(event name)` (None skips an event), in ms per step."""
    # TensorFlow ships the XSpace protobuf that both profilers write.
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as directory:
        profile(directory)
        (path,) = glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)
        with open(path, "rb") as file:
            space = xplane_pb2.XSpace.FromString(file.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith(thread_prefix):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                kind = op_type(name)
                if kind is not None:
                    totals[kind] += event.duration_ps / 1e9 / steps
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activation", default="gelu")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--norm", default="post", choices=["post", "pre"])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--precision", default="float32")
    add_model_arguments(parser)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    op_milliseconds = {
        "tensorflow": tensorflow_op_milliseconds,
        "jax": jax_op_milliseconds,
        "torch": torch_op_milliseconds,
    }[keras.backend.backend()]
    cell = {
        **{name: getattr(args, name) for name in MODEL},
        **{"activation": args.activation, "dropout": args.dropout},
        **{"norm": args.norm, "seq": args.seq, "jit_compile": "auto"},
    }
    x, y = random_batch(cell)
    keras.config.set_dtype_policy(args.precision)
    profiles = {
        library: op_milliseconds(build(library, cell), x, y, args.steps)
        for library in ("keras-hub", "keras_tfm")
    }
    hub, tfm = profiles["keras-hub"], profiles["keras_tfm"]
    print(f"\n{cell}, {args.precision} training step, op ms per step")
    print("| op type | keras-hub ms | keras_tfm ms |")
    print("|---|---|---|")
    for op_type, _ in (hub + tfm).most_common(args.rows):
        print(f"| {op_type} | {hub[op_type]:.1f} | {tfm[op_type]:.1f} |")
    print(f"| all ops | {hub.total():.1f} | {tfm.total():.1f} |")


if __name__ == "__main__":
    main()

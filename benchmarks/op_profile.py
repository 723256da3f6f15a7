"""Where a TensorFlow training step spends its time, op type by op type.

Builds the bert_small classifier of `benchmarks.train_step` from keras-hub and
from keras_tfm, profiles a few training steps of each with TensorFlow's
profiler, and prints the op time per step of the most expensive op types
side by side. Op times add up over the threads that run ops in parallel, so
their total exceeds the step's wall time.

    KERAS_BACKEND=tensorflow python -m benchmarks.op_profile
"""

import argparse
import collections
import glob
import tempfile

import keras

from benchmarks.train_step import CONFIGS, build, random_batch

# Profiler events on the op threads that are not ops (or that contain them).
NOT_OPS = {"Process", "Record", "StartRegion", "StopRegion"}


def op_milliseconds(model, x, y, steps):
    """`{op type: milliseconds per step}` of `model.train_on_batch`."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    for _ in range(3):  # tracing and warm-up stay out of the profile
        model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as directory:
        tf.profiler.experimental.start(directory)
        for _ in range(steps):
            model.train_on_batch(x, y)
        tf.profiler.experimental.stop()
        (path,) = glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)
        with open(path, "rb") as file:
            space = xplane_pb2.XSpace.FromString(file.read())
    totals = collections.Counter()
    for plane in space.planes:
        # The threads that run graph ops; events are named "op name:OpType".
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                op_type = name.rpartition(":")[2]
                if ":" in name and op_type not in NOT_OPS:
                    totals[op_type] += event.duration_ps / 1e9 / steps
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="bert_small")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("Run with KERAS_BACKEND=tensorflow.")
    config = CONFIGS[args.config]
    x, y = random_batch(config)
    profiles = {
        library: op_milliseconds(
            build(library, config, "auto"), x, y, args.steps
        )
        for library in ("keras-hub", "keras_tfm")
    }
    hub, tfm = profiles["keras-hub"], profiles["keras_tfm"]
    print(f"\n{args.config}, float32 training step, op ms per step")
    print("| op type | keras-hub ms | keras_tfm ms |")
    print("|---|---|---|")
    for op_type, _ in (hub + tfm).most_common(args.rows):
        print(f"| {op_type} | {hub[op_type]:.1f} | {tfm[op_type]:.1f} |")
    print(f"| all ops | {hub.total():.1f} | {tfm.total():.1f} |")


if __name__ == "__main__":
    main()

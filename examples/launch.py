"""Starts a training script in several processes on this machine.

    KERAS_BACKEND=jax python examples/launch.py --processes 2 \\
        --cpu-devices 4 examples/parallel_train.py --distribute data

Each process gets the environment its backend's multi-process API reads,
with loopback addresses and free ports:

- JAX: `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `..._NUM_PROCESSES` and
  `..._PROCESS_ID`, read by `keras.distribution.initialize()`; with
  `--cpu-devices N`, N virtual CPU devices per process and JAX's gloo
  collectives between them.
- PyTorch: `MASTER_ADDR`, `MASTER_PORT`, `RANK`, `LOCAL_RANK` and
  `WORLD_SIZE`, read by `torch.distributed.init_process_group` (as torchrun
  sets them).

If a process fails, the launcher stops the others at once and exits with
its code, rather than leaving them waiting for a peer that is gone; after
`--timeout` seconds it stops them all. Copy it, or run it as is.
"""

import argparse
import os
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"
TIMEOUT_EXIT_CODE = 124


def free_ports(count):
    """Ports nothing listens on now (the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind((HOST, 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def environments(backend, processes, cpu_devices):
    """One environment (the additions to os.environ) per process."""
    if backend == "jax":
        (port,) = free_ports(1)
        shared = {
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"{HOST}:{port}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": str(processes),
        }
        if cpu_devices:
            shared["JAX_PLATFORMS"] = "cpu"
            shared["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] = "gloo"
            # After the user's own XLA flags, which it keeps.
            shared["XLA_FLAGS"] = (
                os.environ.get("XLA_FLAGS", "")
                + f" --xla_force_host_platform_device_count={cpu_devices}"
            )
        return [
            {**shared, "KERAS_DISTRIBUTION_PROCESS_ID": str(rank)}
            for rank in range(processes)
        ]
    if backend == "torch":
        (port,) = free_ports(1)
        return [
            {
                "MASTER_ADDR": HOST,
                "MASTER_PORT": str(port),
                "WORLD_SIZE": str(processes),
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
            }
            for rank in range(processes)
        ]
    if backend == "tensorflow":
        raise SystemExit(
            "launch: on TensorFlow, train in one process with "
            "tf.distribute.MirroredStrategy (examples/parallel_train.py "
            "--cpu-devices N): Keras 3.15's fit fails under "
            "MultiWorkerMirroredStrategy."
        )
    raise SystemExit(
        f"launch: KERAS_BACKEND must be 'jax' or 'torch'. Received: {backend!r}"
    )


def stop(workers):
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + 10
    for worker in workers:
        try:
            worker.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def supervise(workers, timeout):
    """Waits for every worker, or for the first failure or the timeout;
    returns the launcher's exit code. The caller stops what still runs."""
    deadline = time.monotonic() + timeout
    while True:
        codes = [worker.poll() for worker in workers]
        failed = [
            (rank, code)
            for rank, code in enumerate(codes)
            if code not in (None, 0)
        ]
        if failed:
            rank, code = failed[0]
            print(
                f"launch: process {rank} exited with code {code}; "
                "stopping the others",
                file=sys.stderr,
                flush=True,
            )
            return code if code > 0 else 1
        if all(code == 0 for code in codes):
            return 0
        if time.monotonic() > deadline:
            print(
                f"launch: still running after --timeout={timeout} s; "
                "stopping every process",
                file=sys.stderr,
                flush=True,
            )
            return TIMEOUT_EXIT_CODE
        time.sleep(0.2)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        usage="%(prog)s [options] SCRIPT [SCRIPT ARGUMENTS]",
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=0,
        help="JAX: virtual CPU devices per process (0: the real devices)",
    )
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("script")
    parser.add_argument("script_arguments", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.processes < 1:
        parser.error(
            f"--processes must be at least 1. Received: {args.processes}"
        )
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    workers = []
    try:
        for rank, extra in enumerate(
            environments(backend, args.processes, args.cpu_devices)
        ):
            command = [sys.executable, args.script, *args.script_arguments]
            workers.append(
                subprocess.Popen(command, env={**os.environ, **extra})
            )
            print(
                f"launch: process {rank} is pid {workers[-1].pid}", flush=True
            )
        code = supervise(workers, args.timeout)
    finally:
        stop(workers)
    sys.exit(code)


if __name__ == "__main__":
    main()

"""A reproducible busy machine for the benchmarks' `--load N`: N single-threaded processes, each
multiplying small float32 matrices with one BLAS thread for as long as the measurement runs.

A laptop is rarely idle (a browser, a build, a second training run); figures measured only on an
idle machine hide how a thread pool sized to every core collapses when one core is taken. Both
engines of a comparison are measured inside the same `busy_processes` block. From a shell, for
any other command:

    python 01-architecture/busy_load.py --processes 2 &   # two busy processes until it is stopped
    python 05-training/train.py --max_steps 100 --checkpoint_dir /tmp/loaded; kill %1
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

BUSY_LOOP = ("import numpy as np\n"
             "a = np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32)\n"
             "while True:\n"
             "    a = np.tanh(a @ a)\n")


@contextlib.contextmanager
def busy_processes(count: int):
    """Run `count` busy processes for the duration of the block (none for 0); they end with it."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP], env=env, stdin=subprocess.DEVNULL)
                 for _ in range(count)]
    try:
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


def main(argv=None) -> int:
    from mlot.architecture.cli import documented_parser, non_negative_int
    parser = documented_parser(__doc__)
    parser.add_argument("--processes", type=non_negative_int, required=True,
                        help="busy processes to run until this command is stopped")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` ends the busy processes with us
    with busy_processes(args.processes):
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())

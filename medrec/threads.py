"""Torch's thread pool on a machine that other processes share.

OpenMP worker threads spin-wait at every parallel region's barrier (GNU OpenMP spins for a
while before sleeping). When another process holds one of the cores, the thread on that core
is descheduled while its partners spin, and each step waits for a scheduler time slice:
measured here, a PneumoniaMNIST epoch took 806 s with 2 threads against 73 s with 1
(benchmarks/threads.py measures it side by side). Passive waiting removes the collapse and
costs little on an idle machine, so the medrec command lines set it before torch loads.
"""

from __future__ import annotations

import os

# Read by OpenMP once, when torch loads it: set before the first `import torch`.
OPENMP_ENV = {
    "OMP_WAIT_POLICY": "PASSIVE",  # GNU OpenMP (PyPI torch): sleep at barriers instead of spinning
    "KMP_BLOCKTIME": "0",  # Intel OpenMP (conda torch builds): the same, in its own words
}


def prepare_openmp_env() -> None:
    """Set the OpenMP wait policy for this process unless the user set it already."""
    for key, value in OPENMP_ENV.items():
        os.environ.setdefault(key, value)

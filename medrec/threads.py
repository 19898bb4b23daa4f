"""Torch's thread pool on a machine that other processes share.

OpenMP worker threads spin-wait at every parallel region's barrier (GNU OpenMP spins for a
while before sleeping). When another process holds one of the cores, the thread on that core
is descheduled while its partners spin, and each step waits for a scheduler time slice: a
PneumoniaMNIST epoch took 806 s with 2 threads against 73 s with 1 on this project's 2-core
machine. Passive waiting (threads sleep at barriers) removes the spinning; benchmarks/threads.py
measures the settings side by side, idle and beside a competing process (README, "Threads").

`train.threads: auto` (the default) is one thread per CPU this process may run on (shared out
among DDP ranks on one machine; OMP_NUM_THREADS, when set, wins), with the passive wait policy
that every medrec command line sets before torch loads.
"""

from __future__ import annotations

import os

# Read by OpenMP once, when torch loads it: set before the first `import torch`.
OPENMP_ENV = {
    "OMP_WAIT_POLICY": "PASSIVE",  # GNU OpenMP (PyPI torch): sleep at barriers instead of spinning
    "KMP_BLOCKTIME": "0",  # Intel OpenMP (conda torch builds): the same, in its own words
}
# Set to 1 to leave OpenMP at its own defaults (benchmarks/threads.py compares the two).
KEEP_DEFAULTS_ENV = "MEDREC_OPENMP_DEFAULTS"


def prepare_openmp_env() -> None:
    """Set the OpenMP wait policy for this process unless the user set it (or opted out)."""
    if os.environ.get(KEEP_DEFAULTS_ENV) == "1":
        return
    for key, value in OPENMP_ENV.items():
        os.environ.setdefault(key, value)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what a container or taskset allows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_threads(setting: int | str | None) -> int | None:
    """The torch intra-op thread count of a `train.threads` value; None leaves torch's default."""
    if setting == "auto":
        if os.environ.get("OMP_NUM_THREADS"):
            return None  # the user or the launcher chose (torchrun sets 1 per rank): torch already uses it
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # DDP ranks sharing this machine's CPUs
        return max(1, usable_cpus() // max(ranks_here, 1))
    return None if setting is None else int(setting)


def apply_threads(setting: int | str | None) -> int:
    """Set torch's intra-op threads from `train.threads`; return the count in effect."""
    import torch

    threads = resolve_threads(setting)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()

"""medrec.threads: what `train.threads` resolves to, and the OpenMP environment set before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from medrec import threads


@pytest.fixture
def clean_env(monkeypatch):
    for key in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", threads.KEEP_DEFAULTS_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)
    return monkeypatch


def test_auto_is_one_thread_per_usable_cpu_shared_by_local_ranks(clean_env):
    assert threads.resolve_threads("auto") == 8
    clean_env.setenv("LOCAL_WORLD_SIZE", "3")
    assert threads.resolve_threads("auto") == 2
    clean_env.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads.resolve_threads("auto") == 1


def test_auto_leaves_an_explicit_omp_num_threads(clean_env):
    clean_env.setenv("OMP_NUM_THREADS", "1")  # what torchrun sets per rank
    assert threads.resolve_threads("auto") is None


def test_numbers_pin_and_null_leaves_torch_default(clean_env):
    assert threads.resolve_threads(3) == 3 and threads.resolve_threads(None) is None


def test_usable_cpus_is_the_affinity_mask():
    assert threads.usable_cpus() == len(os.sched_getaffinity(0))


def test_openmp_env_is_set_unless_chosen_or_opted_out(clean_env):
    threads.prepare_openmp_env()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["KMP_BLOCKTIME"] == "0"
    clean_env.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.prepare_openmp_env()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    clean_env.delenv("OMP_WAIT_POLICY")
    clean_env.delenv("KMP_BLOCKTIME")
    clean_env.setenv(threads.KEEP_DEFAULTS_ENV, "1")
    threads.prepare_openmp_env()
    assert "OMP_WAIT_POLICY" not in os.environ and "KMP_BLOCKTIME" not in os.environ


def test_apply_threads_sets_torch_in_a_fresh_process():
    """In a child, so this test process keeps its thread count: auto -> usable CPUs, a number pins it."""
    code = ("import os, torch; from medrec.threads import apply_threads, usable_cpus; "
            "print(apply_threads('auto') == usable_cpus(), apply_threads(1) == 1 == torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.split() == ["True", "True"], res.stderr[-2000:]

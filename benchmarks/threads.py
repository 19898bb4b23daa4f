"""Torch thread settings on a shared CPU: training images/s idle and beside one CPU-bound process.

Each setting trains fold 0 of a config for a few epochs in a fresh process (`python -m
medrec.finetune`, so OpenMP reads its environment as a user's run would) and reports the
median `images_per_s` of the cached epochs (history.csv: the training pass alone). Every
setting runs twice in a row: on the machine as it is ("idle"), then with one competing
CPU-bound process that this script starts before the run and stops by its PID after it.
Settings are interleaved, so slow drift in the machine's load hits them alike; the load
average is recorded before every run.

Settings (a name, the train.threads value, and whether OpenMP is left at its defaults):
    1           train.threads=1, OpenMP defaults
    2           train.threads=2, OpenMP defaults
    default     torch's default thread count (one per core), OpenMP defaults: medrec before issue 18
    auto        medrec's default now (train.threads: auto, passive OpenMP wait; medrec.threads)
    ...and any THREADS or THREADS+passive given with --settings (e.g. 2+passive).

    python benchmarks/threads.py                                   # the README table
    python benchmarks/threads.py --epochs 2 --image-size 64 --settings 1,auto   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = "while True:\n    pass\n"  # one core's worth of pure-Python work, no threads of its own


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def setting_env(name: str) -> tuple[list[str], dict[str, str]]:
    """(--set overrides, environment changes) of a setting name."""
    threads, _, policy = name.partition("+")
    keep_defaults = {"MEDREC_OPENMP_DEFAULTS": "1"}  # medrec.threads leaves OpenMP's own defaults
    if threads == "auto":
        return ["--set", "train.threads=auto"], {}
    if policy not in ("", "passive"):
        raise SystemExit(f"setting {name!r}: the policy after + must be 'passive'")
    env = {"OMP_WAIT_POLICY": "PASSIVE", **keep_defaults} if policy else keep_defaults
    if threads == "default":
        return ["--set", "train.threads=null"], env
    return ["--set", f"train.threads={int(threads)}"], env


def train_once(args, name: str, out: Path) -> dict:
    """One fold-0 training run of `setting`; the cached epochs' median images/s."""
    overrides, env_changes = setting_env(name)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME",
                                                            "MEDREC_OPENMP_DEFAULTS")}
    env.update(env_changes)
    cmd = [sys.executable, "-m", "medrec.finetune", "--config", str(args.config), "--fold", "0", "--quiet",
           "--out", str(out), "--set", f"train.epochs={args.epochs}", "--set", f"data.image_size={args.image_size}",
           "--set", "eval.bootstrap=10", *overrides]
    start = time.monotonic()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{name}: finetune failed ({res.returncode}):\n{res.stderr[-3000:]}")
    rows = (out / "folds" / "fold_0" / "history.csv").read_text().splitlines()[1:]
    speeds = [float(r.split(",")[5]) for r in rows]
    cached = speeds[1:] or speeds  # the first epoch also fills the cache
    return {"images_per_s": statistics.median(cached), "epochs": speeds, "wall_s": time.monotonic() - start}


def measure(args, name: str, tmp: Path, loaded: bool) -> dict:
    before = load_avg()
    rival = subprocess.Popen([sys.executable, "-c", BUSY]) if loaded else None
    try:
        result = train_once(args, name, tmp / f"{name}-{'loaded' if loaded else 'idle'}-{time.time_ns()}")
    finally:
        if rival is not None:
            os.kill(rival.pid, signal.SIGTERM)
            rival.wait()
    return {**result, "load_before": before, "competing_pid": rival.pid if rival else None}


def table(results: dict[str, dict]) -> str:
    best_idle = max(r["idle"]["images_per_s"] for r in results.values())
    lines = ["| setting | idle images/s | vs best idle | with 1 competing process | kept under load "
             "| load avg before (idle; loaded) |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        idle, busy = r["idle"]["images_per_s"], r["loaded"]["images_per_s"]
        lines.append(f"| {name} | {idle:.1f} | {idle / best_idle:.2f} | {busy:.1f} | {busy / idle:.2f} | "
                     f"{r['idle']['load_before']}; {r['loaded']['load_before']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "chest_xray.yaml")
    p.add_argument("--settings", default="1,2,default,auto", help="comma-separated (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; the first (cache fill) is not counted")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch fills the cache)")
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    print(f"{os.cpu_count()} CPUs, load average {load_avg()}; {args.config.name}, fold 0, {args.epochs} epochs, "
          f"{args.image_size} px", flush=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="medrec_threads_") as tmp:
        for name in names:
            results[name] = {"idle": measure(args, name, Path(tmp), loaded=False),
                             "loaded": measure(args, name, Path(tmp), loaded=True)}
            print(f"{name}: idle {results[name]['idle']['images_per_s']:.1f}, "
                  f"loaded {results[name]['loaded']['images_per_s']:.1f} images/s", flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

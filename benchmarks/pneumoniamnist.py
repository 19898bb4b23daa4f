"""Accuracy on real data: train configs/pneumoniamnist.yaml on PneumoniaMNIST and print the result.

Runs `python -m medrec.finetune` (the real command line, in a child process) on the official
train split, validated on the official val split, then reads the run folder and prints
validation AUROC, accuracy, sensitivity and specificity at the stored threshold, the threshold
and the wall time. The AUROC is recomputed here with scikit-learn from oof_predictions.csv as an
independent check of medrec's metrics.json.

The threshold is chosen on the same validation images it is then evaluated on, so the
threshold-dependent figures (accuracy, sensitivity, specificity) are optimistic; AUROC is not
affected. Evaluate the official test split separately, e.g.
`python -m medrec.predict --run RUN --input NPZ --split test`.

    python benchmarks/pneumoniamnist.py --data ../shared/datasets/pneumoniamnist/pneumoniamnist_trainval.npz
    python benchmarks/pneumoniamnist.py --data NPZ --out /work/pneumo_run --set train.epochs=2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("run.json", "metrics.json", "report.md", "config.yaml", "folds/fold_0/history.csv")


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def val_metrics(run: Path) -> dict:
    """AUROC and threshold metrics on the validation split from the run's own predictions."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import accuracy_score, roc_auc_score

    info = json.loads((run / "run.json").read_text())
    oof = pd.read_csv(run / "oof_predictions.csv")
    y, s, t = oof["label"].to_numpy().astype(int), oof["score"].to_numpy(), float(info["threshold"])
    pred = (s >= t).astype(int)
    return {"n_val": int(len(y)), "auroc": float(roc_auc_score(y, s)), "accuracy": float(accuracy_score(y, pred)),
            "sensitivity": float(np.mean(pred[y == 1])), "specificity": float(np.mean(1 - pred[y == 0])),
            "threshold": t, "operating_point": info.get("operating_point"),
            "wall_time_s_medrec": info.get("wall_time_s"), "status": info.get("status")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="pneumoniamnist_trainval.npz (MedMNIST npz layout)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="finish an interrupted run (medrec.finetune --resume), then report it")
    p.add_argument("--config", type=Path, default=ROOT / "configs/pneumoniamnist.yaml")
    p.add_argument("--out", type=Path, help="run folder (default: /tmp/pneumoniamnist-<timestamp>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/pneumoniamnist",
                   help="where the small outputs (run.json, metrics.json, report.md, history) are copied")
    p.add_argument("--no-copy", action="store_true", help="do not copy the outputs into --results")
    args = p.parse_args(argv)
    if args.resume:
        out = args.resume
        cmd = [sys.executable, "-m", "medrec.finetune", "--resume", str(out), "--quiet"]
    elif args.data is None or not args.data.is_file():
        sys.exit(f"--data {args.data}: no such file; it is the MedMNIST npz, e.g. "
                 "../shared/datasets/pneumoniamnist/pneumoniamnist_trainval.npz")
    else:
        out = args.out or Path("/tmp") / f"pneumoniamnist-{datetime.now():%Y%m%d-%H%M%S}"
        cmd = [sys.executable, "-m", "medrec.finetune", "--config", str(args.config), "--out", str(out), "--quiet",
               "--set", f"data.manifest={args.data.resolve()}"]
        for s in args.set:
            cmd += ["--set", s]
    before = load_avg()
    print(f"load average before: {before}\n$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = load_avg()
    if rc != 0:
        print(f"medrec.finetune failed (exit {rc}) after {wall:.0f} s; see {out / 'train.log'}", file=sys.stderr)
        return rc
    m = val_metrics(out) | {"wall_time_s": wall, "resumed": bool(args.resume), "load_before": before, "load_after": after,
                            "run_dir": str(out.resolve()), "overrides": args.set}
    m["auroc_medrec_metrics_json"] = json.loads((out / "metrics.json").read_text())["metrics"]["auroc"]["value"]
    print(f"\nPneumoniaMNIST, validation split ({m['n_val']} images; image-level, threshold chosen on it)")
    print(f"  AUROC        {m['auroc']:.4f}   (sklearn on oof_predictions.csv; metrics.json: "
          f"{m['auroc_medrec_metrics_json']})")
    print(f"  accuracy     {m['accuracy']:.4f}   at threshold {m['threshold']:.4f} ({m['operating_point']})")
    print(f"  sensitivity  {m['sensitivity']:.4f}")
    print(f"  specificity  {m['specificity']:.4f}")
    print(f"  wall time    {wall:.0f} s  (medrec's own: {m['wall_time_s_medrec']:.0f} s)")
    print(f"  load average before {before}, after {after}")
    print(f"  run folder   {out}")
    if not args.no_copy:
        args.results.mkdir(parents=True, exist_ok=True)
        for name in COPIED:
            if (out / name).exists():
                shutil.copy(out / name, args.results / Path(name).name)
        (args.results / "summary.json").write_text(json.dumps(m, indent=2))
        print(f"  copied {', '.join(Path(n).name for n in COPIED)} and summary.json to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy on real data: PneumoniaMNIST recipe v4 (configs/pneumoniamnist.yaml), K-fold CV over train+val.

Runs `python -m medrec.finetune` (the real command line, in a child process) on all 5,232 labelled
images of the npz (official train + val, image-level folds: the images carry no patient ids),
then reads the run folder and prints the pooled out-of-fold (OOF) AUROC and accuracy with
medrec's bootstrap CIs, sensitivity and specificity at the stored threshold (chosen on all OOF
predictions, Youden), and the wall time. The AUROC is recomputed here with scikit-learn from
oof_predictions.csv as an independent check of medrec's metrics.json.

The threshold is chosen on the same OOF predictions it is evaluated on, so accuracy, sensitivity
and specificity here are optimistic (less so than with 524 validation images); AUROC is not.
The official test split (624 images) is not in ../shared: evaluate it separately with the K fold
models as one ensemble, the documented way:

    python -m medrec.predict --run RUN --input pneumoniamnist.npz --split test --out RUN/test/preds.csv

(`--test-npz NPZ` runs that here and scores it.) The recipe trains without flips (a mirrored chest
film shows dextrocardia), so no flip test-time augmentation is used; `--tta flip` is there to try.

    python benchmarks/pneumoniamnist.py --data ../shared/datasets/pneumoniamnist/pneumoniamnist_trainval.npz
    python benchmarks/pneumoniamnist.py --data NPZ --out /tmp/pm --set cv.folds=2 --set train.epochs=1   # smoke
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
COPIED = ("run.json", "metrics.json", "report.md", "config.yaml")
METRICS = ("auroc", "accuracy", "sensitivity", "specificity")


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def oof_metrics(run: Path) -> dict:
    """Pooled OOF metrics: medrec's values and CIs from metrics.json, AUROC again with sklearn."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    info = json.loads((run / "run.json").read_text())
    medrec = json.loads((run / "metrics.json").read_text())["metrics"]
    oof = pd.read_csv(run / "oof_predictions.csv")
    out = {"n_oof": int(len(oof)), "n_folds": int(oof["fold"].nunique()), "threshold": float(info["threshold"]),
           "operating_point": info.get("operating_point"), "status": info.get("status"),
           "wall_time_s_medrec": info.get("wall_time_s"),
           "auroc_sklearn": float(roc_auc_score(oof["label"].astype(int), oof["score"]))}
    for name in METRICS:
        m = medrec.get(name) or {}
        out[name] = {k: m.get(k) for k in ("value", "ci_low", "ci_high")}
    return out


def fold_seconds(run: Path) -> list[float]:
    import pandas as pd

    return [float(pd.read_csv(h)["seconds"].sum()) for h in sorted((run / "folds").glob("*/history.csv"))]


def test_metrics(run: Path, npz: Path, tta: str) -> dict:
    """The fold ensemble on the npz's test split through medrec.predict, scored with sklearn."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import accuracy_score, roc_auc_score

    csv = run / f"test_{tta}" / "preds.csv"
    cmd = [sys.executable, "-m", "medrec.predict", "--run", str(run), "--input", str(npz), "--split", "test",
           "--tta", tta, "--out", str(csv)]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    preds = pd.read_csv(csv)
    y, s, t = preds["label"].to_numpy().astype(int), preds["score"].to_numpy(), float(
        json.loads((run / "run.json").read_text())["threshold"])
    pred = (s >= t).astype(int)
    return {"n_test": int(len(y)), "tta": tta, "auroc": float(roc_auc_score(y, s)),
            "accuracy": float(accuracy_score(y, pred)), "sensitivity": float(np.mean(pred[y == 1])),
            "specificity": float(np.mean(1 - pred[y == 0])), "seconds": time.perf_counter() - t0}


def _fmt(m: dict) -> str:
    ci = f"  (95% CI {m['ci_low']:.4f}-{m['ci_high']:.4f})" if m.get("ci_low") is not None else ""
    return f"{m['value']:.4f}{ci}"


def print_summary(m: dict) -> None:
    print(f"\nPneumoniaMNIST v4: pooled out-of-fold predictions of {m['n_folds']}-fold CV over train+val "
          f"({m['n_oof']} images, image-level folds)")
    for name in METRICS:
        print(f"  {name:<12} {_fmt(m[name])}")
    print(f"  AUROC (sklearn on oof_predictions.csv) {m['auroc_sklearn']:.4f}")
    print(f"  threshold    {m['threshold']:.4f} ({m['operating_point']}, chosen on all OOF predictions)")
    print(f"  wall time    {m['wall_time_s']:.0f} s (medrec's own: {m['wall_time_s_medrec']:.0f} s; "
          f"fold training {', '.join(f'{s:.0f}' for s in m['fold_seconds'])} s)")
    print(f"  load average before {m['load_before']}, after {m['load_after']}")
    if m.get("test"):
        t = m["test"]
        print(f"  test split ({t['n_test']} images, {m['n_folds']}-model ensemble, tta {t['tta']}): "
              f"AUROC {t['auroc']:.4f}, accuracy {t['accuracy']:.4f}, sensitivity {t['sensitivity']:.4f}, "
              f"specificity {t['specificity']:.4f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="pneumoniamnist_trainval.npz (MedMNIST npz layout)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="finish an interrupted run, then report it")
    p.add_argument("--config", type=Path, default=ROOT / "configs/pneumoniamnist.yaml")
    p.add_argument("--out", type=Path, help="run folder (default: /tmp/pneumoniamnist-<timestamp>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--test-npz", type=Path, help="an npz with a test split: evaluate the fold ensemble on it")
    p.add_argument("--tta", choices=("none", "flip"), default="none", help="test-time augmentation for --test-npz")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/pneumoniamnist_v4",
                   help="where the small outputs (run.json, metrics.json, report.md, config) are copied")
    p.add_argument("--no-copy", action="store_true", help="do not copy the outputs into --results")
    return p.parse_args(argv)


def command(args: argparse.Namespace) -> tuple[list[str], Path]:
    if args.resume:
        return [sys.executable, "-m", "medrec.finetune", "--resume", str(args.resume), "--quiet"], args.resume
    if args.data is None or not args.data.is_file():
        sys.exit(f"--data {args.data}: no such file; it is the MedMNIST npz, e.g. "
                 "../shared/datasets/pneumoniamnist/pneumoniamnist_trainval.npz")
    out = args.out or Path("/tmp") / f"pneumoniamnist-{datetime.now():%Y%m%d-%H%M%S}"
    cmd = [sys.executable, "-m", "medrec.finetune", "--config", str(args.config), "--out", str(out), "--quiet",
           "--set", f"data.manifest={args.data.resolve()}"]
    for s in args.set:
        cmd += ["--set", s]
    return cmd, out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cmd, out = command(args)
    before = load_avg()
    print(f"load average before: {before}\n$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT)
    wall = time.perf_counter() - t0
    if rc != 0:
        print(f"medrec.finetune failed (exit {rc}) after {wall:.0f} s; see {out / 'train.log'}", file=sys.stderr)
        return rc
    m = oof_metrics(out) | {"wall_time_s": wall, "fold_seconds": fold_seconds(out), "resumed": bool(args.resume),
                            "load_before": before, "load_after": load_avg(), "run_dir": str(out.resolve()),
                            "overrides": args.set}
    if args.test_npz:
        m["test"] = test_metrics(out, args.test_npz, args.tta)
    print_summary(m)
    if not args.no_copy:
        args.results.mkdir(parents=True, exist_ok=True)
        for name in COPIED:
            if (out / name).exists():
                shutil.copy(out / name, args.results / name)
        (args.results / "summary.json").write_text(json.dumps(m, indent=2) + "\n")
        print(f"  copied {', '.join(COPIED)} and summary.json to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What tuning buys: a fixed time budget of `medrec tune` against the hand-written PneumoniaMNIST recipe.

Steps, each the real command line in a child process, each timed:
  1. recipe   `medrec finetune --config configs/pneumoniamnist.yaml` (K-fold CV over train+val),
              or an existing run of it (--recipe-run RUN, e.g. the one benchmarks/pneumoniamnist.py made)
  2. tune     `medrec tune` on the same config and data with --timeout-min BUDGET (the config's
              `tune:` section: its search space and its own, cheaper, folds); no new trial starts
              after the budget, the running one finishes
  3. tuned    `medrec finetune --config STUDY/best_config.yaml`: the best trial's values with the
              recipe's own CV (same K, seed and therefore the same folds as the recipe)
  4. compare  `medrec report --compare RECIPE TUNED`: paired OOF AUROC difference with DeLong's test

Both runs are scored on the same 5,232 out-of-fold predictions; AUROC CIs are medrec's bootstrap.
Caveat printed with the result: the tuned config was selected by CV on these same images (with
the study's folds), so its OOF AUROC carries selection optimism that the recipe's does not; a fair
verdict needs the held-out test split (`medrec predict --split test` on both runs) or nested CV.

    python benchmarks/tune_vs_recipe.py --data ../shared/datasets/pneumoniamnist/pneumoniamnist_trainval.npz \
        --budget-min 20 --recipe-run /tmp/pneumoniamnist-RUN
    python benchmarks/tune_vs_recipe.py --data NPZ --budget-min 1 --set cv.folds=2 --set train.epochs=1 \
        --set tune.folds=2 --out /tmp/tvr   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(cmd: list[str]) -> float:
    print(f"$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc != 0:
        sys.exit(f"failed (exit {rc}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def oof_auroc(run: Path) -> dict:
    """medrec's pooled OOF AUROC with its bootstrap CI, and the AUROC again with scikit-learn."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    m = json.loads((run / "metrics.json").read_text())["metrics"]["auroc"]
    oof = pd.read_csv(run / "oof_predictions.csv")
    return {"value": m["value"], "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"), "n": int(len(oof)),
            "auroc_sklearn": float(roc_auc_score(oof["label"].astype(int), oof["score"]))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="pneumoniamnist_trainval.npz")
    p.add_argument("--config", type=Path, default=ROOT / "configs/pneumoniamnist.yaml")
    p.add_argument("--budget-min", type=float, default=20.0, help="time budget of medrec tune, minutes")
    p.add_argument("--recipe-run", type=Path, help="an existing finished run of the recipe (skips step 1)")
    p.add_argument("--out", type=Path, help="folder for the runs (default /tmp/tune_vs_recipe-<timestamp>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the recipe run and the study (repeatable; smoke tests)")
    return p.parse_args(argv)


def run_steps(args: argparse.Namespace, out: Path) -> dict:
    py, sets = sys.executable, [f"data.manifest={args.data.resolve()}", *args.set]
    over = [x for s in sets for x in ("--set", s)]
    res: dict = {"load_before": load_avg(), "budget_min": args.budget_min, "overrides": args.set}
    recipe = args.recipe_run or out / "recipe"
    if args.recipe_run is None:
        res["recipe_s"] = timed([py, "-m", "medrec.finetune", "--config", str(args.config), "--out", str(recipe),
                                 "--quiet", *over])
    study = out / "study"
    res["tune_s"] = timed([py, "-m", "medrec.tune", "--config", str(args.config), "--out", str(study),
                           "--trials", "1000", "--timeout-min", str(args.budget_min), *over])
    tuned = out / "tuned"
    res["tuned_s"] = timed([py, "-m", "medrec.finetune", "--config", str(study / "best_config.yaml"),
                            "--out", str(tuned), "--quiet"])
    res["compare_s"] = timed([py, "-m", "medrec.report", "--compare", str(recipe), str(tuned),
                              "--out", str(out / "compare.json")])
    res.update(recipe=oof_auroc(recipe), tuned=oof_auroc(tuned), recipe_run=str(recipe), tuned_run=str(tuned),
               study=json.loads((study / "study.json").read_text()), load_after=load_avg())
    res["compare"] = json.loads((out / "compare.json").read_text())
    return res


def print_result(res: dict, out: Path) -> None:
    s = res["study"]
    print(f"\ntune vs recipe, PneumoniaMNIST train+val ({res['recipe']['n']} OOF images)")
    for name in ("recipe", "tuned"):
        m = res[name]
        print(f"  {name:<7} OOF AUROC {m['value']:.4f} (95% CI {m['ci_low']:.4f}-{m['ci_high']:.4f}); "
              f"sklearn {m['auroc_sklearn']:.4f}")
    print(f"  study   {s['trials']} trials in {res['tune_s']:.0f} s (budget {res['budget_min']:g} min; "
          f"{s['states']}); best trial {s['best_trial']}: {s['best_value']:.4f} on its own folds")
    print(f"          best parameters {s['best_params']}")
    print(f"  times   recipe {res.get('recipe_s', float('nan')):.0f} s, tune {res['tune_s']:.0f} s, "
          f"tuned run {res['tuned_s']:.0f} s; load before {res['load_before']}, after {res['load_after']}")
    for d in res["compare"].get("delong", []):
        print(f"  DeLong  tuned - recipe AUROC {-d['diff']:+.4f} (SE {d['se']:.4f}, z {-d['z']:.2f}, "
              f"p {d['p_value']:.4g}); {out / 'compare.json'} (medrec report --compare)")
    print("  caveat  the tuned config was selected on these images: its OOF AUROC is optimistic; "
          "compare both runs on the test split for a fair verdict")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"--data {args.data}: no such file")
    out = args.out or Path("/tmp") / f"tune_vs_recipe-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    res = run_steps(args, out)
    (out / "summary.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    print_result(res, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

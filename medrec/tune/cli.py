"""`medrec tune --config CONFIG.yaml --trials N`: search the config's `tune.space` by cross-validation.

Front end only: arguments, config and search-space checks (before any heavy import), the study
folder, logging, the Optuna loop (medrec.tune.study / objective), the summary files.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from medrec.config import ExperimentConfig, apply_overrides, validate_config
from medrec.errors import ConfigError, MedrecError

# A trial that fails on its own values (a config error, a RuntimeError such as out-of-memory or a
# diverged loss) is recorded as failed and the study goes on; anything else is a bug and stops it.
TRIAL_ERRORS = (MedrecError, RuntimeError)

EPILOG = """\
examples:
  medrec tune --config configs/pneumoniamnist.yaml --trials 20
  medrec tune --config configs/chest_xray.yaml --trials 8 --set tune.folds=3 --out runs/cxr-tune
  medrec tune --resume runs/cxr-tune            # after a kill: finished trials are not rerun
  medrec finetune --config runs/cxr-tune/best_config.yaml

The search space is the config's `tune.space` (README: Tuning). The objective is the pooled
out-of-fold AUROC of patient-grouped cross-validation on the training data; a held-out test set
(cv.test_fraction) is never used. A tuned config's own CV score on the same folds is optimistic.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="medrec tune", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="experiment YAML with a tune.space section")
    p.add_argument("--trials", type=int, help="finished trials the study should have (default: tune.trials)")
    p.add_argument("--timeout-min", type=float, help="start no new trial after this many minutes (this call)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. tune.folds=3 (repeatable)")
    p.add_argument("--out", type=Path, help="study folder (default: <output_dir>/<name>-tune-<timestamp>); "
                                            "an existing study there is resumed")
    p.add_argument("--resume", type=Path, metavar="STUDY_DIR", help="continue a killed or finished study")
    args = p.parse_args(argv)
    if not args.config and not args.resume:
        p.error("give --config CONFIG.yaml, or --resume STUDY_DIR")
    if args.trials is not None and args.trials < 1:
        p.error("--trials must be >= 1")
    return args


def read_raw(args: argparse.Namespace) -> tuple[dict[str, Any], Path, Path, str]:
    """The raw config (overrides applied), the study folder, base folder for paths, its source name."""
    if args.resume:
        saved = args.resume / "tune_config.yaml"
        if not saved.exists():
            raise ConfigError(f"--resume {args.resume}: no tune_config.yaml there; is it a medrec tune folder?")
        if args.overrides:
            raise ConfigError("--set cannot change a study being resumed; start a new one with --out")
        meta = yaml.safe_load(saved.read_text())
        return meta["config"], args.resume, Path(meta["base_dir"]), str(saved)
    try:
        raw = yaml.safe_load(args.config.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {args.config} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{args.config}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{args.config}: the top level must be a mapping of sections")
    raw.setdefault("name", args.config.stem)
    raw = apply_overrides(raw, args.overrides)
    cfg = validate_config(raw, str(args.config))
    out = args.out or Path(cfg.output_dir) / f"{cfg.name}-tune-{datetime.now():%Y%m%d-%H%M%S}"
    return raw, out, args.config.resolve().parent, str(args.config)


def check_tunable(cfg: ExperimentConfig, source: str) -> None:
    if cfg.tune is None or not cfg.tune.space:
        raise ConfigError(f"{source}: no tune.space to search; add e.g.\n  tune:\n    space:\n"
                          "      train.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n      data.augment: {choice: [light, cxr]}")
    if cfg.tune.tuned_from is not None:
        raise ConfigError(f"{source}: this config is already the result of a study ({cfg.tune.tuned_from.study}); "
                          "tune the original config instead")


def check_data(cfg: ExperimentConfig, base_dir: Path) -> None:
    """The manifest loads and has the columns the evaluation names, before the first trial (a trial's
    data error would otherwise fail every trial in turn)."""
    from medrec.data.sources import load_source
    from medrec.train.cv import check_eval_columns

    check_eval_columns(cfg, load_source(cfg.data, base_dir))


def store_config(study_dir: Path, raw: dict[str, Any], base_dir: Path) -> None:
    """tune_config.yaml, or, for an existing study, check that the same config is resumed."""
    from medrec.fileio import atomic_write_text

    path = study_dir / "tune_config.yaml"
    meta = {"config": raw, "base_dir": str(base_dir)}
    if path.exists():
        old = yaml.safe_load(path.read_text())
        if old["config"] != raw:
            raise ConfigError(f"{study_dir} holds a study of a different config (tune_config.yaml); resume it "
                              "with --resume, or give a new --out for this one")
        return
    atomic_write_text(path, yaml.safe_dump(meta, sort_keys=False))


def setup_logging(study_dir: Path) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fh = logging.FileHandler(study_dir / "tune.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(fh)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(console)


def run_study(raw: dict[str, Any], cfg: ExperimentConfig, study_dir: Path, base_dir: Path, source: str,
              args: argparse.Namespace) -> dict:
    try:
        import optuna
    except ImportError:
        raise MedrecError("medrec tune needs Optuna: pip install 'medrec[tune]'") from None

    from medrec.data.sources import resolve
    from medrec.tune import study as st
    from medrec.tune.objective import Objective
    from medrec.tune.summary import write_summary

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from here instead
    tune = cfg.tune
    study = st.open_study(study_dir, tune, cfg.seed)
    st.recover_interrupted(study)
    n_total = args.trials or tune.trials
    todo = st.remaining(study, n_total)
    data = str(resolve(cfg.data.manifest, base_dir, "data.manifest"))

    def after_trial(study, trial) -> None:
        value = "" if trial.value is None else f" {trial.value:.4f}"
        print(f"trial {trial.number}: {trial.state.name.lower()}{value} {trial.params}", flush=True)
        write_summary(study, raw, cfg, study_dir, data)

    print(f"study {study_dir}: {n_total - todo} of {n_total} trials done, {todo} to run", flush=True)
    timeout = args.timeout_min or tune.timeout_min
    if todo:
        study.optimize(Objective(raw, tune, study_dir, base_dir, source), n_trials=todo,
                       timeout=timeout * 60 if timeout else None, catch=TRIAL_ERRORS, callbacks=[after_trial])
    return write_summary(study, raw, cfg, study_dir, data)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study_dir = args.resume or args.out
    try:
        raw, study_dir, base_dir, source = read_raw(args)
        cfg = validate_config(raw, source)
        check_tunable(cfg, source)
        from medrec.tune.objective import check_candidates
        from medrec.tune.study import lock

        check_candidates(raw, cfg.tune, source)
        check_data(cfg, base_dir)
        study_dir.mkdir(parents=True, exist_ok=True)
        held = lock(study_dir)
        store_config(study_dir, raw, base_dir)
        setup_logging(study_dir)
        t0 = time.perf_counter()
        info = run_study(raw, cfg, study_dir, base_dir, source, args)
        held.close()
    except MedrecError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished trials are kept: medrec tune --resume {study_dir or 'STUDY_DIR'}",
              file=sys.stderr)
        return 130
    print(summary_text(study_dir, info, time.perf_counter() - t0))
    return 0


def summary_text(study_dir: Path, info: dict, seconds: float) -> str:
    lines = ["", f"medrec tune: {study_dir}", f"  objective:  {info['objective']}",
             f"  trials:     {info['trials']} ({', '.join(f'{k} {v}' for k, v in info['states'].items())})",
             f"  this call:  {seconds:.0f} s"]
    if info.get("best_trial") is not None:
        lines += [f"  best:       trial {info['best_trial']}, {info['best_value']:.4f}",
                  f"  parameters: {info['best_params']}",
                  f"  best config {study_dir / 'best_config.yaml'} (medrec finetune --config ...; its CV on the "
                  "same folds is optimistic)"]
    for name in ("trials.md", "plots/objective.png", "plots/params.png"):
        lines.append(f"  {name:<19} {study_dir / name}")
    return "\n".join(lines)

"""One trial of `medrec tune`: its config, its cross-validation folds, its objective.

The objective is the pooled out-of-fold AUROC of patient-grouped cross-validation on the training
data, computed by medrec's own `medrec.train.cv.run` (one call per fold, so that the running value
can be reported to the pruner after each fold). A held-out test set (`cv.test_fraction`) is split
off inside `cv.run` and never trained or scored on. Each trial is an ordinary, complete medrec run
folder under `<study>/trials/`, with its report.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrec.config import ExperimentConfig, validate_config
from medrec import runfolder as rf
from medrec.errors import ConfigError
from medrec.tune.space import Param, TuneConfig

log = logging.getLogger(__name__)


def set_key(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `raw` with the dotted `key` set to `value` (sections created as needed)."""
    out = copy.deepcopy(raw)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if isinstance(nxt, str) and part == "augment":  # `augment: cxr` is short for {preset: cxr}
            nxt = {"preset": nxt}
        if not isinstance(nxt, dict):
            nxt = {}
        node[part] = nxt
        node = nxt
    node[parts[-1]] = value
    return out


def trial_raw(raw: dict[str, Any], params: dict[str, Any], tune: TuneConfig) -> dict[str, Any]:
    """The raw config of one trial: the base config, the trial's values, the objective's folds.

    The `tune` section is dropped: a trial is an ordinary run.
    """
    out = {k: v for k, v in raw.items() if k != "tune"}
    for key, value in params.items():
        out = set_key(out, key, value)
    if tune.folds is not None:
        out = set_key(out, "cv.folds", tune.folds)
    return out


def check_candidates(raw: dict[str, Any], tune: TuneConfig, source: str) -> None:
    """Fail before any trial if a bound or a choice of the space makes an invalid config.

    Raises:
        ConfigError: naming the searched key, the value and the config error it causes.
    """
    from medrec.models.specs import get_spec

    for key, param in tune.space.items():
        for value in param.candidates():
            try:
                cfg = validate_config(trial_raw(raw, {key: value}, tune), source)
            except ConfigError as exc:
                detail = str(exc).split("invalid config:", 1)[-1].strip()
                raise ConfigError(f"{source}: tune.space.{key} value {value!r} makes an invalid config: "
                                  f"{detail}") from None
            if key in ("model.arch", "data.image_size"):
                spec = get_spec(cfg.model.arch)
                if cfg.data.image_size < spec.min_size:
                    raise ConfigError(f"{source}: tune.space.{key} value {value!r}: model.arch {cfg.model.arch} "
                                      f"needs data.image_size >= {spec.min_size} (got {cfg.data.image_size})")


def suggest(trial, space: dict[str, Param]) -> dict[str, Any]:
    """The trial's value of every searched key (Optuna's define-by-run API)."""
    out: dict[str, Any] = {}
    for key, p in space.items():
        if p.kind == "choice":
            out[key] = trial.suggest_categorical(key, list(p.choices or ()))
        elif p.kind in ("int", "log_int"):
            out[key] = trial.suggest_int(key, int(p.low), int(p.high), step=p.step or 1, log=p.kind == "log_int")
        else:
            out[key] = trial.suggest_float(key, p.low, p.high, log=p.kind == "log_uniform")
    return out


def pooled_auroc(oof: pd.DataFrame, task: str) -> float:
    """AUROC of pooled out-of-fold predictions: binary; macro one-vs-rest (multiclass); mean over
    labels (multilabel). NaN when a class is missing from the predictions so far."""
    from medrec.eval.metrics import auroc

    if task == "binary":
        y = oof["label"].to_numpy().astype(int)
        return float(auroc(y, oof["score"].to_numpy())) if 0 < y.sum() < len(y) else float("nan")
    if task == "multiclass":
        scores = [c for c in oof.columns if c.startswith("score_")]
        y = oof["label"].to_numpy().astype(int)
        vals = [auroc((y == k).astype(int), oof[c].to_numpy())
                for k, c in enumerate(scores) if 0 < (y == k).sum() < len(y)]
        return float(np.mean(vals)) if vals else float("nan")
    vals = []
    for col in [c for c in oof.columns if c.startswith("label_")]:
        ok = oof[col].notna().to_numpy()
        y = oof[col].to_numpy()[ok].astype(int)
        if 0 < y.sum() < len(y):
            vals.append(auroc(y, oof[f"score_{col[len('label_'):]}"].to_numpy()[ok]))
    return float(np.mean(vals)) if vals else float("nan")


class Objective:
    """Callable for `study.optimize`: trains one trial's folds and returns its pooled OOF AUROC."""

    def __init__(self, raw: dict[str, Any], tune: TuneConfig, study_dir: Path, base_dir: Path, source: str):
        self.raw, self.tune, self.study_dir, self.base_dir, self.source = raw, tune, study_dir, base_dir, source

    def __call__(self, trial) -> float:
        import optuna

        params = suggest(trial, self.tune.space)
        cfg = validate_config(trial_raw(self.raw, params, self.tune), self.source)
        # A retried trial (its predecessor was killed) continues in the same folder: cv.run skips the
        # finished folds and resumes the current one from its last finished epoch.
        rel = trial.user_attrs.get("resume_dir") or f"trials/trial_{trial.number:03d}"
        trial.set_user_attr("run_dir", rel)
        run_dir = self.study_dir / rel
        if "resume_dir" not in trial.user_attrs and run_dir.exists():
            _move_aside(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        rf.write_config(run_dir, cfg)
        value = float("nan")
        for step, only in enumerate(_fold_calls(cfg)):
            try:
                value = self._run_folds(cfg, run_dir, only)
            except KeyboardInterrupt:  # Ctrl-C: not the trial's fault; the next start retries it
                trial.set_user_attr("interrupted", True)
                raise
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pooled OOF AUROC {value:.4f} after {step + 1} fold(s) is below the "
                                         "median of earlier trials")
        if not np.isfinite(value):
            raise ConfigError(f"trial {trial.number}: the pooled OOF AUROC is undefined (one class only?)")
        return value

    def _run_folds(self, cfg: ExperimentConfig, run_dir: Path, only: int | None) -> float:
        from medrec.train import cv

        # no preview.png per trial: drawing it costs more than a small trial's training
        info = cv.run(cfg, run_dir, base_dir=self.base_dir, only_fold=only, preview=False)
        if info.get("status") == "complete":
            from medrec.eval.report import build_report  # cv.run no longer builds it (train -> eval edge)

            build_report(run_dir)
        parts = sorted((run_dir / rf.FOLDS_DIR).glob(f"*/{rf.FOLD_OOF_CSV}"))
        oof = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
        return pooled_auroc(oof, cfg.data.task)


def _move_aside(run_dir: Path) -> None:
    """A folder that the storage does not know (its study.db was deleted or replaced) must not be
    resumed as this trial's: it may hold another configuration's folds. Keep it, renamed."""
    old = run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.rename(old)
    log.warning("%s was left by an earlier study and is not this trial's; moved to %s", run_dir, old.name)


def _fold_calls(cfg: ExperimentConfig) -> list[int | None]:
    """One cv.run call per fold (a pruning point after each); with repeated CV, one call for all."""
    if cfg.cv.repeats > 1 or cfg.cv.split_column:
        return [None]
    return list(range(cfg.cv.folds))

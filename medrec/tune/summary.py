"""What a `medrec tune` study leaves for people: trials table, plots, study.json, best config.

Written after every trial (so a killed study still has an up-to-date summary) and at the end:

    trials.csv / trials.md   one row per trial: state, objective, per-fold values, parameters, time
    plots/objective.png      objective per trial (pruned trials at their last per-fold value) + best so far
    plots/params.png         each searched parameter against the objective
    study.json               best trial, its value and parameters, counts by state, the objective
    best_config.yaml         the base config with the best parameters and a `tune.tuned_from` marker;
                             `medrec finetune --config best_config.yaml` trains it, and its report
                             says that it was tuned and on what
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medrec.config import ExperimentConfig, validate_config
from medrec.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from medrec.tune.objective import set_key, trial_raw
from medrec.tune.space import TunedFrom, TuneConfig

log = logging.getLogger(__name__)


def objective_text(cfg: ExperimentConfig, tune: TuneConfig) -> str:
    folds = tune.folds or cfg.cv.folds
    unit = "image-level (no patient ids)" if cfg.data.source == "medmnist" else "patient-grouped"
    held = f", {cfg.cv.test_fraction:g} held out as test and never used" if cfg.cv.test_fraction else ""
    return f"pooled out-of-fold AUROC, {folds}-fold {unit} CV (seed {cfg.seed}) of the training data{held}"


def trials_table(study) -> pd.DataFrame:
    """One row per trial of the study, parameters as columns. `objective` is set for complete trials
    only (Optuna stores a pruned trial's last per-fold value as its value; that is `last_value` here)."""
    rows = []
    for t in study.trials:
        steps = list(dict(sorted(t.intermediate_values.items())).values())
        start, end = t.datetime_start, t.datetime_complete
        state = t.state.name.lower() + (" (interrupted)" if t.user_attrs.get("interrupted") else "")
        rows.append({"trial": t.number, "state": state, "objective": t.value if state == "complete" else None,
                     "per_fold": " ".join(f"{v:.4f}" for v in steps), "last_value": steps[-1] if steps else None,
                     "seconds": (end - start).total_seconds() if start and end else None,
                     "retry_of": t.user_attrs.get("retry_of"), "run_dir": t.user_attrs.get("run_dir"),
                     **{f"param:{k}": v for k, v in t.params.items()}})
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame) -> str:
    cols = [c for c in table.columns if c not in ("last_value", "run_dir")]
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(c.removeprefix("param:") for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for _, r in table.iterrows()]
    return "\n".join(lines) + "\n"


def plot_trials(table: pd.DataFrame, space: dict, out_dir: Path) -> None:
    """objective.png and params.png (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out_dir.mkdir(parents=True, exist_ok=True)
    done = table[table["state"] == "complete"]
    pruned = table[table["state"] == "pruned"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(done["trial"], done["objective"], "o", label="complete")
    ax.plot(pruned["trial"], pruned["last_value"], "o", mfc="none", label="pruned (last per-fold value)")
    if len(done):
        best = done.set_index("trial")["objective"].reindex(table["trial"]).cummax().ffill()
        ax.step(table["trial"], best, where="post", color="k", lw=1, label="best so far")
    ax.set(xlabel="trial", ylabel="pooled OOF AUROC", title="objective per trial")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    _save(fig, out_dir / "objective.png")
    keys = list(space)
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3 * max(1, len(keys)), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        col = f"param:{key}"
        if col in done:
            _param_axis(ax, done[col], done["objective"], space[key])
        ax.set(xlabel=key, ylabel="pooled OOF AUROC")
    fig.suptitle("parameters of complete trials vs objective", fontsize=9)
    _save(fig, out_dir / "params.png")


def _param_axis(ax, x: pd.Series, y: pd.Series, param) -> None:
    if param.kind == "choice":
        labels = [str(c) for c in param.choices]
        ax.plot([labels.index(str(v)) for v in x], y, "o")
        ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    else:  # the whole search range, so the plot shows where in the space the trials landed
        ax.plot(x.astype(float), y, "o")
        if param.kind.startswith("log"):
            ax.set_xscale("log")
        ax.set_xlim(param.low, param.high)


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def best_config(raw: dict[str, Any], cfg: ExperimentConfig, study, study_dir: Path, n_trials: int,
                data: str) -> dict[str, Any]:
    """The base config with the best trial's values (its own CV as given, not the objective's folds)
    and `tune.tuned_from` instead of the search space."""
    tune = cfg.tune or TuneConfig()
    best = study.best_trial
    out = trial_raw(raw, best.params, TuneConfig())  # TuneConfig(): keep the base config's cv.folds
    out = set_key(out, "data.manifest", data)  # absolute: the file lives in the study folder, not beside the config
    marker = TunedFrom(study=str(study_dir.resolve()), trials=n_trials, best_trial=best.number,
                       best_value=float(best.value), objective=objective_text(cfg, tune), data=data,
                       folds=tune.folds or cfg.cv.folds, seed=cfg.seed)
    out["tune"] = {"tuned_from": marker.model_dump(mode="json")}
    out["name"] = f"{cfg.name}-tuned"
    validate_config(out, "best_config.yaml")  # what is written must load
    return out


def write_summary(study, raw: dict[str, Any], cfg: ExperimentConfig, study_dir: Path, data: str) -> dict:
    """Write every summary file; returns study.json's content."""
    from medrec.tune.study import counted

    tune = cfg.tune or TuneConfig()
    table = trials_table(study)
    atomic_write_text(study_dir / "trials.csv", table.to_csv(index=False))
    atomic_write_text(study_dir / "trials.md", _markdown(table))
    n = sum(counted(t) for t in study.trials)
    states = table["state"].value_counts().to_dict() if len(table) else {}
    info: dict[str, Any] = {"objective": objective_text(cfg, tune), "direction": "maximize", "trials": n,
                            "states": states, "space": {k: p.model_dump() for k, p in tune.space.items()},
                            "best_trial": None}
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        info.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                    best_run_dir=best.user_attrs.get("run_dir"))
        best_raw = best_config(raw, cfg, study, study_dir, n, data)
        atomic_write_text(study_dir / "best_config.yaml", yaml.safe_dump(best_raw, sort_keys=False))
    if len(table):
        try:
            plot_trials(table, tune.space, study_dir / "plots")
        except Exception as exc:  # a picture must never cost the study
            log.warning("study plots not written: %s: %s", type(exc).__name__, exc)
    atomic_write_json(study_dir / "study.json", info)
    return info

"""Subgroup validation: the run's metrics per value of de-identified manifest columns.

`eval.subgroups: [sex, age_band, view_position, site]` names manifest columns. For every value
of each column the report gives patients, images, prevalence, the task's key metrics at the
run's own operating point (the same cross-fitted thresholds as the headline metrics, never
re-chosen on the subgroup) with patient-bootstrap CIs, and the difference to the rest of the
data with its CI. Group and rest come from one joint resample of patients, so a patient with
images in both (a PA and an AP view, say) is handled, and the difference's CI reflects that.
A value with fewer than `eval.subgroup_min_patients` patients is "too few": counts only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medrec.errors import MedrecError
from medrec.eval.bootstrap import bootstrap_draws, percentile_interval
from medrec.eval.inputs import Run
from medrec.eval.metrics import Statistic, defined_at_point
from medrec.eval.oof import OOF

log = logging.getLogger(__name__)

LEVEL = 0.95
MISSING = "missing"  # the value shown for rows without one
METRICS = {"binary": ("auroc", "sensitivity", "specificity"),
           "multilabel": ("auroc", "sensitivity", "specificity"),
           "multiclass": ("accuracy", "balanced_accuracy", "auroc_macro")}


def subgroup_values(run: Run, columns: tuple[str, ...]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The value of each subgroup column on each row of oof_predictions.csv, and why a column is
    unavailable. Columns come from the predictions file when it has them, else from the
    manifest of config.yaml (data.manifest) joined on the resolved image path."""
    table = run.table
    out = pd.DataFrame(index=table.index)
    unavailable: dict[str, str] = {}
    manifest = None
    for col in columns:
        if col in table.columns:
            out[col] = table[col]
            continue
        if manifest is None:
            manifest = _manifest(run)
        if isinstance(manifest, str):
            unavailable[col] = manifest
        elif col not in manifest.columns:
            unavailable[col] = f"no column '{col}' in the manifest (columns: {', '.join(map(str, manifest.columns))})"
        else:
            out[col] = table["path"].astype(str).map(manifest[col])
    return out, unavailable


def _manifest(run: Run) -> pd.DataFrame | str:
    """The manifest indexed by resolved path, or the reason it cannot be read."""
    from medrec.data.manifest import load_manifest_csv

    data = run.cfg.data
    if data.source != "manifest" or not data.manifest:
        return (f"not in oof_predictions.csv, and data.source {data.source} has no manifest to take it from"
                if data.source != "manifest" else "not in oof_predictions.csv, and config.yaml names no data.manifest")
    try:
        table = load_manifest_csv(Path(data.manifest), root=data.root, image_column=data.image_column,
                                  patient_column=data.patient_column)
    except MedrecError as exc:
        return f"the manifest cannot be read ({exc})"
    return table.drop_duplicates("path").set_index("path")


def masked_statistic(oof: OOF, thresholds: np.ndarray | None, masks: dict[tuple, np.ndarray]) -> Statistic:
    """The run's metrics on each subset of rows `masks[name]`, as one statistic of row weights:
    keys are (*name, label, metric); per repeat, then averaged over repeats like the headline."""
    parts: dict[tuple, list] = {}
    for name, mask in masks.items():
        for r in np.unique(oof.repeat):
            rows = np.flatnonzero(mask & (oof.repeat == r))
            if len(rows):
                parts.setdefault(name, []).append((rows, defined_at_point(oof.block(rows, thresholds, None, None))))

    def stat(w: np.ndarray) -> dict:
        out = {}
        for name, pieces in parts.items():
            blocks = [oof.block(rows, thresholds, w[:, rows], None, d) for rows, d in pieces]
            out.update({(*name, *k): np.mean([b[k] for b in blocks], axis=0) for k in blocks[0]})
        return out

    return stat


def _entry(point: dict, draws: dict, key: tuple) -> dict:
    low, high, n_valid = percentile_interval(draws[key], LEVEL)
    return {"value": point[key], "ci_low": low, "ci_high": high, "n_valid": n_valid}


def _difference(point: dict, draws: dict, group: tuple, rest: tuple) -> dict:
    low, high, n_valid = percentile_interval(draws[group] - draws[rest], LEVEL)
    return {"value": point[group] - point[rest], "ci_low": low, "ci_high": high, "n_valid": n_valid}


def _counts(run: Run, mask: np.ndarray) -> dict:
    """Patients, images and prevalence (per label) of the rows in `mask`, first repeat only."""
    oof = run.oof
    first = mask & (oof.repeat == oof.repeat.min())
    keys = run.table.loc[first, ["path"] + (["slice"] if "slice" in run.table.columns else [])]
    out = {"patients": int(len(np.unique(oof.unit[first]))), "images": int(len(keys.drop_duplicates()))}
    if oof.task == "multiclass":
        out["prevalence"] = {n: float(np.mean(oof.y[first] == c)) if first.any() else None
                             for c, n in enumerate(oof.names)}
    else:
        y = oof.y[first]
        out["prevalence"] = {n: float(np.nanmean(y[:, j])) if (~np.isnan(y[:, j])).any() else None
                             for j, n in enumerate(oof.names)}
    return out


def _label_of(oof: OOF, label: str) -> str:
    return "all classes" if oof.task == "multiclass" else (label or oof.names[0])


def subgroup_analysis(run: Run, ev: dict) -> dict | None:
    """metrics.json's "subgroups" section, or None when eval.subgroups is empty."""
    cfg = run.cfg.eval
    if not cfg.subgroups:
        return None
    values, unavailable = subgroup_values(run, tuple(cfg.subgroups))
    groups, masks = _groups(run, values, cfg.subgroup_min_patients)
    point, draws = bootstrap_draws(masked_statistic(run.oof, ev["thresholds"], masks), run.oof.unit,
                                   n_resamples=cfg.bootstrap, seed=cfg.bootstrap_seed)
    wanted = METRICS[run.oof.task]
    for (col, value), g in groups.items():
        if g["too_few"]:
            continue
        metrics: dict[str, dict] = {}
        for key in (k for k in point if k[:3] == (col, value, "group") and k[4] in wanted):
            label, metric = key[3], key[4]
            entry = _entry(point, draws, key)
            rest = (col, value, "rest", label, metric)
            entry["difference"] = _difference(point, draws, key, rest) if rest in point else None
            metrics.setdefault(_label_of(run.oof, label), {})[metric] = entry
        g["metrics"] = metrics
    return _section(cfg, groups, unavailable)


def _groups(run: Run, values: pd.DataFrame, min_patients: int) -> tuple[dict, dict]:
    """Counts per (column, value) and the row masks to evaluate (groups with enough patients
    and their rests, when the rest has enough patients too)."""
    groups, masks = {}, {}
    for col in values.columns:
        v = values[col].astype(object).where(values[col].notna(), MISSING).astype(str).to_numpy()
        for value in sorted(set(v)):
            mask, rest = v == value, v != value
            g = {"column": col, "value": value, **_counts(run, mask)}
            g["too_few"] = g["patients"] < min_patients
            groups[(col, value)] = g
            if not g["too_few"]:
                masks[(col, value, "group")] = mask
                if _counts(run, rest)["patients"] >= min_patients:
                    masks[(col, value, "rest")] = rest
    return groups, masks


def _section(cfg, groups: dict, unavailable: dict[str, str]) -> dict:
    return {
        "columns": list(cfg.subgroups), "min_patients": cfg.subgroup_min_patients,
        "operating_point": "the run's cross-fitted thresholds (not re-chosen per subgroup)",
        "difference": "subgroup minus the rest of the data, same patient resamples",
        "groups": list(groups.values()), "unavailable": unavailable,
    }


def headline_label(doc_section: dict) -> str | None:
    """The label whose metrics the forest plot shows (the first one found)."""
    for g in doc_section["groups"]:
        if g.get("metrics"):
            return next(iter(g["metrics"]))
    return None

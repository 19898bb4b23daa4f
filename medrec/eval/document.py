"""The metrics document (metrics.json): what a run's evaluation states, canonically serialised.

metrics.json is canonical: sorted keys, floats rounded to 6 decimals, NaN written as null and a
seeded bootstrap, so two identical runs give byte-identical files once the fields under
"volatile" (listed in "volatile_fields") are left out.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math

import numpy as np

from medrec import runfolder as rf
from medrec.eval.inputs import Run
from medrec.eval.metrics import THRESHOLD_METRICS

SCHEMA = "medrec-metrics/1"
ROUND = 6
LEVEL = 0.95


def json_ready(x):
    """JSON-ready copy: floats rounded (NaN/inf -> None), numpy -> Python, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return round(float(x), ROUND) + 0.0 if math.isfinite(x) else None
    if isinstance(x, np.ndarray):
        return json_ready(x.tolist())
    return x


def dumps(doc: dict) -> str:
    """The canonical metrics.json text (sorted keys, 2-space indent, newline at the end)."""
    return json.dumps(json_ready(doc), sort_keys=True, indent=2, allow_nan=False) + "\n"


def is_threshold_metric(name: str) -> bool:
    """True for metrics that depend on the operating point (accuracy, f1_macro, ...)."""
    for suffix in ("_macro", "_micro"):
        name = name.removesuffix(suffix)
    return name in THRESHOLD_METRICS


def metrics_document(run: Run, ev: dict) -> dict:
    """The metrics.json content (unrounded; `dumps` canonicalises it)."""
    oof, cfg, info = run.oof, run.cfg.eval, run.info
    optimistic = ev["selection"] == "same data (optimistic)"
    headline, per_label = {}, {}
    for (label, metric), ci in ev["metrics"].items():
        entry = dict(ci)
        if optimistic and is_threshold_metric(metric):
            entry["note"] = "threshold chosen on this data (optimistic)"
        (headline if label == "" else per_label.setdefault(label, {}))[metric] = entry
    # The fields that differ between two runs of one config (run.json's VOLATILE_FIELDS) and the
    # build time; everything else in metrics.json is reproducible byte for byte.
    volatile = {
        "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "created": info.get("created"), "finished": info.get("finished"), "wall_time_s": info.get("wall_time_s"),
        "run_dir": str(run.dir), "hardware": info.get("hardware"), "git_commit": info.get("git_commit"),
    }
    return {
        "schema_version": SCHEMA,
        "task": oof.task,
        "labels": list(oof.names),
        "data": _data_section(run),
        "bootstrap": {
            "n_resamples": cfg.bootstrap, "seed": cfg.bootstrap_seed, "unit": run.unit_kind,
            "n_units": len(np.unique(oof.unit)), "confidence": LEVEL, "method": "percentile",
            "statistic": "mean over repeats of the metric on the pooled out-of-fold predictions",
        },
        "operating_point": _operating_point(run, ev),
        "metrics": headline,
        "per_label": per_label,
        "per_fold": ev["per_fold"],
        "confusion_matrix": ev["confusion"],
        "calibration": ev["calibration"],
        "provenance": _provenance(run),
        "notes": _notes(run, ev),
        "volatile_fields": sorted(volatile),
        "volatile": volatile,
        # sections that exist only when configured, so other runs' metrics.json stay as they were
        **{k: ev[k] for k in ("subgroups", "aggregate", "threshold_stability", "image_flow") if ev.get(k) is not None},
    }


def metric_unit(run: Run) -> str | None:
    """What one row of the metrics is for volume data: "slice" (data.slice all, or a manifest
    slice column), "volume" (one slice of each volume: data.slice middle or a number, CT/MRI);
    None for plain images."""
    t, data = run.table, run.cfg.data
    if "slice" in t.columns and t["slice"].notna().any():
        return "slice"
    return "volume" if data.modality in ("ct", "mri") else None


def _data_section(run: Run) -> dict:
    oof, t = run.oof, run.table
    first = oof.repeat == oof.repeat.min()
    keys = t.loc[first, ["path"] + (["slice"] if "slice" in t.columns else [])].astype(str)
    out = {
        "n_rows": len(t), "n_images": int(len(keys.drop_duplicates())),
        "n_patients": int(t["patient_id"].nunique()) if run.unit_kind == "patient" else None,
        "n_repeats": len(np.unique(oof.repeat)),
        "n_folds": len(np.unique(oof.fold)),
        "image_level_folds": run.unit_kind == "image",
    }
    unit = metric_unit(run)
    if unit is not None:  # volume data: say what a row is (absent for plain images, as before)
        out.update(unit=unit, n_volumes=int(t.loc[first, "path"].nunique()),
                   context_slices=run.cfg.data.context_slices, slice=str(run.cfg.data.slice))
    if oof.task == "multiclass":
        counts = np.bincount(oof.y[first], minlength=len(oof.names))
        out["class_counts"] = dict(zip(oof.names, counts.tolist()))
    else:
        y = oof.y[first]
        out["prevalence"] = {n: float(np.nanmean(y[:, j])) if (~np.isnan(y[:, j])).any() else None
                             for j, n in enumerate(oof.names)}
        out["n_labelled"] = {n: int((~np.isnan(y[:, j])).sum()) for j, n in enumerate(oof.names)}
    return out


def _operating_point(run: Run, ev: dict) -> dict:
    stored = ev["stored_threshold"]
    if stored is not None and run.oof.task == "binary":
        stored = next(iter(stored.values()))
    return {
        "rule": run.cfg.eval.operating_point if run.oof.task != "multiclass" else "argmax",
        "selection": ev["selection"],
        "threshold": stored,
        "chosen_on": "all out-of-fold predictions" if stored is not None else None,
        "fold_thresholds": ev["fold_thresholds"],
        "undefined": ev["undefined_thresholds"],
        "run_json_threshold": run.info.get("threshold"),
    }


def _provenance(run: Run) -> dict:
    info = run.info
    keys = ("status", "initialisation", "weights_sha256", "data_fingerprint", "versions", "seeds")
    out = {k: info.get(k) for k in keys}
    out["name"] = run.cfg.name
    out["config_sha256"] = hashlib.sha256(rf.config_path(run.dir).read_bytes()).hexdigest()
    return out


def _notes(run: Run, ev: dict) -> list[str]:
    oof, cfg = run.oof, run.cfg.eval
    notes = _unit_notes(run)
    if run.unit_kind == "patient":
        notes.append(
            f"95% CIs: percentile bootstrap over patients ({len(np.unique(oof.unit))} patients, "
            f"{cfg.bootstrap} resamples, seed {cfg.bootstrap_seed}); all images of a patient are resampled together."
        )
    else:
        notes.append(
            "Image-level folds and CIs: this data has no patient ids (each patient id has a single image, as for "
            "sources without them, e.g. MedMNIST). If patients contribute several images, their images may sit "
            "in different folds and the CIs are too narrow."
        )
    notes.append(_selection_note(ev["selection"], cfg.operating_point))
    if _differs(run.info.get("threshold"), ev["stored_threshold"]):
        notes.append("run.json holds a different threshold (written at training time) from the one stored here; "
                     "this report's metrics use the thresholds described above.")
    if ev["selection"] in ("cross-fitted", "same data (optimistic)"):
        notes.append("CIs of threshold-dependent metrics hold the thresholds fixed; they leave out the "
                     "uncertainty of choosing a threshold.")
    if len(np.unique(oof.repeat)) > 1:
        notes.append(f"{len(np.unique(oof.repeat))} CV repeats: each metric is the mean over repeats of the "
                     "pooled out-of-fold metric; resamples keep a patient's rows of every repeat together.")
    ts = ev["calibration"]["temperature_scaling"]
    if run.cfg.eval.temperature_scaling and ts is not None:
        notes.append("Temperature scaling is fitted on the same single validation fold it is reported on: the "
                     "'after' values are in-sample and optimistic (†); the metric table uses the unscaled scores."
                     if ts["in_sample"] else
                     "Temperature scaling is cross-fitted like the thresholds (fitted on the other folds) and "
                     "reported before/after; the metric table uses the unscaled scores.")
    undefined = sorted({label for (label, _), m in ev["metrics"].items() if label and not np.isfinite(m["value"])})
    if undefined:
        notes.append("Some metrics are undefined (a class absent, or no threshold at all) for: "
                     f"{', '.join(undefined)}; macro averages leave them out.")
    notes += _undefined_threshold_notes(ev["undefined_thresholds"])
    if len(oof.names) > 1:
        notes.append("Macro averages are over the labels defined on all data; a resample in which one of them is "
                     "undefined (e.g. no positive drawn) is an undefined resample, counted out of 'valid resamples'.")
    scope = ev["calibration"]["scope"]
    if scope.startswith("skipped"):
        notes.append("Scores are not probabilities in [0, 1]: calibration metrics are skipped.")
    else:
        notes.append(f"Calibration is of the {scope} probability: ECE over {cfg.calibration_bins} equal-width bins "
                     "(scikit-learn's calibration_curve binning) and the Brier score.")
    return notes


def _unit_notes(run: Run) -> list[str]:
    """What the metrics count for volume data, and that folds and CIs keep a patient's slices together."""
    unit = metric_unit(run)
    if unit is None:
        return []
    t, data = run.table, run.cfg.data
    first = run.oof.repeat == run.oof.repeat.min()
    n_vol = t.loc[first, "path"].nunique()
    grouped = (f"patient-grouped: all slices of a volume and all volumes of a patient sit in one fold and are "
               f"resampled together ({t['patient_id'].nunique()} patients)" if run.unit_kind == "patient" else
               "grouped by volume (no patient ids): the slices of a volume sit in one fold and are resampled together")
    if unit == "slice":
        n = len(t.loc[first, ["path", "slice"]].drop_duplicates())
        context = (f", each seen with {data.context_slices} neighbouring slice(s) on either side as channels"
                   if data.context_slices else "")
        return [f"Unit of the metrics: the slice ({n} slices of {n_vol} volumes{context}). Folds and CIs are {grouped}. "
                "A volume- or patient-level result needs eval.aggregate."]
    which = "its middle slice" if data.slice == "middle" else f"slice {data.slice}"
    return [f"Unit of the metrics: the volume ({n_vol} volumes, each scored on {which}). Folds and CIs are {grouped}."]


def _undefined_threshold_notes(undefined: dict[str, dict]) -> list[str]:
    return [f"{label}: no threshold could be chosen for {len(u['folds'])} fold(s) (repeat, fold: "
            f"{', '.join(f'{r}, {k}' for r, k in u['folds'])}; one class only in the data it is chosen on). Their "
            f"{u['n_rows']} labelled row(s) are left out of the threshold metrics, the confusion matrix and the "
            "worst cases (not called negative); rank metrics (AUROC, AUPRC) include them."
            for label, u in undefined.items()]


def _differs(in_run_json, stored: dict[str, float] | None) -> bool:
    if in_run_json is None or stored is None:
        return False
    if not isinstance(in_run_json, dict):
        in_run_json = {next(iter(stored)): in_run_json} if len(stored) == 1 else {}
    for k, v in stored.items():
        if k not in in_run_json:
            continue
        try:
            old = float("nan") if in_run_json[k] is None else float(in_run_json[k])
        except (TypeError, ValueError):
            return True
        if math.isnan(old) != math.isnan(v) or abs(old - v) > 1e-6:  # undefined in both counts as equal
            return True
    return False


def _selection_note(selection: str, rule: str) -> str:
    return {
        "argmax": "Multiclass decisions are the arg-max class; no threshold is chosen.",
        "fixed": f"Operating point '{rule}' is fixed, not chosen on data.",
        "cross-fitted": (
            f"Operating point '{rule}': each fold's threshold is chosen on the out-of-fold predictions of the "
            "other folds (cross-fitting) and applied to that fold; pooled threshold metrics use these per-fold "
            "thresholds. The stored threshold for future data is chosen on all out-of-fold predictions."
        ),
        "same data (optimistic)": (
            f"Operating point '{rule}': with a single validation fold the threshold is chosen on the same "
            "predictions it is reported on; threshold-dependent metrics are optimistic (marked †)."
        ),
    }[selection]

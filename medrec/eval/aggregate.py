"""Patient- and study-level results: metrics after combining each patient's (study's) image scores.

`eval.aggregate: [patient]` (or `study`) adds, beside the image-level metrics, the metrics of one
score per patient (study) and repeat: the maximum of its images' scores (a patient is called
positive when any image is) and their mean, with the patient (study) label = the maximum of
its image labels. Aggregated scores live on another scale than image scores (a maximum is
higher), so the operating point is re-chosen on them by the run's own rule, cross-fitted over
the same folds (a patient's images share a fold in patient-grouped CV). CIs resample patients,
as for the image-level metrics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medrec.errors import DataError
from medrec.eval.bootstrap import bootstrap
from medrec.eval.inputs import Run
from medrec.eval.oof import OOF, oof_statistic
from medrec.eval.subgroups import subgroup_values
from medrec.eval.thresholds import oof_thresholds

HOW = ("max", "mean")
COMBINE = {"max": "maximum of the images' scores (positive when any image is)", "mean": "mean of the images' scores"}


def aggregate_oof(oof: OOF, keys: np.ndarray, how: str) -> OOF:
    """One row per (repeat, key): the rows' scores combined by `how`, the label the maximum of
    the rows' labels (NaN only when every row's is), the fold and resampling unit of the rows.

    Raises:
        DataError: a key's rows sit in different folds or units (image-level folds), where an
            aggregate would mix a patient's training and held-out images.
    """
    n_labels = oof.y.shape[1]
    frame = pd.DataFrame({"repeat": oof.repeat, "key": keys, "fold": oof.fold, "unit": oof.unit})
    for j in range(n_labels):
        frame[f"y{j}"], frame[f"s{j}"] = oof.y[:, j], oof.score[:, j]
    grouped = frame.groupby(["repeat", "key"], sort=True)
    spread = grouped[["fold", "unit"]].nunique().max()
    if spread["fold"] > 1 or spread["unit"] > 1:
        raise DataError("the images of one patient (study) sit in different folds or resampling units; "
                        "aggregates need patient-grouped folds")
    spec = {"fold": ("fold", "first"), "unit": ("unit", "first")}
    spec.update({f"y{j}": (f"y{j}", "max") for j in range(n_labels)})
    spec.update({f"s{j}": (f"s{j}", how) for j in range(n_labels)})
    agg = grouped.agg(**spec).reset_index()
    ys = agg[[f"y{j}" for j in range(n_labels)]].to_numpy(dtype=float)
    scores = agg[[f"s{j}" for j in range(n_labels)]].to_numpy(dtype=float)
    return OOF(oof.task, oof.names, ys, scores, agg["fold"].to_numpy(), agg["repeat"].to_numpy(),
               agg["unit"].to_numpy())


def _keys(run: Run, level: str) -> np.ndarray | str:
    """Each row's patient or study, or the reason there is none."""
    if level == "patient":
        return run.oof.unit if run.unit_kind == "patient" else "the data has no patient ids"
    values, unavailable = subgroup_values(run, ("study_id",))
    if "study_id" in unavailable:
        return f"no study_id: {unavailable['study_id']}"
    study = values["study_id"]
    own = "image:" + run.table["path"].astype(str)  # an image without a study is its own study
    return np.where(study.notna() & (study.astype(str) != ""), "study:" + study.astype(str), own)


def aggregate_results(run: Run) -> dict | None:
    """metrics.json's "aggregate" section: per level (patient, study) and combination (max,
    mean) the metrics with CIs; None when eval.aggregate is empty."""
    cfg = run.cfg.eval
    if not cfg.aggregate:
        return None
    out: dict = {"how": COMBINE, "threshold": f"re-chosen on the aggregated scores by '{cfg.operating_point}', "
                 "cross-fitted over the run's folds", "levels": {}}
    for level in cfg.aggregate:
        keys = _keys(run, level) if run.oof.task != "multiclass" else "multiclass scores are not aggregated"
        if isinstance(keys, str):
            out["levels"][level] = {"unavailable": keys}
            continue
        try:
            out["levels"][level] = {how: _evaluate(aggregate_oof(run.oof, keys, how), cfg) for how in HOW}
        except DataError as exc:
            out["levels"][level] = {"unavailable": str(exc)}
    return out


def _evaluate(agg: OOF, cfg) -> dict:
    thresholds, _, stored = oof_thresholds(agg, cfg.operating_point)
    ci = bootstrap(oof_statistic(agg, thresholds, None), agg.unit, n_resamples=cfg.bootstrap, seed=cfg.bootstrap_seed)
    headline, per_label = {}, {}
    for (label, metric), entry in ci.items():
        (headline if label == "" else per_label.setdefault(label, {}))[metric] = entry
    first = agg.repeat == agg.repeat.min()
    return {"n": int(first.sum()), "n_units": int(len(np.unique(agg.unit))), "threshold": stored,
            "metrics": headline, "per_label": per_label}

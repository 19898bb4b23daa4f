"""`predict --tune-threshold LABELLED.csv`: re-choose the operating point for the fold ensemble.

run.json's threshold was chosen on the pooled out-of-fold scores of single fold models. The
ensemble averages the folds' probabilities, which changes the score distribution, so the best
threshold for the ensemble can differ. This re-chooses it with the run's rule
(`eval.operating_point`) on the ensemble's scores of a labelled tuning set, which must share no
image and no patient with the images it is then applied to (a threshold chosen on the reported
data would make their sensitivity and specificity optimistic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrec.errors import DataError
from medrec.infer.inputs import collect_inputs


def tune_ensemble_threshold(ens, o, settings: dict, reported: pd.DataFrame) -> dict[str, Any]:
    """Set `ens.threshold` from the tuning set named by `o.tune_threshold`; return what was done.

    Raises:
        DataError: the tuning set has no labels, lacks a class, or shares images or patients with
            the images being predicted.
    """
    from medrec.infer.job import _score
    from medrec.infer.outputs import label_columns

    if ens.task == "multiclass":
        raise DataError("--tune-threshold: a multiclass run decides by arg-max; there is no threshold to tune")
    path = Path(o.tune_threshold)
    tuning = collect_inputs(path, ens.cfg, split=o.split)
    _refuse_overlap(path, tuning.table, reported)
    table, errors, _, _ = _score(ens, tuning, o, settings)
    if not label_columns(table):
        raise DataError(f"--tune-threshold {path}: no label column ({', '.join(ens.cfg.data.label_columns)}); "
                        "the tuning set must be labelled")
    chosen = {n: _choose(table, ens, n, path) for n in ens.names}
    ens.threshold = chosen[ens.names[0]] if ens.task == "binary" else chosen
    ens.threshold_source = f"tuned on {path.name} (ensemble scores, --tune-threshold)"
    return {"file": str(path), "rule": ens.cfg.eval.operating_point, "n_images": int(len(table)),
            "n_patients": int(table["patient_id"].nunique()), "n_unreadable": len(errors), "threshold": ens.threshold,
            "note": "chosen on the ensemble's scores of this labelled tuning set, which shares no image or "
                    "patient with the predicted images"}


def _choose(table: pd.DataFrame, ens, name: str, path: Path) -> float:
    from medrec.eval.thresholds import choose_threshold

    label, score = ("label", "score") if ens.task == "binary" else (f"label_{name}", f"score_{name}")
    y, s = table[label].to_numpy(dtype=float), table[score].to_numpy(dtype=float)
    ok = ~np.isnan(y)
    try:
        return float(choose_threshold(y[ok], s[ok], ens.cfg.eval.operating_point))
    except DataError as exc:
        raise DataError(f"--tune-threshold {path}: label {name}: {exc}") from None


def _refuse_overlap(path: Path, tuning: pd.DataFrame, reported: pd.DataFrame) -> None:
    same_images = set(tuning["image_id"].astype(str)) & set(reported["image_id"].astype(str))
    same_patients = set(tuning["patient_id"].astype(str)) & set(reported["patient_id"].astype(str))
    if same_images or same_patients:
        raise DataError(
            f"--tune-threshold {path} shares {len(same_images)} image(s) and {len(same_patients)} patient(s) with "
            "--input; a threshold chosen on the data it is then reported on is optimistic. Use a separate "
            "labelled tuning set (other patients)")

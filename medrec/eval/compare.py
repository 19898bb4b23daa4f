"""Paired comparison of two runs evaluated on the same cases.

Both runs must hold out-of-fold predictions for the same (path, slice, repeat) rows with the same
labels. Every metric difference (A - B) gets a paired patient-level bootstrap: one resample of
patients is applied to both runs, so the interval reflects the correlation between the two sets
of predictions. Binary AUROC differences (and each multilabel label's) also get DeLong's test,
which is exact for independent images but treats a patient's images as independent.

Both runs are evaluated with run A's eval settings (operating point, bootstrap, bins), each at
its own cross-fitted thresholds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medrec.data.manifest import table_slices
from medrec.errors import MedrecError
from medrec.eval.bootstrap import bootstrap_draws, percentile_interval
from medrec.eval.document import LEVEL, json_ready
from medrec.eval.inputs import Run, load_run
from medrec.eval.oof import OOF, oof_statistic
from medrec.eval.render import md_text
from medrec.eval.thresholds import oof_thresholds

SCHEMA = "medrec-compare/1"


# ---------------------------------------------------------------- DeLong

def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of k score vectors on the same cases and their DeLong covariance matrix.

    Uses the midrank formulation of Sun & Xu (2014), O(k n log n), equal to DeLong, DeLong &
    Clarke-Pearson (1988)'s structural components (ties count one half).

    Args:
        y: 0/1 labels (n,); scores: (k, n).

    Returns:
        (aucs (k,), covariance (k, k)).
    """
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise MedrecError(f"DeLong's test needs at least 2 positive and 2 negative cases; got {m} and {n}")
    tz = rankdata(np.hstack([pos, neg]), axis=1)
    tx, ty = rankdata(pos, axis=1), rankdata(neg, axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v_pos = (tz[:, :m] - tx) / n  # per positive: share of negatives ranked below it
    v_neg = 1 - (tz[:, m:] - ty) / m  # per negative: share of positives ranked above it
    cov = np.atleast_2d(np.cov(v_pos)) / m + np.atleast_2d(np.cov(v_neg)) / n
    return aucs, cov


def delong_test(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict[str, float]:
    """DeLong's two-sided test of AUROC(a) = AUROC(b) for paired scores on the same cases."""
    aucs, cov = delong_covariance(y, np.vstack([score_a, score_b]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 0:
        z, p = (0.0, 1.0) if diff == 0 else (math.nan, math.nan)
    else:
        z = diff / math.sqrt(var)
        p = math.erfc(abs(z) / math.sqrt(2))
    y = np.asarray(y, dtype=bool)
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "var": var,
            "se": math.sqrt(var) if var > 0 else 0.0, "z": z, "p_value": p,
            "n_pos": int(y.sum()), "n_neg": int((~y).sum())}


# ---------------------------------------------------------------- alignment

def _take(oof: OOF, idx: np.ndarray, unit: np.ndarray) -> OOF:
    return OOF(oof.task, oof.names, oof.y[idx], oof.score[idx], oof.fold[idx], oof.repeat[idx], unit)


def align(a: Run, b: Run) -> tuple[OOF, OOF]:
    """Both runs' predictions in one row order (run A's), sharing run A's bootstrap units.

    Raises:
        MedrecError: different tasks, labels or case sets.
    """
    if (a.oof.task, a.oof.names) != (b.oof.task, b.oof.names):
        raise MedrecError(
            f"cannot compare a {a.oof.task} run with labels {list(a.oof.names)} to a {b.oof.task} run with "
            f"labels {list(b.oof.names)}; a paired comparison needs the same task and labels"
        )
    keys = []
    for run in (a, b):
        # slices of one volume share a path: the slice is part of an image's identity
        k = list(zip(run.table["path"].astype(str), table_slices(run.table), run.oof.repeat.tolist()))
        if len(set(k)) != len(k):
            raise MedrecError(f"{run.dir}: an image appears twice in one repeat of oof_predictions.csv; "
                              "each (path, slice, repeat) must be unique")
        keys.append(k)
    only_a, only_b = set(keys[0]) - set(keys[1]), set(keys[1]) - set(keys[0])
    if only_a or only_b:
        raise MedrecError(
            f"runs {a.dir.name} and {b.dir.name} hold predictions for different cases: {len(only_a)} (image, slice, repeat) "
            f"row(s) only in A, {len(only_b)} only in B (of {len(keys[0])} and {len(keys[1])}). A paired comparison "
            "needs the same images and repeats: train both on the same data with the same cv.repeats."
        )
    where_b = {k: i for i, k in enumerate(keys[1])}
    idx_b = np.array([where_b[k] for k in keys[0]], dtype=int)
    oof_a = a.oof
    oof_b = _take(b.oof, idx_b, a.oof.unit)
    if not np.array_equal(oof_a.y, oof_b.y, equal_nan=True):
        raise MedrecError(f"runs {a.dir.name} and {b.dir.name} have different labels for the same images; "
                          "compare runs on the same manifest")
    return oof_a, oof_b


# ---------------------------------------------------------------- comparison

def compare_runs(run_a: str | Path, run_b: str | Path) -> dict:
    """Paired comparison of two run folders (A - B), JSON-ready (rounded, NaN as None).

    Raises:
        MedrecError: the runs cannot be paired (see `align`), or a folder is not a run.
    """
    a, b = load_run(run_a), load_run(run_b)
    oof_a, oof_b = align(a, b)
    cfg = a.cfg.eval
    probabilities = all(0 <= o.score.min() and o.score.max() <= 1 for o in (oof_a, oof_b))
    stats = []
    for oof in (oof_a, oof_b):
        thresholds, _, _ = oof_thresholds(oof, cfg.operating_point)
        stats.append(oof_statistic(oof, thresholds, cfg.calibration_bins if probabilities else None))

    def paired(w: np.ndarray) -> dict:
        return {(side, *k): v for side, stat in zip("ab", stats) for k, v in stat(w).items()}

    point, draws = bootstrap_draws(paired, oof_a.unit, n_resamples=cfg.bootstrap, seed=cfg.bootstrap_seed)
    headline, per_label = {}, {}
    for side, label, metric in point:
        if side != "a":
            continue
        entry = _difference(point, draws, label, metric)
        (headline if label == "" else per_label.setdefault(label, {}))[metric] = entry
    return json_ready({
        "schema_version": SCHEMA,
        "run_a": {"name": a.cfg.name, "run_dir": str(a.dir)},
        "run_b": {"name": b.cfg.name, "run_dir": str(b.dir)},
        "task": oof_a.task, "labels": list(oof_a.names),
        "n_rows": len(oof_a.y), "n_images": len(set(zip(a.table["path"].astype(str), table_slices(a.table)))),
        "n_repeats": len(np.unique(oof_a.repeat)),
        "unit": a.unit_kind, "n_units": len(np.unique(oof_a.unit)),
        "settings": {"operating_point": cfg.operating_point, "n_resamples": cfg.bootstrap,
                     "seed": cfg.bootstrap_seed, "confidence": LEVEL, "from": "run A's eval config"},
        "metrics": headline, "per_label": per_label,
        "delong": _delong_rows(oof_a, oof_b),
        "notes": _notes(a, b),
    })


def _difference(point: dict, draws: dict, label: str, metric: str) -> dict:
    ka, kb = ("a", label, metric), ("b", label, metric)
    d = draws[ka] - draws[kb]
    low, high, n_valid = percentile_interval(d, LEVEL)
    ok = d[np.isfinite(d)]
    p = min(1.0, 2 * min((ok <= 0).mean(), (ok >= 0).mean())) if len(ok) else math.nan
    return {"a": point[ka], "b": point[kb], "diff": point[ka] - point[kb], "ci_low": low, "ci_high": high,
            "p_value": p, "n_valid": n_valid}


def _delong_rows(oof_a: OOF, oof_b: OOF) -> list[dict]:
    if oof_a.task == "multiclass":
        return []
    rows = []
    for j, name in enumerate(oof_a.names):
        for r in np.unique(oof_a.repeat):
            m = (oof_a.repeat == r) & ~np.isnan(oof_a.y[:, j])
            try:
                res = delong_test(oof_a.y[m, j] == 1, oof_a.score[m, j], oof_b.score[m, j])
            except MedrecError as exc:
                res = {"error": str(exc)}
            rows.append({"label": name, "repeat": int(r), **res})
    return rows


def _notes(a: Run, b: Run) -> list[str]:
    notes = [
        f"Differences are A - B. CIs and p-values: paired percentile bootstrap over "
        f"{'patients' if a.unit_kind == 'patient' else 'images (no patient ids)'}, the same resamples for both runs; "
        "p = twice the share of resampled differences on the far side of zero.",
        "DeLong's test (AUROC) treats images as independent: with several images per patient its p-value is "
        "too small; prefer the bootstrap row for auroc then.",
        "Both runs use run A's eval settings, each at its own cross-fitted thresholds.",
    ]
    if a.cfg.eval != b.cfg.eval:
        notes.append("Run B's eval settings differ from run A's; run A's were used for both.")
    return notes


def to_markdown(result: dict) -> str:
    """A readable summary of `compare_runs`'s result; names, labels and messages from the runs are
    escaped (medrec.safetext) so they stay text."""
    a, b = md_text(result["run_a"]["name"]), md_text(result["run_b"]["name"])
    lines = [f"# Paired comparison: A = {a}, B = {b}", "",
             f"{result['n_images']} images × {result['n_repeats']} repeat(s), {result['n_units']} resampling units "
             f"({result['unit']}); {result['settings']['n_resamples']} resamples, "
             f"seed {result['settings']['seed']}.", ""]
    n = result["settings"]["n_resamples"]
    lines += _md_metrics(result["metrics"], n)
    for label, ms in result["per_label"].items():
        lines += ["", f"## {md_text(label)}", ""] + _md_metrics(ms, n)
    if result["delong"]:
        lines += ["", "## DeLong test for the AUROC difference", "",
                  "| label | repeat | AUROC A | AUROC B | diff | SE | z | p |", "|---|---|---|---|---|---|---|---|"]
        for d in result["delong"]:
            if "error" in d:
                lines.append(f"| {md_text(d['label'], cell=True)} | {d['repeat']} | "
                             f"{md_text(d['error'], cell=True)} ||||||")
                continue
            lines.append(f"| {md_text(d['label'], cell=True)} | {d['repeat']} | {_f(d['auc_a'])} | {_f(d['auc_b'])} | "
                         f"{_f(d['diff'])} | "
                         f"{_f(d['se'])} | {_f(d['z'], 2)} | {_p(d['p_value'])} |")
    lines += [""] + [f"- {md_text(n)}" for n in result["notes"]] + [""]
    return "\n".join(lines)


def _md_metrics(ms: dict, n_resamples: int) -> list[str]:
    out = ["| metric | A | B | A - B | 95% CI | p (bootstrap) |", "|---|---|---|---|---|---|"]
    for name, m in ms.items():
        ci = "—" if m["ci_low"] is None else f"{_f(m['ci_low'])} – {_f(m['ci_high'])}"
        p = m["p_value"]
        # no resampled difference crossed zero: the bootstrap only resolves p down to 2 / resamples
        p_text = f"< {2 / n_resamples:.2g}" if p == 0 and n_resamples else _p(p)
        out.append(f"| {md_text(name, cell=True)} | {_f(m['a'])} | {_f(m['b'])} | {_f(m['diff'])} | {ci} | {p_text} |")
    return out


def _f(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _p(v) -> str:
    if v is None:
        return "—"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"

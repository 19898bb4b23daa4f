"""How stable the operating point is, and rules that transfer better (issue 19 item 2).

A threshold tuned on one set of predictions moves when the patients change; on the next
hospital's data it moves more. Two things in the report make that visible:

- the bootstrap interval of the stored threshold itself: the rule re-applied to patient
  resamples of all out-of-fold predictions (vectorised: one weighted cumulative count per
  resample, the rule picking among the scores present in the resample);
- for a few rules side by side (the run's own, Youden, a target sensitivity, a target
  specificity), what each delivered on unseen folds: cross-fitted sensitivity and specificity
  with patient-bootstrap CIs. A target-sensitivity rule states its promise in the unit a
  clinician cares about; its cross-fitted sensitivity with CI says how well the promise held.
"""

from __future__ import annotations

import numpy as np

from medrec.config import EvalConfig, parse_operating_point
from medrec.eval.bootstrap import bootstrap, bootstrap_draws, percentile_interval
from medrec.eval.metrics import ranked_counts
from medrec.eval.oof import OOF, oof_statistic
from medrec.eval.thresholds import oof_thresholds, rule_indices

ALTERNATIVES = ("youden", "sensitivity:0.9", "specificity:0.9")
LEVEL = 0.95
METHOD = ("stored threshold: the rule re-applied to each patient resample of all out-of-fold predictions "
          "(percentile interval); sensitivity/specificity: cross-fitted (each fold's threshold chosen on the "
          "other folds), patient-bootstrap CIs")


def threshold_draws(y: np.ndarray, score: np.ndarray, rule: str, units: np.ndarray, *, n_resamples: int,
                    seed: int) -> tuple[float, np.ndarray]:
    """The threshold `rule` picks on (y, score) and on each patient resample (NaN where a resample
    has one class only). Rows with a NaN label are left out."""
    kind, value = parse_operating_point(rule)
    ok = ~np.isnan(y)
    y, score, units = y[ok] == 1, score[ok], units[ok]
    if kind == "fixed":
        return float(value), np.full(n_resamples, float(value))
    distinct = np.unique(score)[::-1]
    grid = np.r_[np.nextafter(distinct[0], np.inf), distinct]  # index 0: nothing called positive

    def stat(w: np.ndarray) -> dict:
        tp, fp, _ = ranked_counts(y, score, w)
        present = np.c_[np.ones((len(tp), 1), dtype=bool), np.diff(tp + fp, axis=1) > 0]
        idx = rule_indices(tp, fp, kind, value, present)
        return {("", "threshold"): np.where(idx >= 0, grid[np.maximum(idx, 0)], np.nan)}

    point, draws = bootstrap_draws(stat, units, n_resamples=n_resamples, seed=seed)
    return point[("", "threshold")], draws[("", "threshold")]


def _label_oof(oof: OOF, j: int) -> OOF:
    return OOF("binary", (oof.names[j],), oof.y[:, [j]], oof.score[:, [j]], oof.fold, oof.repeat, oof.unit)


def _rule_row(sub: OOF, rule: str, cfg: EvalConfig) -> dict:
    point, draws = threshold_draws(sub.y[:, 0], sub.score[:, 0], rule, sub.unit,
                                   n_resamples=cfg.bootstrap, seed=cfg.bootstrap_seed)
    low, high, n_valid = percentile_interval(draws, LEVEL)
    thresholds, _, _ = oof_thresholds(sub, rule)
    ci = bootstrap(oof_statistic(sub, thresholds, None), sub.unit, n_resamples=cfg.bootstrap, seed=cfg.bootstrap_seed)
    return {"label": sub.names[0], "rule": rule, "threshold": point,
            "threshold_interval": {"ci_low": low, "ci_high": high, "n_valid": n_valid},
            "sensitivity": ci[("", "sensitivity")], "specificity": ci[("", "specificity")]}


def threshold_stability(oof: OOF, cfg: EvalConfig) -> dict | None:
    """metrics.json's "threshold_stability": one row per (label, rule); None for multiclass
    (arg-max, no threshold). Binary runs also get the alternative rules; multilabel runs only
    their own rule per label, which keeps the cost at one bootstrap per label."""
    if oof.task == "multiclass":
        return None
    rules = [cfg.operating_point]
    if oof.task == "binary":
        rules = list(dict.fromkeys(rules + list(ALTERNATIVES)))
    rows = [_rule_row(_label_oof(oof, j), rule, cfg) for j in range(len(oof.names)) for rule in rules]
    return {"rule": cfg.operating_point, "method": METHOD, "rows": rows}

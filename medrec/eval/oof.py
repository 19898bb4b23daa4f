"""Out-of-fold predictions as arrays, and the run's metrics as a function of row weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrec.eval.metrics import Defined, Key, Statistic, defined_at_point, multiclass_block, multilabel_block


@dataclass(frozen=True)
class OOF:
    """Out-of-fold predictions as arrays.

    y/score: binary and multilabel (n, L) float (labels may be NaN); multiclass y (n,) int and
    score (n, K). `unit` is the bootstrap unit of each row (the patient id, or the image when
    the data has no patient ids).
    """

    task: str
    names: tuple[str, ...]
    y: np.ndarray
    score: np.ndarray
    fold: np.ndarray
    repeat: np.ndarray
    unit: np.ndarray

    def block(self, rows: np.ndarray, thresholds: np.ndarray | None, w: np.ndarray | None,
              n_bins: int | None, defined: Defined | None = None) -> dict[Key, np.ndarray]:
        """All metrics of the rows `rows` for each row of weights `w` (b, len(rows)); `defined`
        fixes the label set of macro averages (see `medrec.eval.metrics.multiclass_block`)."""
        if self.task == "multiclass":
            return multiclass_block(self.y[rows], self.score[rows], self.names, w, n_bins, defined)
        return multilabel_block(self.y[rows], self.score[rows], thresholds[rows], self.names, w, n_bins, defined)


def oof_statistic(oof: OOF, thresholds: np.ndarray | None, n_bins: int | None) -> Statistic:
    """The run's metrics as a function of row weights: per repeat, then averaged over repeats.

    Each repeat's macro averages keep the label set of that repeat's point estimate in every
    resample (computed once here, not per chunk of resamples).
    """
    groups = [np.flatnonzero(oof.repeat == r) for r in np.unique(oof.repeat)]
    defined = [defined_at_point(oof.block(rows, thresholds, None, n_bins)) for rows in groups]

    def stat(w: np.ndarray) -> dict[Key, np.ndarray]:
        parts = [oof.block(rows, thresholds, w[:, rows], n_bins, d) for rows, d in zip(groups, defined)]
        return {k: np.mean([p[k] for p in parts], axis=0) for k in parts[0]}

    return stat

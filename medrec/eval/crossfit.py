"""The cross-fitting loop shared by thresholds and temperature scaling.

Within each repeat, whatever is fitted for fold k (a threshold, a temperature) is fitted on the
other folds' rows and applied to fold k, so no row is scored with something fitted on itself.
A repeat with a single fold is a fixed validation set: there is nothing else to fit on, so it
is fitted on itself and marked optimistic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

OTHER_FOLDS = "other folds"
SAME_FOLD = "this fold (optimistic)"


@dataclass(frozen=True)
class FitSplit:
    """One (repeat, fold): the rows to fit on (`source`) and the rows to apply to (`target`)."""

    repeat: int
    fold: int
    source: np.ndarray  # bool mask over all rows
    target: np.ndarray  # bool mask over all rows

    @property
    def fitted_on(self) -> str:
        """"other folds", or "this fold (optimistic)" for a single-fold repeat."""
        return SAME_FOLD if np.array_equal(self.source, self.target) else OTHER_FOLDS


def crossfit_splits(fold: np.ndarray, repeat: np.ndarray | None = None) -> Iterator[FitSplit]:
    """Every (repeat, fold) with its fitting rows, in sorted order."""
    fold = np.asarray(fold)
    repeat = np.zeros(len(fold), dtype=int) if repeat is None else np.asarray(repeat)
    for r in np.unique(repeat):
        in_r = repeat == r
        folds = np.unique(fold[in_r])
        for k in folds:
            target = in_r & (fold == k)
            source = in_r & (fold != k) if len(folds) > 1 else target
            yield FitSplit(int(r), int(k), source, target)

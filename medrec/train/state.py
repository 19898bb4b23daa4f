"""The training state of one fold that a checkpoint carries between epochs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def is_better(metric: float, best: float | None, direction: str) -> bool:
    """Whether `metric` improves on `best` ("max" or "min"); NaN never improves on a number.

    The first finite-or-not value always counts as best, so a fold always has a best epoch.
    """
    if best is None:
        return True
    if math.isnan(metric):
        return False
    if math.isnan(best):
        return True
    return metric > best if direction == "max" else metric < best


@dataclass
class FoldState:
    """Where a fold is: last finished epoch, per-epoch history and the best epoch so far."""

    epoch: int = -1  # last finished epoch (0-based); -1 before the first
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the best one
    best_weights: dict[str, Any] | None = None  # kept only with early stopping (they double the checkpoint)
    seen: list[list[int]] = field(default_factory=list)  # distributed runs: sample order per epoch (not saved)

    def update_best(self, epoch: int, metric: float, es, weights: Callable[[], dict[str, Any]]) -> bool:
        """Record epoch `epoch`'s monitored metric; returns whether it is the new best.

        Args:
            es: the config's train.early_stopping (its `direction` and `patience`).
            weights: called for a copy of the weights, only when early stopping needs them.
        """
        if is_better(metric, self.best, es.direction):
            self.best, self.best_epoch, self.bad_epochs = metric, epoch, 0
            if es.patience is not None:
                self.best_weights = weights()
            return True
        self.bad_epochs += 1
        return False

    def stopped(self, patience: int | None) -> bool:
        """Early stopping: more than `patience` epochs without improvement."""
        return patience is not None and self.bad_epochs > patience

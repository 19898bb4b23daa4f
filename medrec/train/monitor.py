"""The per-epoch validation number that early stopping and the progress log watch."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

MONITORED = ("auroc", "accuracy", "loss")


def epoch_metric(labels: np.ndarray, scores: np.ndarray, task: str, name: str, *, val_loss: float) -> float:
    """`name` (auroc | accuracy | loss) on one validation pass; NaN when undefined (one class only).

    Multilabel AUROC is the macro mean over labels, each with its missing (NaN) labels masked.
    """
    if name == "loss":
        return float(val_loss)
    if name not in MONITORED:
        raise ValueError(f"train.early_stopping.metric '{name}' unknown; valid: {', '.join(MONITORED)}")
    if task == "multiclass":
        y = labels.astype(int).ravel()
        if name == "accuracy":
            return float(accuracy_score(y, scores.argmax(1)))
        if len(np.unique(y)) < scores.shape[1]:
            return float("nan")
        return float(roc_auc_score(y, scores, multi_class="ovr"))
    y = labels.reshape(len(labels), -1)
    s = scores.reshape(len(scores), -1)
    values = []
    for j in range(y.shape[1]):
        ok = ~np.isnan(y[:, j])
        yj, sj = y[ok, j], s[ok, j]
        if name == "accuracy":
            values.append(accuracy_score(yj, sj >= 0.5))
        elif len(np.unique(yj)) == 2:
            values.append(roc_auc_score(yj, sj))
    return float(np.mean(values)) if values else float("nan")


class Trackers:
    """Where per-epoch numbers go besides history.csv: TensorBoard and MLflow, each optional."""

    def __init__(self, tensorboard: Any = None, mlflow_run: Any = None) -> None:
        self.tensorboard, self.mlflow_run = tensorboard, mlflow_run

    def log_scalars(self, fold: int, row: dict[str, Any]) -> None:
        scalars = {f"fold_{fold}/{k}": float(v) for k, v in row.items()
                   if k != "epoch" and isinstance(v, (int, float))}
        if self.tensorboard is not None:
            for k, v in scalars.items():
                self.tensorboard.add_scalar(k, v, row["epoch"])
        if self.mlflow_run is not None:
            import mlflow

            mlflow.log_metrics({k.replace("/", "."): v for k, v in scalars.items()}, step=row["epoch"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.mlflow_run is not None:
            import mlflow

            mlflow.end_run()

"""Issue 15 item 3: the epoch is chosen on an inner split of the training fold, never on the reported fold."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medrec.config import EarlyStopping, validate_config
from medrec.data.splits import Split, inner_split, make_splits
from medrec.train.fold import FoldContext, _selection_split
from medrec.train.monitor import epoch_metric
from medrec.train.state import FoldState


class _Manifest:
    def __init__(self, table, labels):
        self.table, self.labels = table, labels


def toy(n_patients=60, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, n_patients)
    patients = np.repeat([f"P{i:03d}" for i in range(n_patients)], sizes)
    y = np.repeat(rng.random(n_patients) < 0.4, sizes).astype(float)
    return pd.DataFrame({"patient_id": patients, "label": y}), y


def test_the_selection_rows_come_from_the_training_fold_and_are_patient_grouped():
    table, y = toy()
    cfg = validate_config({"train": {"early_stopping": {"patience": 2, "inner_fraction": 0.2}}})
    ctx = FoldContext(cfg, _Manifest(table, y[:, None]), None, None, None, {}, {}, {})
    (split,) = [s for s in make_splits(table, y[:, None], "binary", cfg.cv, 0) if s.fold == 1]
    train, select, how = _selection_split(ctx, split)
    patients = table["patient_id"].to_numpy()
    assert set(train) | set(select) == set(split.train) and not set(train) & set(select)
    assert not set(select) & set(split.val)  # never the reported fold
    assert not set(patients[select]) & set(patients[train])
    assert how["monitored_on"] == "inner" and how["inner_fraction"] == 0.2
    off = validate_config({})
    assert list(_selection_split(FoldContext(off, ctx.manifest, None, None, None, {}, {}, {}), split)[0]) == list(split.train)


def _pooled_auroc(choose_on_reported: bool, seed: int) -> tuple[float, float]:
    """Pooled out-of-fold AUROC of the chosen epoch and of the last epoch when every epoch's scores are
    noise (all epochs equally good, true AUROC 0.5). The selection itself is medrec's (FoldState,
    epoch_metric, inner_split); only the training is simulated."""
    table, y = toy(seed=seed)
    rng = np.random.default_rng(seed + 100)
    epochs, es = 8, EarlyStopping(metric="auroc", patience=8)
    scores = rng.random((epochs, len(y)))  # scores[e, i]: image i as the epoch-e model sees it
    chosen, last = np.zeros(len(y)), np.zeros(len(y))
    for s in make_splits(table, y[:, None], "binary", validate_config({"cv": {"folds": 5}}).cv, seed):
        if choose_on_reported:
            monitor = s.val
        else:
            _, inner = inner_split(table.iloc[s.train], y[s.train, None], "binary", 0.15, seed)
            monitor = s.train[inner]
        state = FoldState()
        for e in range(epochs):
            m = epoch_metric(y[monitor, None], scores[e, monitor, None], "binary", "auroc", val_loss=0.0)
            state.update_best(e, m, es, weights=lambda e=e: e)
        chosen[s.val], last[s.val] = scores[state.best_weights, s.val], scores[-1, s.val]
    return roc_auc_score(y, chosen), roc_auc_score(y, last)


def test_early_stopping_on_equally_good_epochs_is_not_optimistic():
    old = np.array([_pooled_auroc(True, k) for k in range(12)])
    new = np.array([_pooled_auroc(False, k) for k in range(12)])
    # choosing on the reported fold inflates the pooled AUROC well above the last epoch's
    assert (old[:, 0] - old[:, 1]).mean() > 0.05
    # choosing on the inner split does not: the difference is within noise (SE of the mean ~0.015)
    diff = new[:, 0] - new[:, 1]
    assert abs(diff.mean()) < 3 * diff.std(ddof=1) / np.sqrt(len(diff)) + 0.01

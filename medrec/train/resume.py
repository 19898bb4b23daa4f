"""The splits a run trained on, kept in the run folder, and the check that a resumed run sees the same data.

`splits.csv` has one row per readable image: its path, image_id, patient_id, file sha256, whether
it is in the held-out test set, and its fold in every repeat (-1 for test images). `--resume`
rebuilds the splits from this file instead of drawing them again; if the readable images or
their content differ from what the file records, the run stops and says what changed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medrec.data.splits import Split
from medrec.errors import DataError

MAX_LISTED = 10


class DataChangedError(DataError):
    """The data of a run being resumed differs from the data its folds were drawn from."""


def splits_table(table: pd.DataFrame, hashes: list[str], keep: np.ndarray, test: np.ndarray,
                 splits: list[Split]) -> pd.DataFrame:
    """The splits.csv rows: readable images only (`keep`), their test flag and fold per repeat."""
    repeats = sorted({s.repeat for s in splits})
    folds = {r: np.full(len(table), -1, dtype=int) for r in repeats}
    for s in splits:
        folds[s.repeat][s.val] = s.fold
    out = pd.DataFrame({"path": table["path"].to_numpy(), "image_id": table["image_id"].to_numpy(),
                        "patient_id": table["patient_id"].to_numpy(), "sha256": hashes,
                        "test": test.astype(int)})
    for r in repeats:
        out[f"fold_r{r}"] = folds[r]
    return out[keep].reset_index(drop=True)


def splits_from_table(saved: pd.DataFrame, table: pd.DataFrame) -> tuple[list[Split], np.ndarray, np.ndarray]:
    """(splits, test mask, keep mask) in `table`'s row order, from a saved splits.csv."""
    pos = pd.Series(np.arange(len(table)), index=table["image_id"].to_numpy())
    rows = pos.loc[saved["image_id"].to_numpy()].to_numpy()
    keep = np.zeros(len(table), dtype=bool)
    keep[rows] = True
    test = np.zeros(len(table), dtype=bool)
    test[rows[saved["test"].to_numpy() == 1]] = True
    splits = []
    for col in sorted(c for c in saved.columns if c.startswith("fold_r")):
        repeat, fold_of = int(col[len("fold_r"):]), saved[col].to_numpy()
        cv = fold_of >= 0
        for k in sorted(set(fold_of[cv])):
            splits.append(Split(int(k), repeat, np.sort(rows[cv & (fold_of != k)]), np.sort(rows[fold_of == k])))
    return splits, test, keep


def changes(saved: pd.DataFrame, now: pd.DataFrame) -> list[str]:
    """What differs between the saved splits.csv rows and the readable images now (empty: same data)."""
    a = saved.set_index("image_id")
    b = now.set_index("image_id")
    added, removed = b.index.difference(a.index), a.index.difference(b.index)
    common = a.index.intersection(b.index)
    edited = common[a.loc[common, "sha256"].to_numpy() != b.loc[common, "sha256"].to_numpy()]
    moved = common[a.loc[common, "patient_id"].astype(str).to_numpy() != b.loc[common, "patient_id"].astype(str).to_numpy()]
    out = []
    old_patients, new_patients = set(a["patient_id"].astype(str)), set(b["patient_id"].astype(str))
    for what, ids in (("added", sorted(new_patients - old_patients)), ("removed", sorted(old_patients - new_patients))):
        if ids:
            out.append(f"{len(ids)} patient(s) {what}: {_listed(ids)}")
    for what, idx, frame in (("new readable", added, b), ("no longer readable or removed", removed, a),
                             ("with changed content", edited, b), ("with a changed patient_id", moved, b)):
        if len(idx):
            patients = sorted(set(frame.loc[idx, "patient_id"].astype(str)))
            out.append(f"{len(idx)} image(s) {what} (patients {_listed(patients)})")
    return out


def _listed(items: list[str]) -> str:
    more = f", ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def refuse_changed(run_dir, what: list[str]) -> None:
    """Raise DataChangedError listing `what` changed since the run's splits were drawn."""
    raise DataChangedError(
        f"--resume {run_dir}: the data differs from what this run's folds were drawn from: " + "; ".join(what)
        + ". Resuming would mix two data sets in one cross-validation. Restore the data, or rerun with "
        "--resume RUN --allow-changed-data to draw new splits into a new run folder.")

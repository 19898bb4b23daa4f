import numpy as np
import pandas as pd
import pytest

from medrec.config import CVConfig
from medrec.data.splits import Split, assert_no_patient_overlap, fixed_splits, holdout_mask, make_splits
from medrec.errors import LeakageError


def table(n_patients=30, seed=0, mixed=True):
    """Patients with 1-4 images; some patients have images with different labels."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        base = int(rng.random() < 0.4)
        for k in range(rng.integers(1, 5)):
            label = 1 - base if (mixed and p % 7 == 0 and k == 1) else base
            rows.append({"path": f"/x/p{p}_{k}.dcm", "patient_id": f"P{p:03d}", "label": label})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("repeats", [1, 2])
def test_no_patient_in_two_validation_sets_nor_in_train_and_val(seed, repeats):
    t = table(seed=seed)
    labels = t["label"].to_numpy(dtype=float)[:, None]
    splits = make_splits(t, labels, "binary", CVConfig(folds=5, repeats=repeats), seed)
    patients = t["patient_id"].to_numpy()
    assert len(splits) == 5 * repeats
    for r in range(repeats):
        folds = [s for s in splits if s.repeat == r]
        val_sets = [set(patients[s.val]) for s in folds]
        for i in range(5):
            assert not set(patients[folds[i].train]) & val_sets[i]
            for j in range(i + 1, 5):
                assert not val_sets[i] & val_sets[j]
        # every image is validated exactly once per repeat
        assert sorted(np.concatenate([s.val for s in folds])) == list(range(len(t)))
    assert_no_patient_overlap(patients, splits)


def test_patient_with_different_labels_never_straddles():
    t = table(seed=3)
    mixed = t.groupby("patient_id")["label"].nunique()
    assert (mixed > 1).any(), "the fixture must contain a patient with two labels"
    p = mixed[mixed > 1].index[0]
    splits = make_splits(t, t["label"].to_numpy(float)[:, None], "binary", CVConfig(folds=3), 0)
    rows = np.flatnonzero(t["patient_id"].to_numpy() == p)
    for s in splits:
        assert set(rows) <= set(s.train) or set(rows) <= set(s.val)


def test_hand_made_leaky_split_raises():
    t = table()
    patients = t["patient_id"].to_numpy()
    rows = np.flatnonzero(patients == patients[0])
    assert len(rows) >= 1
    leaky = Split(0, 0, np.arange(0, len(t) // 2), np.arange(len(t) // 2 - 1, len(t)))
    with pytest.raises(LeakageError, match="both train and validation"):
        assert_no_patient_overlap(patients, [leaky])
    twice = [Split(0, 0, np.arange(5, 10), np.arange(0, 5)), Split(1, 0, np.arange(0, 3), np.arange(3, 10))]
    with pytest.raises(LeakageError):
        assert_no_patient_overlap(patients, twice)


def test_stratification_keeps_label_balance():
    t = table(n_patients=60, mixed=False)
    splits = make_splits(t, t["label"].to_numpy(float)[:, None], "binary", CVConfig(folds=5), 0)
    overall = t["label"].mean()
    for s in splits:
        assert abs(t["label"].to_numpy()[s.val].mean() - overall) < 0.2


def test_multilabel_stratification_on_label_vector():
    rng = np.random.default_rng(0)
    t = table(n_patients=40)
    labels = rng.integers(0, 2, size=(len(t), 3)).astype(float)
    labels[rng.random(labels.shape) < 0.3] = np.nan
    splits = make_splits(t, labels, "multilabel", CVConfig(folds=4), 0)
    assert_no_patient_overlap(t["patient_id"].to_numpy(), splits)
    assert len(splits) == 4


def test_holdout_is_patient_disjoint_and_fixed_split_column():
    t = table(n_patients=40)
    mask = holdout_mask(t, t["label"].to_numpy(float)[:, None], "binary", 0.2, 0)
    assert 0.1 < mask.mean() < 0.35
    patients = t["patient_id"].to_numpy()
    assert not set(patients[mask]) & set(patients[~mask])
    t["split"] = np.where(np.arange(len(t)) % 4 == 0, "val", "train")
    (s,) = fixed_splits(t, "split")
    assert set(s.val) == set(np.flatnonzero(t["split"] == "val"))

"""Issue 18 item 5: the training DataLoader is built once per fold and reseeded per epoch, exactly."""

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.transforms import Randomizable
from torch.utils.data import Dataset, RandomSampler

from medrec.config import validate_config
from medrec.train.loader import TrainLoader


class RandomItems(Dataset, Randomizable):
    """Each item carries a draw from the dataset's own random state, as MONAI's random transforms do."""

    def __init__(self, n: int):
        self.indices = np.arange(100, 100 + n)
        self.R = np.random.RandomState()

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return {"i": i, "r": self.R.rand()}


def batches(loader):
    return [(b["i"].tolist(), b["r"].tolist()) for b in loader]


def cfg(workers: int):
    return validate_config({"data": {"augment": "none", "num_workers": workers, "persistent_workers": workers > 0},
                            "train": {"batch_size": 4}})


def test_without_workers_each_epoch_equals_a_loader_built_for_that_epoch():
    c = cfg(0)
    ds = RandomItems(10)
    once = TrainLoader(c, ds, None)
    for seed in (11, 12, 13):
        once.reseed(seed)
        got = batches(once)
        g = torch.Generator().manual_seed(seed)  # what the loop did before: a new loader every epoch
        fresh = DataLoader(ds, batch_size=4, sampler=RandomSampler(ds, generator=g), generator=g, drop_last=True)
        assert got == batches(fresh)
    assert batches(once) != (once.reseed(12), batches(once))[1]  # epochs differ


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_epoch_draws_what_the_uninterrupted_run_drew(workers):
    c = cfg(workers)
    run = TrainLoader(c, RandomItems(12), None)
    seen = []
    for seed in (5, 6, 7):
        run.reseed(seed)
        seen.append(batches(run))
    resumed = TrainLoader(c, RandomItems(12), None)  # a new process resumes at the third epoch
    resumed.reseed(7)
    assert batches(resumed) == seen[2]
    assert seen[0] != seen[1] != seen[2]
    assert resumed.order() == [] or sorted(resumed.order()) == list(range(100, 112))

"""The training DataLoader: built once per fold, reseeded at the start of every epoch.

Each epoch's sample order, random transforms and batch augmentation depend only on that epoch's
seed, so a run resumed at epoch k draws exactly what the uninterrupted run drew. Building the
loader once lets `data.persistent_workers` keep its worker processes between epochs; the epoch
seed reaches them through a shared-memory tensor, which each worker checks before its first
item of an epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from monai.data.utils import set_rnd
from torch.utils.data import Dataset, DistributedSampler, RandomSampler, WeightedRandomSampler, get_worker_info

from medrec.config import ExperimentConfig
from medrec.data.augment import batch_augment
from medrec.train import distributed as dist


def loader_kwargs(cfg: ExperimentConfig) -> dict[str, Any]:
    nw = cfg.data.num_workers
    return {"num_workers": nw, "pin_memory": cfg.data.pin_memory,
            "persistent_workers": cfg.data.persistent_workers and nw > 0}


def eval_loader(ds: Dataset, cfg: ExperimentConfig) -> DataLoader:
    return DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=False, **loader_kwargs(cfg))


class _EpochSeed:
    """The current epoch seed, shared with loader worker processes (fork or spawn)."""

    def __init__(self) -> None:
        self.value = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.seen: int | None = None  # per process: the seed this copy last reseeded for

    def changed(self) -> int | None:
        now = int(self.value.item())
        if now == self.seen:
            return None
        self.seen = now
        return now


class _SeededItems(Dataset):
    """The training dataset; in a worker, its random transforms are reseeded once per epoch."""

    def __init__(self, ds: Dataset, seed: _EpochSeed) -> None:
        self.ds, self.seed = ds, seed

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        info = get_worker_info()
        if info is not None:
            epoch_seed = self.seed.changed()
            if epoch_seed is not None:  # workers draw per-(epoch, worker) streams, as MONAI's worker_init_fn
                set_rnd(self.ds, (epoch_seed * 1000 + info.id + 1) % (2**32))
        return self.ds[i]


class _SeededCollate:
    """Batch augmentation (medrec.data.augment.batch_augment) rebuilt for each epoch's seed."""

    def __init__(self, cfg: ExperimentConfig, seed: _EpochSeed) -> None:
        self.cfg, self.seed, self.fn = cfg, seed, None

    def __call__(self, items: list[dict]) -> dict:
        epoch_seed = self.seed.changed()
        if epoch_seed is not None:
            self.fn = batch_augment(self.cfg.data, epoch_seed)
        return self.fn(items)


class TrainLoader:
    """Iterable over training batches; call `reseed(epoch_seed)` before each epoch."""

    def __init__(self, cfg: ExperimentConfig, train_ds, sample_weights: torch.Tensor | None) -> None:
        self.ds, self.gen, self.seed = train_ds, torch.Generator(), _EpochSeed()
        if dist.world_size() > 1:
            self.sampler = DistributedSampler(train_ds, shuffle=True, seed=0, drop_last=True)
        elif sample_weights is not None:
            self.sampler = WeightedRandomSampler(sample_weights, len(train_ds), replacement=True, generator=self.gen)
        else:
            self.sampler = RandomSampler(train_ds, generator=self.gen)
        has_collate = batch_augment(cfg.data, 0) is not None
        extra = {"collate_fn": _SeededCollate(cfg, self.seed)} if has_collate else {}
        self.workers = cfg.data.num_workers
        self.loader = DataLoader(_SeededItems(train_ds, self.seed), batch_size=cfg.train.batch_size,
                                 sampler=self.sampler, generator=self.gen,
                                 drop_last=len(train_ds) > cfg.train.batch_size, **loader_kwargs(cfg), **extra)

    def reseed(self, epoch_seed: int) -> None:
        """Everything random in the next epoch follows from `epoch_seed` alone."""
        self.gen.manual_seed(epoch_seed)
        self.seed.value.fill_(epoch_seed)
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.seed = epoch_seed
        if getattr(self.loader, "_iterator", None) is not None:
            # Persistent workers: torch reuses its iterator and skips the base-seed draw that a new
            # iterator takes from the generator first; take it here so the order matches a fresh start.
            torch.empty((), dtype=torch.int64).random_(generator=self.gen)
        if self.workers == 0:
            # What MONAI's DataLoader does at construction without workers: the transforms' seed is
            # the generator's first draw, and the generator is then reset to its seed.
            set_rnd(self.ds, int(torch.empty((), dtype=torch.int64).random_(generator=self.gen).item()))
            self.gen.manual_seed(epoch_seed)

    def order(self) -> list[int]:
        """The epoch's sample order (manifest rows): recorded for distributed runs' rank reports."""
        return [int(self.ds.indices[i]) for i in self.sampler]

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


def sample_weights(cfg: ExperimentConfig, labels: np.ndarray) -> torch.Tensor:
    """Inverse class-frequency weights for `class_weighting: sampler` (first label decides)."""
    if cfg.data.task == "multiclass":
        key = labels
    else:  # first label decides the stratum for the sampler; NaN counts as negative
        key = np.nan_to_num(labels.reshape(len(labels), -1)[:, 0]).astype(int)
    counts = np.bincount(key)
    return torch.as_tensor(1.0 / counts[key], dtype=torch.double)

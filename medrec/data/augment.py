"""Random affine augmentation of a whole batch at once (collate step of the training loader).

MONAI's per-item `RandAffined` builds a sampling grid for every image and ran in series with
the training step: on 2 CPU cores it cost 3-4% of a ResNet-18 @128 px epoch (benchmarks/README.md).
One `affine_grid` + `grid_sample` over the batch does the same rotation / scale / shift for a
fraction of that. Draws come from a generator seeded per (fold, epoch), so a resumed run
augments exactly like an uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate, get_worker_info

from medrec.config import DataConfig

# The ranges of the former per-item RandAffined: +-0.12 rad, +-10% scale, +-6% shift, p = 0.7.
PROB, ROTATE, SCALE, SHIFT = 0.7, 0.12, 0.1, 0.06


class BatchAffine:
    """collate_fn: stack the items, then rotate/scale/shift a random subset of the batch.

    Images arrive normalised; the border is filled with the normalised value of black (0 in
    windowed units), as the per-item transform did before normalisation.
    """

    def __init__(self, mean: list[float], std: list[float], seed: int):
        self.pad = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(1, -1, 1, 1)
        self.seed = seed
        self.gen = torch.Generator().manual_seed(seed)
        self.worker: int | None = None

    def __call__(self, items: list[dict]) -> dict:
        batch = default_collate(items)
        batch["image"] = self.apply(batch["image"])
        return batch

    def _generator(self) -> torch.Generator:
        info = get_worker_info()
        if info is not None and self.worker != info.id:  # each loader worker draws its own stream
            self.worker = info.id
            self.gen = torch.Generator().manual_seed(self.seed * 1000 + info.id + 1)
        return self.gen

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        u = torch.rand(n, 5, generator=self._generator())
        chosen = u[:, 4] < PROB
        if not chosen.any():
            return x
        angle = (u[chosen, 0] * 2 - 1) * ROTATE
        scale = 1 + (u[chosen, 1] * 2 - 1) * SCALE
        shift = (u[chosen, 2:4] * 2 - 1) * (2 * SHIFT)  # normalised coordinates span 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        sub = x[chosen].float()
        grid = F.affine_grid(theta.to(sub), list(sub.shape), align_corners=False)
        pad = self.pad.to(sub)
        out = x.clone()
        out[chosen] = (F.grid_sample(sub - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
                       + pad).to(x.dtype)
        return out


def batch_augment(cfg: DataConfig, mean: list[float], std: list[float], seed: int) -> BatchAffine | None:
    """The collate_fn for training batches, or None when `data.augment: none`."""
    return None if cfg.augment == "none" else BatchAffine(mean, std, seed)

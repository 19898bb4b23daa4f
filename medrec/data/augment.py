"""Random rotation, zoom, shift and shear of a whole batch at once (collate step of the training loader).

MONAI's per-item `RandAffined` builds a sampling grid for every image and ran in series with
the training step: on 2 CPU cores it cost 3-4% of a ResNet-18 @128 px epoch (benchmarks/README.md).
One `affine_grid` + `grid_sample` over the batch does the same for a fraction of that. The
ranges come from `data.augment` (rotate, zoom, affine), each with its own probability. Draws
come from a generator seeded per (fold, epoch), so a resumed run augments exactly like an
uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate, get_worker_info

from medrec.config import GEOMETRY_AUGMENTS, AffineAug, DataConfig, RotateAug, ZoomAug

# Columns of the per-image uniform draws: a gate and the value(s) of each transform.
_ROT_GATE, _ROT, _ZOOM_GATE, _ZOOM, _AFF_GATE, _SHIFT_X, _SHIFT_Y, _SHEAR = range(8)


class BatchAffine:
    """collate_fn: stack the items, then rotate / zoom / shift / shear a random subset of the batch.

    The border that a rotation or a shrink exposes is filled with each image's own minimum
    per channel (air, the black of a windowed image), never with a value the image lacks.
    """

    def __init__(self, seed: int, rotate: RotateAug | None = None, zoom: ZoomAug | None = None,
                 affine: AffineAug | None = None):
        self.rotate, self.zoom, self.affine = rotate, zoom, affine
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

    def thetas(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(which images change (n,), their 2x3 sampling matrices (m, 2, 3)) for a batch of n."""
        u = torch.rand(n, 8, generator=self._generator(), dtype=torch.float64)
        sym = u * 2 - 1  # uniform in [-1, 1]
        angle, zoom = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
        shift, shear = torch.zeros(n, 2, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        chosen = torch.zeros(n, dtype=torch.bool)
        if self.rotate is not None:
            on = u[:, _ROT_GATE] < self.rotate.prob
            angle = torch.where(on, sym[:, _ROT] * math.radians(self.rotate.degrees), angle)
            chosen |= on
        if self.zoom is not None:
            on = u[:, _ZOOM_GATE] < self.zoom.prob
            lo, hi = self.zoom.range
            zoom = torch.where(on, lo + u[:, _ZOOM] * (hi - lo), zoom)
            chosen |= on
        if self.affine is not None:
            on = u[:, _AFF_GATE] < self.affine.prob
            # normalised coordinates span 2, so a shift of s image sides is 2s
            shift = torch.where(on[:, None], sym[:, [_SHIFT_X, _SHIFT_Y]] * 2 * self.affine.shift, shift)
            shear = torch.where(on, sym[:, _SHEAR] * self.affine.shear, shear)
            chosen |= on
        # theta maps output to input coordinates: rotate, shear, then divide by the zoom (> 1 magnifies).
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        sh = torch.eye(2, dtype=torch.float64).repeat(n, 1, 1)
        sh[:, 0, 1] = shear
        lin = rot @ sh / zoom[:, None, None]
        theta = torch.cat([lin, shift[:, :, None]], 2)
        return chosen, theta[chosen].float()

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        chosen, theta = self.thetas(x.shape[0])
        if not chosen.any():
            return x
        sub = x[chosen].float()
        pad = sub.amin(dim=(2, 3), keepdim=True)
        grid = F.affine_grid(theta.to(sub), list(sub.shape), align_corners=False)
        out = x.clone()
        out[chosen] = (F.grid_sample(sub - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
                       + pad).to(x.dtype)
        return out


def batch_augment(cfg: DataConfig, seed: int) -> BatchAffine | None:
    """The collate_fn for training batches, or None when `data.augment` has no rotate / zoom / affine."""
    items = cfg.augment.resolved(cfg.modality)
    geo = {k: items.get(k) for k in GEOMETRY_AUGMENTS}
    return BatchAffine(seed, **geo) if any(v is not None for v in geo.values()) else None

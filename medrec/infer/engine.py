"""The inference engine: images preprocessed as in training, batched, scored by every fold model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medrec.models.inference import autocast_context, scores_from_logits

if TYPE_CHECKING:
    from medrec.infer.ensemble import Ensemble


class ImageDataset(torch.utils.data.Dataset):
    """Images preprocessed exactly as for training, then normalised for the network.

    An image that cannot be read yields {"index", "error"} instead of raising, so one bad
    file never stops a batch job.
    """

    def __init__(self, paths: list[str], ens: Ensemble, *, keep_geometry: bool = False,
                 slices: list[int | None] | None = None):
        from medrec.data.transforms import eval_transforms, preprocess_transforms

        self.paths = list(paths)
        self.slices = list(slices) if slices is not None else [None] * len(self.paths)
        self.pre = preprocess_transforms(ens.cfg.data.model_copy(update={"skip_bad_images": True}))
        self.finish = eval_transforms(ens.cfg.data, ens.norm["mean"], ens.norm["std"], ens.cfg.model.in_channels)
        self.keep_geometry = keep_geometry
        # data.context_slices: each image stacked with its neighbours, as in training (medrec.data.context)
        self.contexts = None
        if ens.cfg.data.context_slices > 0:
            import pandas as pd

            from medrec.data.context import context_refs

            table = pd.DataFrame({"path": self.paths, "slice": [-1 if k is None else k for k in self.slices]})
            self.contexts = context_refs(table, ens.cfg.data.context_slices, ens.cfg.data.slice)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from medrec.data.transforms import ERROR_KEY, READ_KEY

        try:
            k = self.slices[i]
            item = {"image": self.paths[i], "slice": -1 if k is None else k}
            if self.contexts is not None:
                item["context"] = [[p, -1 if s is None else s] for p, s in self.contexts[i]]
            item = self.pre(item)
            if ERROR_KEY in item:
                return {"index": i, "error": item[ERROR_KEY]}
            out = {"index": i, "image": self.finish({"image": item["image"]})["image"],
                   "conversion": item.get(READ_KEY, "grey")}  # how it was read (grey, rgb_near_grey, ...)
        except Exception as exc:  # e.g. an image that reads but cannot be resized; reported, not fatal
            return {"index": i, "error": f"{type(exc).__name__}: {exc}"}
        if self.keep_geometry:
            out["ops"] = [dict(op) for op in item["image"].applied_operations]
        return out


def collate(batch: list[dict]) -> dict[str, Any]:
    """Stack the readable images; keep the read errors aside."""
    good = [b for b in batch if "image" in b]
    return {"image": torch.stack([b["image"] for b in good]) if good else None,
            "index": [b["index"] for b in good], "ops": [b.get("ops") for b in good],
            "errors": [(b["index"], b["error"]) for b in batch if "error" in b],
            "conversions": [(b["index"], b["conversion"]) for b in good if b.get("conversion", "grey") != "grey"]}


def make_loader(dataset: ImageDataset, batch_size: int, workers: int, device: torch.device):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       collate_fn=collate, pin_memory=device.type == "cuda")


def score_batch(models: list[nn.Module], x: torch.Tensor, task: str, *, tta: str = "none", amp: str = "none",
                channels_last: bool = False) -> torch.Tensor:
    """Probabilities of each model on a batch: (models, batch, outputs), float32.

    With tta="flip" each model's probabilities are the mean over x and its left-right mirror.
    Call under torch.inference_mode().
    """
    views = [x] if tta == "none" else [x, torch.flip(x, dims=(-1,))]
    if channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    out = []
    for model in models:
        probs = 0
        for v in views:
            with autocast_context(v.device, amp):
                logits = model(v)
            probs = probs + scores_from_logits(logits.float(), task)
        out.append(probs / len(views))
    return torch.stack(out)


def predict_batches(models: list[nn.Module], batches, task: str, *, device: torch.device, tta: str = "none",
                    amp: str = "none", channels_last: bool = False, on_batch=None):
    """Run `score_batch` over an iterable of collated batches (or plain tensors).

    Returns:
        (scores (models, n, outputs) float32 numpy, dataset indices of the n rows, read errors).
    """
    scores, index, errors, seen = [], [], [], 0
    with torch.inference_mode():
        for batch in batches:
            if isinstance(batch, torch.Tensor):
                batch = {"image": batch, "index": list(range(seen, seen + len(batch))), "errors": []}
                seen += len(batch["index"])
            errors += batch["errors"]
            if batch["image"] is not None:
                x = batch["image"].to(device, non_blocking=True)
                scores.append(score_batch(models, x, task, tta=tta, amp=amp, channels_last=channels_last).cpu())
                index.append(batch["index"])
            if on_batch is not None:
                on_batch(len(batch["index"]) + len(batch["errors"]))
    n_out = scores[0].shape[-1] if scores else 0
    all_scores = torch.cat(scores, dim=1).numpy() if scores else np.zeros((len(models), 0, n_out), np.float32)
    return all_scores, [i for part in index for i in part], errors


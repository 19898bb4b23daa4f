"""One epoch of training, one pass of evaluation, and the task-specific loss."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medrec.config import TrainConfig
from medrec.models.inference import autocast_context, scores_from_logits  # noqa: F401  (re-exported)


@dataclass
class TaskLoss:
    """Loss for binary / multiclass / multilabel outputs; NaN labels are masked out (multilabel)."""

    task: str
    pos_weight: torch.Tensor | None = None  # binary/multilabel: per-output positive weight
    class_weight: torch.Tensor | None = None  # multiclass
    label_smoothing: float = 0.0

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "multiclass":
            return nn.functional.cross_entropy(logits, target.long().view(-1), weight=self.class_weight,
                                               label_smoothing=self.label_smoothing)
        target = target.float().view_as(logits)
        mask = ~torch.isnan(target)
        target = torch.where(mask, target, torch.zeros_like(target))
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight,
                                                              reduction="none")
        return (loss * mask).sum() / mask.sum().clamp(min=1)


def _to_device(batch: dict, device: torch.device, channels_last: bool):
    x = batch["image"].to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, batch["label"].to(device, non_blocking=True)


def train_one_epoch(model, loader, optimizer, scheduler, loss_fn: TaskLoss, cfg: TrainConfig, *,
                    device: torch.device, aux_weight: float, scaler=None, on_batch=None) -> dict:
    """Train for one pass over `loader`; the scheduler steps per batch.

    Returns mean loss, images/s and the last learning rate.
    """
    from medrec.models.build import combined_loss
    from medrec.models.freeze import train_mode

    train_mode(model)  # model.train(), but fully frozen BatchNorm layers keep their statistics
    total, n, start = 0.0, 0, time.perf_counter()
    for batch in loader:
        x, y = _to_device(batch, device, cfg.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, cfg.amp):
            loss = combined_loss(loss_fn, model(x), y, aux_weight)
        _backward_step(loss, model, optimizer, cfg, scaler)
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(x)
        n += len(x)
        if on_batch is not None:
            on_batch(loss.item(), optimizer.param_groups[0]["lr"], n / (time.perf_counter() - start))
    seconds = time.perf_counter() - start
    return {"loss": total / max(n, 1), "images_per_s": n / max(seconds, 1e-9),
            "lr": optimizer.param_groups[0]["lr"], "seconds": seconds}


def _backward_step(loss, model, optimizer, cfg: TrainConfig, scaler) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        return
    loss.backward()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()


@torch.inference_mode()
def evaluate(model, loader, loss_fn: TaskLoss, *, device: torch.device, task: str, amp: str = "none",
             channels_last: bool = False) -> dict:
    """Scores, labels and manifest row indices for every item of `loader`, plus the mean loss."""
    model.eval()
    scores, labels, index, total, n = [], [], [], 0.0, 0
    for batch in loader:
        x, y = _to_device(batch, device, channels_last)
        with autocast_context(device, amp):
            logits = model(x)
        logits = logits.float()
        total += loss_fn(logits, y).item() * len(x)
        n += len(x)
        scores.append(scores_from_logits(logits, task).cpu().numpy())
        labels.append(batch["label"].numpy())
        index.append(np.asarray(batch["index"]))
    return {"scores": np.concatenate(scores), "labels": np.concatenate(labels),
            "index": np.concatenate(index), "loss": total / max(n, 1)}

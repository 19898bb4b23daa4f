"""Training of one cross-validation fold, resumable at every finished epoch.

Model selection: with early stopping (`train.early_stopping.patience`), the epoch is chosen on an
inner, patient-grouped split of the training fold (`inner_fraction` of its patients, never the
fold whose out-of-fold predictions are reported); the network trains on the rest. Without early
stopping the last epoch is reported and the per-epoch validation numbers are for display only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medrec import runfolder as rf
from medrec.config import ExperimentConfig
from medrec.data.datasets import FoldDataset
from medrec.data.manifest import Manifest
from medrec.data.splits import Split, inner_split
from medrec.data.transforms import eval_transforms, train_transforms
from medrec.fileio import atomic_write_text
from medrec.errors import CheckpointError
from medrec.runfolder import Checkpoint, CheckpointMeta, TrainState
from medrec.train import distributed as dist
from medrec.train.checkpoint import rng_state
from medrec.train.loader import TrainLoader, eval_loader, sample_weights
from medrec.train.loop import TaskLoss, evaluate, train_one_epoch
from medrec.train.monitor import Trackers, epoch_metric
from medrec.train.state import FoldState

log = logging.getLogger(__name__)


@dataclass
class FoldContext:
    """What every fold shares: config, data, device, output folder and the model's facts."""

    cfg: ExperimentConfig
    manifest: Manifest
    base: Any  # the cached base dataset
    run_dir: Path
    device: torch.device
    norm: dict[str, list[float]]
    arch: dict[str, Any]
    provenance: dict[str, Any]
    model_cfg: Any = None  # cfg.model with the weights already resolved (no repeated lookups per fold)
    progress: Any = None  # callable(fold_label, epoch, n_batches) -> tqdm-like or None
    trackers: Trackers = field(default_factory=Trackers)


@dataclass
class FoldParts:
    """The objects one fold trains with."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: TaskLoss
    scaler: Any  # torch.amp.GradScaler for fp16 on CUDA, else None
    train: TrainLoader
    val_loader: Any  # the reported fold
    select_loader: Any  # the inner selection split (early stopping), else None
    selection: dict[str, Any]  # how the reported epoch is chosen, for run.json and the report


def fold_dir(run_dir: Path, split: Split) -> Path:
    return rf.fold_dir(run_dir, split.fold, split.repeat)


def derived_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers, so each (repeat, fold, epoch) has its own stream."""
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes()) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def is_fold_done(run_dir: Path, split: Split) -> bool:
    return rf.is_fold_done(run_dir, split.fold, split.repeat)


def train_fold(ctx: FoldContext, split: Split) -> pd.DataFrame:
    """Train one fold (resuming from its last finished epoch) and return its out-of-fold rows."""
    cfg, out = ctx.cfg, fold_dir(ctx.run_dir, split)
    seed_everything(derived_seed(cfg.seed, split.repeat, split.fold))
    parts = _setup(ctx, split)
    state = FoldState()
    if (out / rf.LAST_PT).exists():
        state = _restore(out / rf.LAST_PT, parts)
        log.info("fold %d: resuming after epoch %d", split.fold, state.epoch + 1)
    for epoch in range(state.epoch + 1, cfg.train.epochs):
        if state.stopped(cfg.train.early_stopping.patience):
            break
        _run_epoch(ctx, split, parts, state, epoch)
        _save_epoch(ctx, split, parts, state)
        # Logged only once the checkpoint is on disk: a logged epoch is never trained twice.
        log.info("fold %d epoch %d done: %s", split.fold, epoch + 1,
                 ", ".join(f"{k}={v:.4g}" for k, v in state.history[-1].items() if isinstance(v, float)))
    return _finish_fold(ctx, split, parts, state)


def _setup(ctx: FoldContext, split: Split) -> FoldParts:
    from medrec.models.build import build_model
    from medrec.models.freeze import param_groups

    cfg = ctx.cfg
    model, _ = build_model(ctx.model_cfg or cfg.model, num_outputs=ctx.manifest.num_outputs)
    model = model.to(ctx.device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = dist.wrap_model(model, ctx.device)
    train_rows, select_rows, selection = _selection_split(ctx, split)
    labels = ctx.manifest.labels
    loss_fn = _make_loss(cfg, labels[train_rows], ctx.device)
    train_ds = FoldDataset(ctx.base, train_rows, train_transforms(cfg.data, ctx.norm["mean"], ctx.norm["std"],
                                                                  cfg.model.in_channels))
    weights = sample_weights(cfg, labels[train_rows]) if cfg.train.class_weighting == "sampler" else None
    optimizer = _make_optimizer(cfg, param_groups(dist.unwrap(model), cfg.model, cfg.train.lr))
    steps = math.ceil(len(train_ds) / dist.world_size() / cfg.train.batch_size)
    # fp16 autocast needs loss scaling on CUDA; bf16 and fp32 do not.
    use_scaler = cfg.train.amp == "fp16" and ctx.device.type == "cuda"
    return FoldParts(model, optimizer, _make_scheduler(cfg, optimizer, steps), loss_fn,
                     torch.amp.GradScaler("cuda") if use_scaler else None, TrainLoader(cfg, train_ds, weights),
                     _eval_loader(ctx, split.val), _eval_loader(ctx, select_rows) if len(select_rows) else None,
                     selection)


def _eval_loader(ctx: FoldContext, rows: np.ndarray):
    cfg = ctx.cfg
    tf = eval_transforms(cfg.data, ctx.norm["mean"], ctx.norm["std"], cfg.model.in_channels)
    return eval_loader(FoldDataset(ctx.base, rows, tf), cfg)


def _selection_split(ctx: FoldContext, split: Split) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(rows to train on, inner rows to choose the epoch on, how the epoch is chosen)."""
    es = ctx.cfg.train.early_stopping
    if es.patience is None:
        return split.train, np.array([], dtype=int), {
            "rule": "last epoch", "monitored_on": None,
            "note": "no early stopping: the last epoch is reported; validation numbers per epoch are display only"}
    t = ctx.manifest.table
    seed = derived_seed(ctx.cfg.seed, split.repeat, split.fold, 77)
    inner_train, inner_val = inner_split(t.iloc[split.train], ctx.manifest.labels[split.train], ctx.cfg.data.task,
                                         es.inner_fraction, seed)
    rows_train, rows_val = split.train[inner_train], split.train[inner_val]
    return rows_train, rows_val, {
        "rule": f"best {es.metric} ({es.direction}) with patience {es.patience}", "monitored_on": "inner",
        "inner_fraction": es.inner_fraction, "n_inner_train": int(len(rows_train)), "n_inner_val": int(len(rows_val)),
        "inner_patients": int(t["patient_id"].iloc[rows_val].nunique()),
        "note": "epoch chosen on a patient-grouped inner split of the training fold; the network trains on the "
                "rest; the reported fold is never seen before its out-of-fold predictions"}


def _make_loss(cfg: ExperimentConfig, train_labels: np.ndarray, device: torch.device) -> TaskLoss:
    """Class weights from the training fold's own label frequencies (never the validation fold's)."""
    task, pos_weight, class_weight = cfg.data.task, None, None
    if cfg.train.class_weighting == "pos_weight":
        if task == "multiclass":
            counts = np.bincount(train_labels, minlength=int(train_labels.max()) + 1).astype(np.float64)
            class_weight = torch.tensor(len(train_labels) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)
        else:
            pos = np.nansum(train_labels, axis=0)
            neg = np.sum(~np.isnan(train_labels), axis=0) - pos
            pos_weight = torch.tensor(neg / np.maximum(pos, 1), dtype=torch.float32)
    to = (lambda t: t.to(device) if t is not None else None)
    return TaskLoss(task, to(pos_weight), to(class_weight), cfg.train.label_smoothing)


def _make_optimizer(cfg: ExperimentConfig, groups: list[dict]) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True)
    return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)


def _make_scheduler(cfg: ExperimentConfig, optimizer, steps_per_epoch: int):
    """Per-batch schedules: cosine with linear warmup, or one-cycle."""
    t, total = cfg.train, max(1, steps_per_epoch * cfg.train.epochs)
    if t.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=total)
    if t.scheduler == "none":
        return None
    warm = int(t.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _run_epoch(ctx: FoldContext, split: Split, parts: FoldParts, state: FoldState, epoch: int) -> None:
    from medrec.models.freeze import apply_freeze

    cfg = ctx.cfg
    seed = derived_seed(cfg.seed, split.repeat, split.fold, epoch)
    seed_everything(seed)
    apply_freeze(dist.unwrap(parts.model), cfg.model, epoch)
    parts.train.reseed(seed)
    if dist.world_size() > 1:  # the order depends only on the seed: safe to record
        state.seen.append(parts.train.order())
    bar = ctx.progress(split, epoch, len(parts.train)) if ctx.progress else None
    on_batch = (lambda loss, lr, ips: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}",
                                                                       img_s=f"{ips:.0f}"))) if bar else None
    stats = train_one_epoch(parts.model, parts.train, parts.optimizer, parts.scheduler, parts.loss_fn, cfg.train,
                            device=ctx.device, aux_weight=cfg.model.aux_weight, scaler=parts.scaler,
                            on_batch=on_batch)
    if bar:
        bar.close()
    dist.sync_buffers(parts.model)
    precise_bn(ctx, parts.model, parts.train.ds.indices)
    row, metric = _epoch_row(ctx, parts, epoch, stats)
    state.history.append(row)
    state.update_best(epoch, metric, cfg.train.early_stopping,
                      weights=lambda: {k: v.detach().clone() for k, v in dist.unwrap(parts.model).state_dict().items()})
    state.epoch = epoch
    ctx.trackers.log_scalars(split.fold, row)


def _epoch_row(ctx: FoldContext, parts: FoldParts, epoch: int, stats: dict) -> tuple[dict, float]:
    """history.csv row: the monitored numbers come from the inner split when there is one."""
    cfg, name = ctx.cfg, ctx.cfg.train.early_stopping.metric
    loader = parts.select_loader if parts.select_loader is not None else parts.val_loader
    val = _evaluate_all(ctx, parts.model, parts.loss_fn, loader)
    metric = epoch_metric(val["labels"], val["scores"], cfg.data.task, name, val_loss=val["loss"])
    row = {"epoch": epoch, "train_loss": stats["loss"], "val_loss": val["loss"], f"val_{name}": metric,
           "lr": stats["lr"], "images_per_s": stats["images_per_s"], "seconds": stats["seconds"]}
    if parts.select_loader is not None:
        row["monitored_on"] = "inner"
    return row, metric


def precise_bn(ctx: FoldContext, model, train_indices: np.ndarray) -> None:
    """Recompute BatchNorm statistics as exact averages over un-augmented training batches.

    The running averages that training leaves behind lag the weights: from random init at a
    high learning rate they can be so far off that every validation score collapses towards 0
    (on data_samples: mean score 1e-4, pooled AUROC 0.86; recomputed: mean 0.5, AUROC 0.94), and
    folds then disagree on the score scale that pooled metrics need. Layers whose parameters are
    all frozen keep their statistics. Deterministic: same batches in the same order every time.
    """
    cfg, net = ctx.cfg, dist.unwrap(model)
    n_batches = cfg.train.precise_bn_batches
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
           and any(p.requires_grad for p in m.parameters(recurse=False))]
    if n_batches == 0 or not bns:
        return
    loader = _eval_loader(ctx, np.sort(train_indices))
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    net.train()
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= n_batches:
                break
            x = batch["image"].to(ctx.device)
            net(x.contiguous(memory_format=torch.channels_last) if cfg.train.channels_last else x)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    net.eval()


def _evaluate_all(ctx: FoldContext, model, loss_fn, loader) -> dict:
    return evaluate(dist.unwrap(model), loader, loss_fn, device=ctx.device, task=ctx.cfg.data.task,
                    amp=ctx.cfg.train.amp, channels_last=ctx.cfg.train.channels_last)


def _meta(ctx: FoldContext, split: Split, state: FoldState, selection: dict) -> CheckpointMeta:
    return CheckpointMeta(
        task=ctx.cfg.data.task, label_names=list(ctx.manifest.class_names), num_outputs=ctx.manifest.num_outputs,
        normalization=ctx.norm, config=ctx.cfg.to_dict(), arch=ctx.arch, provenance=ctx.provenance,
        fold=split.fold, repeat=split.repeat, epoch=state.epoch, history=state.history, best=state.best,
        best_epoch=state.best_epoch, bad_epochs=state.bad_epochs, selection=selection)


def _save_epoch(ctx: FoldContext, split: Split, parts: FoldParts, state: FoldState) -> None:
    if not dist.is_main():
        return
    train_state = TrainState(optimizer=parts.optimizer.state_dict(),
                             scheduler=parts.scheduler.state_dict() if parts.scheduler is not None else None,
                             scaler=parts.scaler.state_dict() if parts.scaler is not None else None,
                             rng=rng_state(), best_weights=state.best_weights)
    out = fold_dir(ctx.run_dir, split)
    rf.save_checkpoint(out / rf.LAST_PT, Checkpoint(_meta(ctx, split, state, parts.selection),
                                                    dist.unwrap(parts.model).state_dict(), train_state))
    atomic_write_text(out / "history.csv", pd.DataFrame(state.history).to_csv(index=False))


def _restore(path: Path, parts: FoldParts) -> FoldState:
    ckpt = rf.load_checkpoint(path)
    ts = ckpt.train_state
    if ts is None:
        raise CheckpointError(f"{path}: no training state (optimizer, scheduler) to resume from; not a last.pt")
    if parts.scaler is not None and ts.scaler:
        parts.scaler.load_state_dict(ts.scaler)
    dist.unwrap(parts.model).load_state_dict(ckpt.model)
    parts.optimizer.load_state_dict(ts.optimizer)
    if parts.scheduler is not None and ts.scheduler is not None:
        parts.scheduler.load_state_dict(ts.scheduler)
    m = ckpt.meta
    return FoldState(epoch=m.epoch, history=list(m.history), best=m.best, best_epoch=m.best_epoch,
                     bad_epochs=m.bad_epochs, best_weights=ts.best_weights)


def _rank_report(ctx: FoldContext, split: Split, net, state: FoldState) -> None:
    """Diagnostics for distributed runs (env MEDREC_RANK_REPORT=DIR): what each rank trained on
    and a checksum of its final weights, so a test can prove DDP kept the ranks in step."""
    where = os.environ.get("MEDREC_RANK_REPORT")
    if not where:
        return
    digest = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        digest.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    report = {"rank": dist.rank(), "world_size": dist.world_size(), "fold": split.fold,
              "seen": state.seen, "weights_sha256": digest.hexdigest()}
    Path(where).mkdir(parents=True, exist_ok=True)
    Path(where, f"rank{dist.rank()}_fold{split.fold}.json").write_text(json.dumps(report))


def _finish_fold(ctx: FoldContext, split: Split, parts: FoldParts, state: FoldState) -> pd.DataFrame:
    """Out-of-fold predictions from the final weights (the best epoch's when early stopping is on)."""
    net = dist.unwrap(parts.model)
    _rank_report(ctx, split, net, state)
    selection = dict(parts.selection)
    if ctx.cfg.train.early_stopping.patience is not None and state.best_weights is not None:
        net.load_state_dict(state.best_weights)
        selection |= {"epoch": state.best_epoch, "epochs_trained": state.epoch + 1}
    else:
        selection |= {"epoch": state.epoch, "epochs_trained": state.epoch + 1}
    val = _evaluate_all(ctx, parts.model, parts.loss_fn, parts.val_loader)
    rows = oof_rows(ctx.manifest, val, split)
    if dist.is_main():
        rf.save_checkpoint(fold_dir(ctx.run_dir, split) / rf.BEST_PT,
                           Checkpoint(_meta(ctx, split, state, selection), net.state_dict()))
        rf.write_fold_oof(ctx.run_dir, split.fold, split.repeat, rows)
    return rows


def oof_rows(manifest: Manifest, val: dict, split: Split) -> pd.DataFrame:
    """Rows of the out-of-fold predictions CSV for one fold (see the README's run-folder format)."""
    t = manifest.table.iloc[val["index"]]
    rows = pd.DataFrame({"path": t["path"].to_numpy(), "image_id": t["image_id"].to_numpy(),
                         "patient_id": t["patient_id"].to_numpy(), "fold": split.fold, "repeat": split.repeat})
    if "slice" in t.columns:  # the slice of a volume (data.slice: all, or a manifest's slice column)
        rows.insert(2, "slice", t["slice"].to_numpy())
    scores = val["scores"].reshape(len(rows), -1)
    if manifest.task == "binary":
        rows["label"] = t[manifest.label_columns[0]].to_numpy()
        rows["score"] = scores[:, 0]
    elif manifest.task == "multiclass":
        rows["label"] = t[manifest.label_columns[0]].to_numpy()
        for j, name in enumerate(manifest.class_names):
            rows[f"score_{name}"] = scores[:, j]
    else:
        for j, name in enumerate(manifest.label_columns):
            rows[f"label_{name}"] = t[name].to_numpy()
            rows[f"score_{name}"] = scores[:, j]
    return rows

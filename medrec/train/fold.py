"""Training of one cross-validation fold, resumable at every finished epoch."""

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
from monai.data import DataLoader
from torch.utils.data import DistributedSampler, RandomSampler, WeightedRandomSampler

from medrec.config import ExperimentConfig
from medrec.data.augment import batch_augment
from medrec.data.datasets import FoldDataset
from medrec.data.manifest import Manifest
from medrec.data.splits import Split
from medrec.data.transforms import eval_transforms, train_transforms
from medrec.train import distributed as dist
from medrec.fileio import atomic_write_text
from medrec.train.checkpoint import load_checkpoint, rng_state, save_checkpoint
from medrec.train.loop import TaskLoss, evaluate, train_one_epoch
from medrec.train.monitor import epoch_metric

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
    extra: dict[str, Any] = field(default_factory=dict)


def fold_dir(run_dir: Path, split: Split) -> Path:
    name = f"fold_{split.fold}" if split.repeat == 0 else f"repeat_{split.repeat}_fold_{split.fold}"
    return run_dir / "folds" / name


def derived_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers, so each (repeat, fold, epoch) has its own stream."""
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes()) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def is_fold_done(run_dir: Path, split: Split) -> bool:
    return (fold_dir(run_dir, split) / "oof.csv").exists()


def train_fold(ctx: FoldContext, split: Split) -> pd.DataFrame:
    """Train one fold (resuming from its last finished epoch) and return its out-of-fold rows."""
    cfg, out = ctx.cfg, fold_dir(ctx.run_dir, split)
    seed_everything(derived_seed(cfg.seed, split.repeat, split.fold))
    model, optimizer, scheduler, loss_fn, train_ds, val_loader = _setup(ctx, split)
    # fp16 autocast needs loss scaling on CUDA; bf16 and fp32 do not.
    use_scaler = cfg.train.amp == "fp16" and ctx.device.type == "cuda"
    ctx.extra["scaler"] = torch.amp.GradScaler("cuda") if use_scaler else None
    state = {"epoch": -1, "history": [], "best": None, "best_epoch": -1, "bad_epochs": 0}
    last = out / "last.pt"
    if last.exists():
        state = _restore(last, model, optimizer, scheduler, ctx.extra["scaler"])
        log.info("fold %d: resuming after epoch %d", split.fold, state["epoch"] + 1)
    for epoch in range(state["epoch"] + 1, cfg.train.epochs):
        if _early_stopped(cfg, state):
            break
        _run_epoch(ctx, split, epoch, model, optimizer, scheduler, loss_fn, train_ds, val_loader, state)
        _save_epoch(ctx, split, out, model, optimizer, scheduler, state)
        # Logged only once the checkpoint is on disk: a logged epoch is never trained twice.
        log.info("fold %d epoch %d done: %s", split.fold, epoch + 1,
                 ", ".join(f"{k}={v:.4g}" for k, v in state["history"][-1].items() if k != "epoch"))
    return _finish_fold(ctx, split, out, model, loss_fn, val_loader, state)


def _setup(ctx: FoldContext, split: Split):
    from medrec.models.build import build_model
    from medrec.models.freeze import param_groups

    cfg = ctx.cfg
    model, _ = build_model(ctx.model_cfg or cfg.model, num_outputs=ctx.manifest.num_outputs)
    model = model.to(ctx.device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = dist.wrap_model(model, ctx.device)
    labels = ctx.manifest.labels
    loss_fn = _make_loss(cfg, labels[split.train], ctx.device)
    train_ds = FoldDataset(ctx.base, split.train, train_transforms(cfg.data, ctx.norm["mean"], ctx.norm["std"],
                                                                   cfg.model.in_channels))
    val_ds = FoldDataset(ctx.base, split.val, eval_transforms(cfg.data, ctx.norm["mean"], ctx.norm["std"],
                                                              cfg.model.in_channels))
    val_loader = DataLoader(val_ds, batch_size=cfg.train.batch_size, shuffle=False, **_loader_kwargs(cfg))
    optimizer = _make_optimizer(cfg, param_groups(dist.unwrap(model), cfg.model, cfg.train.lr))
    steps = math.ceil(len(train_ds) / dist.world_size() / cfg.train.batch_size)
    scheduler = _make_scheduler(cfg, optimizer, steps)
    return model, optimizer, scheduler, loss_fn, train_ds, val_loader


def _loader_kwargs(cfg: ExperimentConfig) -> dict:
    nw = cfg.data.num_workers
    return {"num_workers": nw, "pin_memory": cfg.data.pin_memory,
            "persistent_workers": cfg.data.persistent_workers and nw > 0}


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


def _train_loader(ctx: FoldContext, train_ds: FoldDataset, epoch_seed: int) -> DataLoader:
    """A loader whose order and augmentations depend only on the epoch seed (exact resume)."""
    cfg = ctx.cfg
    gen = torch.Generator().manual_seed(epoch_seed)
    if dist.world_size() > 1:
        sampler = DistributedSampler(train_ds, shuffle=True, seed=epoch_seed, drop_last=True)
    elif cfg.train.class_weighting == "sampler":
        sampler = WeightedRandomSampler(_sample_weights(ctx, train_ds), len(train_ds), replacement=True,
                                        generator=gen)
    else:
        sampler = RandomSampler(train_ds, generator=gen)
    if isinstance(sampler, DistributedSampler):  # its order depends only on the seed: safe to record
        ctx.extra.setdefault("seen", []).append([int(train_ds.indices[i]) for i in sampler])
    # MONAI's DataLoader seeds the random transforms from `generator` (workers or not).
    collate = batch_augment(cfg.data, epoch_seed)
    extra = {"collate_fn": collate} if collate is not None else {}
    return DataLoader(train_ds, batch_size=cfg.train.batch_size, sampler=sampler, generator=gen,
                      drop_last=len(train_ds) > cfg.train.batch_size, **_loader_kwargs(cfg), **extra)


def _sample_weights(ctx: FoldContext, train_ds: FoldDataset) -> torch.Tensor:
    labels = ctx.manifest.labels[train_ds.indices]
    if ctx.cfg.data.task == "multiclass":
        key = labels
    else:  # first label decides the stratum for the sampler; NaN counts as negative
        key = np.nan_to_num(labels.reshape(len(labels), -1)[:, 0]).astype(int)
    counts = np.bincount(key)
    return torch.as_tensor(1.0 / counts[key], dtype=torch.double)


def _run_epoch(ctx, split, epoch, model, optimizer, scheduler, loss_fn, train_ds, val_loader, state) -> None:
    from medrec.models.freeze import apply_freeze

    cfg = ctx.cfg
    seed = derived_seed(cfg.seed, split.repeat, split.fold, epoch)
    seed_everything(seed)
    apply_freeze(dist.unwrap(model), cfg.model, epoch)
    loader = _train_loader(ctx, train_ds, seed)
    bar = ctx.progress(split, epoch, len(loader)) if ctx.progress else None
    on_batch = (lambda loss, lr, ips: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}",
                                                                       img_s=f"{ips:.0f}"))) if bar else None
    stats = train_one_epoch(model, loader, optimizer, scheduler, loss_fn, cfg.train, device=ctx.device,
                            aux_weight=cfg.model.aux_weight, scaler=ctx.extra.get("scaler"), on_batch=on_batch)
    if bar:
        bar.close()
    dist.sync_buffers(model)
    precise_bn(ctx, model, train_ds.indices)
    val = _evaluate_all(ctx, model, loss_fn, val_loader)
    metric = epoch_metric(val["labels"], val["scores"], cfg.data.task, cfg.train.early_stopping.metric,
                          val_loss=val["loss"])
    row = {"epoch": epoch, "train_loss": stats["loss"], "val_loss": val["loss"],
           f"val_{cfg.train.early_stopping.metric}": metric, "lr": stats["lr"], "images_per_s": stats["images_per_s"],
           "seconds": stats["seconds"]}
    state["history"].append(row)
    _update_best(cfg, state, epoch, metric, model)
    state["epoch"] = epoch
    _log_scalars(ctx, split, row)


def _log_scalars(ctx: FoldContext, split: Split, row: dict) -> None:
    """Per-epoch numbers to TensorBoard and, when configured, MLflow (history.csv is always written)."""
    scalars = {f"fold_{split.fold}/{k}": float(v) for k, v in row.items() if k != "epoch"}
    if ctx.extra.get("tb") is not None:
        for k, v in scalars.items():
            ctx.extra["tb"].add_scalar(k, v, row["epoch"])
    if ctx.extra.get("mlflow") is not None:
        import mlflow

        mlflow.log_metrics({k.replace("/", "."): v for k, v in scalars.items()}, step=row["epoch"])


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
    ds = FoldDataset(ctx.base, np.sort(train_indices),
                     eval_transforms(cfg.data, ctx.norm["mean"], ctx.norm["std"], cfg.model.in_channels))
    loader = DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=False, **_loader_kwargs(cfg))
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


def _evaluate_all(ctx, model, loss_fn, loader) -> dict:
    res = evaluate(dist.unwrap(model), loader, loss_fn, device=ctx.device, task=ctx.cfg.data.task,
                   amp=ctx.cfg.train.amp, channels_last=ctx.cfg.train.channels_last)
    return res


def _update_best(cfg: ExperimentConfig, state: dict, epoch: int, metric: float, model) -> None:
    es = cfg.train.early_stopping
    better = state["best"] is None or (not np.isnan(metric) and (
        metric > state["best"] if es.mode == "max" else metric < state["best"]))
    if better:
        state["best"], state["best_epoch"], state["bad_epochs"] = metric, epoch, 0
        if es.patience is not None:  # only early stopping needs them; they double the checkpoint
            state["best_weights"] = {k: v.detach().clone() for k, v in dist.unwrap(model).state_dict().items()}
    else:
        state["bad_epochs"] += 1


def _early_stopped(cfg: ExperimentConfig, state: dict) -> bool:
    patience = cfg.train.early_stopping.patience
    return patience is not None and state["bad_epochs"] > patience


def _payload(ctx: FoldContext, split: Split, model, optimizer, scheduler, state: dict) -> dict:
    return {
        "model": dist.unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": ctx.extra["scaler"].state_dict() if ctx.extra.get("scaler") is not None else None,
        "rng": rng_state(),
        "epoch": state["epoch"], "fold": split.fold, "repeat": split.repeat,
        "history": state["history"], "best": state["best"], "best_epoch": state["best_epoch"],
        "bad_epochs": state["bad_epochs"], "best_weights": state.get("best_weights"),
        "config": ctx.cfg.to_dict(), "arch": ctx.arch, "normalization": ctx.norm,
        "task": ctx.cfg.data.task, "label_names": list(ctx.manifest.class_names),
        "num_outputs": ctx.manifest.num_outputs, "threshold": None, "provenance": ctx.provenance,
    }


def _save_epoch(ctx, split, out: Path, model, optimizer, scheduler, state) -> None:
    if not dist.is_main():
        return
    save_checkpoint(out / "last.pt", _payload(ctx, split, model, optimizer, scheduler, state))
    pd.DataFrame(state["history"]).to_csv(out / "history.csv", index=False)


def _restore(path: Path, model, optimizer, scheduler, scaler) -> dict:
    ckpt = load_checkpoint(path)
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    dist.unwrap(model).load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt["scheduler"] is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    keys = ("epoch", "history", "best", "best_epoch", "bad_epochs", "best_weights")
    return {k: ckpt[k] for k in keys}


def _rank_report(ctx: FoldContext, split: Split, net) -> None:
    """Diagnostics for distributed runs (env MEDREC_RANK_REPORT=DIR): what each rank trained on
    and a checksum of its final weights, so a test can prove DDP kept the ranks in step."""
    where = os.environ.get("MEDREC_RANK_REPORT")
    if not where:
        return
    digest = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        digest.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    report = {"rank": dist.rank(), "world_size": dist.world_size(), "fold": split.fold,
              "seen": ctx.extra.get("seen", []), "weights_sha256": digest.hexdigest()}
    Path(where).mkdir(parents=True, exist_ok=True)
    Path(where, f"rank{dist.rank()}_fold{split.fold}.json").write_text(json.dumps(report))


def _finish_fold(ctx, split, out: Path, model, loss_fn, val_loader, state) -> pd.DataFrame:
    """Out-of-fold predictions from the final weights (the best epoch's when early stopping is on)."""
    cfg, net = ctx.cfg, dist.unwrap(model)
    _rank_report(ctx, split, net)
    ctx.extra["seen"] = []
    if cfg.train.early_stopping.patience is not None and state.get("best_weights") is not None:
        net.load_state_dict(state["best_weights"])
    val = _evaluate_all(ctx, model, loss_fn, val_loader)
    rows = oof_rows(ctx.manifest, val, split)
    if dist.is_main():
        payload = _payload(ctx, split, model, None, None, state) | {"best_weights": None}
        save_checkpoint(out / "best.pt", payload)
        atomic_write_text(out / "oof.csv", rows.to_csv(index=False))
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

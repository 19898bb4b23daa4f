"""Patient-grouped cross-validation: data once, every fold, merged predictions, report.

`run(cfg, ...)` is what `python -m medrec.finetune` calls. A run folder is complete when
every fold has its `oof.csv`; `--resume` skips those folds and continues the current one
from its last finished epoch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medrec.config import ExperimentConfig
from medrec.data.datasets import build_base_dataset
from medrec.data.manifest import Manifest
from medrec.data.sources import load_source
from medrec.data.splits import Split, assert_no_patient_overlap, holdout_mask, make_splits
from medrec.errors import ConfigError
from medrec.train import distributed as dist
from medrec.train import runinfo
from medrec.fileio import atomic_write_text
from medrec.train.fold import FoldContext, fold_dir, is_fold_done, train_fold

log = logging.getLogger(__name__)


def prepare_data(cfg: ExperimentConfig, run_dir: Path, base_dir: Path, progress: bool = True):
    """Manifest, cached base dataset (bad images dropped and listed) and the leakage-checked splits."""
    manifest = load_source(cfg.data, base_dir)
    base, errors = build_base_dataset(manifest, cfg.data, run_dir / "cache", progress=progress and dist.is_main())
    if errors:
        _write_errors(run_dir, manifest, errors)
        log.warning("%d image(s) could not be read and were left out; see errors.csv", len(errors))
    keep = np.ones(len(manifest.table), dtype=bool)
    keep[[i for i, _ in errors]] = False
    test = holdout_mask(manifest.table, manifest.labels, cfg.data.task, cfg.cv.test_fraction, cfg.seed)
    usable = keep & ~test
    sub = manifest.table[usable]
    splits = make_splits(sub, manifest.labels[usable], cfg.data.task, cfg.cv, cfg.seed)
    rows = np.flatnonzero(usable)  # map split indices back to manifest rows (the base dataset's order)
    splits = [Split(s.fold, s.repeat, rows[s.train], rows[s.val]) for s in splits]
    assert_no_patient_overlap(manifest.table["patient_id"].to_numpy(), splits, test & keep)
    if test.any() and dist.is_main():
        atomic_write_text(run_dir / "test_set.csv", manifest.table[test & keep][["path", "image_id", "patient_id"]]
                          .to_csv(index=False))
    return manifest, base, splits


def _write_errors(run_dir: Path, manifest: Manifest, errors: list[tuple[int, str]]) -> None:
    if not dist.is_main():
        return
    t = manifest.table
    df = pd.DataFrame({"path": [t["path"].iat[i] for i, _ in errors], "reason": [r for _, r in errors]})
    atomic_write_text(run_dir / "errors.csv", df.to_csv(index=False))


def check_model_fits(cfg: ExperimentConfig) -> dict:
    """Architecture facts; fail before any work if the image size is below the network's minimum."""
    from medrec.models.specs import get_spec

    spec = get_spec(cfg.model.arch)
    spec.check_size(cfg.data.image_size)
    return spec.to_dict()


def run(cfg: ExperimentConfig, run_dir: Path, *, base_dir: Path, only_fold: int | None = None,
        progress=None) -> dict:
    """Train every fold that is not done yet, then merge predictions and build the report."""
    from medrec.data.transforms import input_normalization
    from medrec.models.build import build_model

    start = time.time()
    device = dist.local_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    arch = check_model_fits(cfg)
    # Resolve the weights first: a missing file should stop the run in seconds, not after caching.
    _, provenance = build_model(cfg.model, num_outputs=1)
    mean, std = input_normalization(cfg)
    manifest, base, splits = prepare_data(cfg, run_dir, base_dir)
    info = runinfo.start(run_dir, cfg, manifest, provenance, device)
    if dist.is_main() and not (run_dir / "preview.png").exists():
        write_preview(cfg, manifest, base, splits, run_dir, mean, std)
    ctx = FoldContext(cfg, manifest, base, run_dir, device, {"mean": list(mean), "std": list(std)}, arch,
                      provenance, model_cfg=_resolved_model_cfg(cfg, provenance), progress=progress,
                      extra={"tb": runinfo.tensorboard(run_dir), "mlflow": runinfo.mlflow_run(cfg, run_dir)})
    todo = [s for s in splits if only_fold is None or (s.fold == only_fold and s.repeat == 0)]
    if only_fold is not None and not todo:
        raise ConfigError(f"--fold {only_fold} does not exist; folds are 0..{cfg.cv.folds - 1}")
    for split in todo:
        if is_fold_done(run_dir, split):
            log.info("fold %d (repeat %d) already finished; skipped", split.fold, split.repeat)
            continue
        train_fold(ctx, split)
        dist.barrier()
        if dist.is_main():  # a killed run keeps the wall time it had spent, for the resumed report
            runinfo.write(run_dir, {**info, "wall_time_s": info["wall_time_s"] + time.time() - start})
    if ctx.extra["tb"] is not None:
        ctx.extra["tb"].close()
    if ctx.extra["mlflow"] is not None:
        import mlflow

        mlflow.end_run()
    return finalize(run_dir, cfg, splits, info, time.time() - start)


def write_preview(cfg: ExperimentConfig, manifest: Manifest, base, splits: list[Split], run_dir: Path,
                  mean: list[float], std: list[float]) -> None:
    """`preview.png`: 16 training images of the first fold, preprocessed and augmented (medrec.preview)."""
    from medrec.preview import preview_from_base

    try:
        preview_from_base(cfg, manifest, base, splits[0].train, run_dir / "preview.png", seed=cfg.seed,
                          mean=mean, std=std)
    except Exception as exc:  # a picture for the user must never cost the run
        log.warning("preview.png not written: %s: %s", type(exc).__name__, exc)


def _resolved_model_cfg(cfg: ExperimentConfig, provenance: dict):
    """cfg.model for the folds: once ImageNet weights were found missing (and that was allowed),
    the folds build from random init directly instead of warning and probing again."""
    if str(provenance.get("initialisation", "")).startswith("random"):
        return cfg.model.model_copy(update={"weights": "none", "allow_random_init": False})
    return cfg.model


def finalize(run_dir: Path, cfg: ExperimentConfig, splits: list[Split], info: dict, seconds: float) -> dict:
    """Merge fold predictions when all folds are done; store the operating point; build the report."""
    if not dist.is_main():
        return info
    missing = [s for s in splits if not is_fold_done(run_dir, s)]
    info["folds"] = [_fold_summary(run_dir, s) for s in splits if is_fold_done(run_dir, s)]
    info["wall_time_s"] = info.get("wall_time_s", 0.0) + seconds
    if missing:
        info["status"] = f"partial: {len(missing)} fold(s) left; rerun with --resume to finish and merge"
        runinfo.write(run_dir, info)
        return info
    oof = merge_folds(run_dir, splits)
    info.update(runinfo.operating_point(oof, cfg), status="complete")
    runinfo.finish(run_dir, info)
    from medrec.eval.report import build_report

    info["metrics"] = build_report(run_dir)
    return info


def merge_folds(run_dir: Path, splits: list[Split]) -> pd.DataFrame:
    """Concatenate every fold's oof.csv into oof_predictions.csv, in manifest order."""
    parts = [pd.read_csv(fold_dir(run_dir, s) / "oof.csv") for s in splits]
    oof = pd.concat(parts, ignore_index=True).sort_values(["repeat", "fold", "path"], kind="stable")
    atomic_write_text(run_dir / "oof_predictions.csv", oof.to_csv(index=False))
    return oof


def _fold_summary(run_dir: Path, split: Split) -> dict:
    hist = fold_dir(run_dir, split) / "history.csv"
    h = pd.read_csv(hist) if hist.exists() else pd.DataFrame()
    oof = pd.read_csv(fold_dir(run_dir, split) / "oof.csv")
    return {"fold": split.fold, "repeat": split.repeat, "n_train": int(len(split.train)), "n_val": int(len(oof)),
            "epochs": int(len(h)), "seconds": float(h["seconds"].sum()) if "seconds" in h else None}

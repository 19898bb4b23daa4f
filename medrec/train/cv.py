"""Patient-grouped cross-validation: data once, every fold, merged predictions, report.

`run(cfg, ...)` is what `python -m medrec.finetune` calls. A run folder is complete when
every fold has its `oof.csv`; `--resume` reuses the saved splits (splits.csv), skips finished
folds and continues the current one from its last finished epoch.
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
from medrec.threads import apply_threads
from medrec import runfolder as rf
from medrec.train import distributed as dist
from medrec.train import resume, runinfo
from medrec.train.fold import FoldContext, fold_dir, is_fold_done, train_fold
from medrec.train.monitor import Trackers

log = logging.getLogger(__name__)


def check_eval_columns(cfg: ExperimentConfig, manifest: Manifest) -> None:
    """Columns that `eval.subgroups` / `eval.aggregate: [study]` name must be in the manifest: found
    before training, not as a missing section of the report after an hour of it.

    Raises:
        ConfigError: naming the key, the missing column, the manifest's columns and the fix.
    """
    cols = set(map(str, manifest.table.columns))
    need = [("eval.subgroups", c) for c in cfg.eval.subgroups] + (
        [("eval.aggregate: [study]", "study_id")] if "study" in cfg.eval.aggregate else [])
    missing = [(key, c) for key, c in need if c not in cols]
    if missing:
        what = "; ".join(f"{key} names column '{c}'" for key, c in missing)
        raise ConfigError(
            f"{what}, which {manifest.source} does not have (its columns: {', '.join(sorted(cols))}). "
            "Add the column to the manifest (python -m medrec.index writes sex, age_band, view_position, study_id "
            "for DICOM) or remove it from the config.")


def prepare_data(cfg: ExperimentConfig, run_dir: Path, base_dir: Path, progress: bool = True):
    """Manifest, cached base dataset (bad images dropped and listed), the leakage-checked splits and
    the data fingerprint. A run folder with a splits.csv (a resumed run) reuses its splits, after
    checking that the readable images are the ones they were drawn from.

    Raises:
        DataChangedError: resuming, and the data differs from what the saved splits were drawn from.
    """
    manifest = load_source(cfg.data, base_dir)
    check_eval_columns(cfg, manifest)
    base, errors = build_base_dataset(manifest, cfg.data, run_dir / "cache", progress=progress and dist.is_main())
    keep = np.ones(len(manifest.table), dtype=bool)
    keep[[i for i, _ in errors]] = False
    hashes = runinfo.file_hashes(manifest)
    fingerprint = runinfo.data_fingerprint(manifest, hashes)
    saved = rf.read_splits(run_dir)
    if saved is not None:
        now = resume.splits_table(manifest.table, runinfo.row_hashes(manifest, hashes), keep,
                                  np.zeros(len(keep), dtype=bool), [])
        what = resume.changes(saved, now) + _fingerprint_change(run_dir, fingerprint)
        if what:
            resume.refuse_changed(run_dir, what)
        splits, test, keep = resume.splits_from_table(saved, manifest.table)
    else:
        _check_fingerprint(run_dir, fingerprint)
        splits, test = _draw_splits(cfg, manifest, keep)
    if errors:  # only now: a refused resume leaves the run folder's files as they were
        _write_errors(run_dir, manifest, errors)
        log.warning("%d image(s) could not be read and were left out; see errors.csv", len(errors))
    assert_no_patient_overlap(manifest.table["patient_id"].to_numpy(), splits, test & keep)
    if dist.is_main():
        if saved is None:
            rf.write_splits(run_dir, resume.splits_table(manifest.table, runinfo.row_hashes(manifest, hashes),
                                                         keep, test, splits))
        if (test & keep).any():
            columns = ["path", "image_id", "patient_id", *manifest.label_columns]
            rf.write_table(run_dir, rf.TEST_SET_CSV, manifest.table[test & keep][columns])
    return manifest, base, splits, fingerprint


def _draw_splits(cfg: ExperimentConfig, manifest: Manifest, keep: np.ndarray) -> tuple[list[Split], np.ndarray]:
    """New folds (and held-out test set) over the readable images."""
    test = holdout_mask(manifest.table, manifest.labels, cfg.data.task, cfg.cv.test_fraction, cfg.seed)
    usable = keep & ~test
    sub = manifest.table[usable]
    splits = make_splits(sub, manifest.labels[usable], cfg.data.task, cfg.cv, cfg.seed)
    rows = np.flatnonzero(usable)  # map split indices back to manifest rows (the base dataset's order)
    return [Split(s.fold, s.repeat, rows[s.train], rows[s.val]) for s in splits], test


def _fingerprint_change(run_dir: Path, fingerprint: dict) -> list[str]:
    old = rf.read_info_if_any(run_dir).get("data_fingerprint") or {}
    if old.get("manifest_sha256") and old["manifest_sha256"] != fingerprint["manifest_sha256"]:
        return ["the manifest file's content changed (sha256 differs: labels or columns edited?)"]
    return []


def _check_fingerprint(run_dir: Path, fingerprint: dict) -> None:
    """A run folder from before splits.csv existed: compare the recorded fingerprint as a whole."""
    old = rf.read_info_if_any(run_dir).get("data_fingerprint") or {}
    diff = [k for k in ("manifest_sha256", "images_sha256", "n_images", "n_patients")
            if old.get(k) is not None and old[k] != fingerprint[k]]
    if diff:
        resume.refuse_changed(run_dir, [f"data fingerprint fields differ: {', '.join(diff)} "
                                        f"(patients {old.get('n_patients')} -> {fingerprint['n_patients']}, "
                                        f"images {old.get('n_images')} -> {fingerprint['n_images']})"])


def _write_errors(run_dir: Path, manifest: Manifest, errors: list[tuple[int, str]]) -> None:
    if not dist.is_main():
        return
    from medrec.data.reading import refusal_reason

    t = manifest.table
    df = pd.DataFrame({"path": [t["path"].iat[i] for i, _ in errors], "reason": [r for _, r in errors],
                       "refused_as": [refusal_reason(r) for _, r in errors]})  # colour | too_large | unreadable
    rf.write_table(run_dir, rf.ERRORS_CSV, df)


def check_model_fits(cfg: ExperimentConfig) -> dict:
    """Architecture facts; fail before any work if the image size is below the network's minimum."""
    from medrec.models.specs import get_spec

    spec = get_spec(cfg.model.arch)
    spec.check_size(cfg.data.image_size)
    return spec.to_dict()


def run(cfg: ExperimentConfig, run_dir: Path, *, base_dir: Path, only_fold: int | None = None,
        progress=None, preview: bool = True) -> dict:
    """Train every fold that is not done yet, then merge predictions and store the operating point.

    The report is built by the caller (medrec.finetune) from the finished run folder.
    """
    from medrec.models.adapt import input_normalization
    from medrec.models.build import build_model

    start = time.time()
    device = dist.local_device(cfg.train.device)
    apply_threads(cfg.train.threads)
    arch = check_model_fits(cfg)
    # Resolve the weights first: a missing file should stop the run in seconds, not after caching.
    _, provenance = build_model(cfg.model, num_outputs=1)
    mean, std = input_normalization(cfg)
    manifest, base, splits, fingerprint = prepare_data(cfg, run_dir, base_dir)
    info = runinfo.start(run_dir, cfg, manifest, provenance, device, fingerprint)
    if dist.is_main() and getattr(base, "read_counts", None) is not None:  # listed -> read -> refused, by reason
        info["images"] = base.read_counts.to_dict()
        runinfo.write(run_dir, info)
        rows = base.read_conversions  # images not stored grey: how each was read (medrec.io.color)
        rf.write_table(run_dir, "conversions.csv", pd.DataFrame(
            {"path": [manifest.table["path"].iat[i] for i, _ in rows], "conversion": [c for _, c in rows]}))
    if preview and dist.is_main() and not (run_dir / "preview.png").exists():  # medrec tune: off per trial
        write_preview(cfg, manifest, base, splits, run_dir, mean, std)
    ctx = FoldContext(cfg, manifest, base, run_dir, device, {"mean": list(mean), "std": list(std)}, arch,
                      provenance, model_cfg=_resolved_model_cfg(cfg, provenance), progress=progress,
                      trackers=Trackers(runinfo.tensorboard(run_dir), runinfo.mlflow_run(cfg, run_dir)))
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
    ctx.trackers.close()
    return finalize(run_dir, cfg, splits, info, time.time() - start)


def write_preview(cfg: ExperimentConfig, manifest: Manifest, base, splits: list[Split], run_dir: Path,
                  mean: list[float], std: list[float]) -> None:
    """`preview.png`: 16 training images of the first fold, preprocessed and augmented."""
    from medrec.data.preview_draw import preview_from_base

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
    """Merge fold predictions when all folds are done and store the operating point in run.json."""
    if not dist.is_main():
        return info
    missing = [s for s in splits if not is_fold_done(run_dir, s)]
    info["folds"] = [_fold_summary(run_dir, s) for s in splits if is_fold_done(run_dir, s)]
    info["model_selection"] = _selection(info["folds"])
    info["wall_time_s"] = info.get("wall_time_s", 0.0) + seconds
    if missing:
        info["status"] = f"partial: {len(missing)} fold(s) left; rerun with --resume to finish and merge"
        runinfo.write(run_dir, info)
        return info
    oof = merge_folds(run_dir, splits)
    info.update(runinfo.operating_point(oof, cfg), status="complete")
    runinfo.finish(run_dir, info)
    return info


def merge_folds(run_dir: Path, splits: list[Split]) -> pd.DataFrame:
    """Concatenate every fold's oof.csv into oof_predictions.csv, in manifest order."""
    parts = [rf.read_fold_oof(run_dir, s.fold, s.repeat) for s in splits]
    oof = pd.concat(parts, ignore_index=True).sort_values(["repeat", "fold", "path"], kind="stable")
    rf.write_oof(run_dir, oof)
    return oof


def _fold_summary(run_dir: Path, split: Split) -> dict:
    hist = fold_dir(run_dir, split) / "history.csv"
    h = pd.read_csv(hist) if hist.exists() else pd.DataFrame()
    oof = rf.read_fold_oof(run_dir, split.fold, split.repeat)
    meta = rf.load_checkpoint(fold_dir(run_dir, split) / rf.BEST_PT).meta
    return {"fold": split.fold, "repeat": split.repeat, "n_train": int(len(split.train)), "n_val": int(len(oof)),
            "epochs": int(len(h)), "seconds": float(h["seconds"].sum()) if "seconds" in h else None,
            "selection": meta.selection}


def _selection(folds: list[dict]) -> dict | None:
    """How each fold's reported epoch was chosen, for run.json and the report."""
    chosen = [f["selection"] for f in folds if f.get("selection")]
    if not chosen:
        return None
    first = chosen[0]
    return {"rule": first["rule"], "monitored_on": first["monitored_on"], "note": first["note"],
            "inner_fraction": first.get("inner_fraction"),
            "epochs": [{"fold": f["fold"], "repeat": f["repeat"], "epoch": f["selection"].get("epoch"),
                        "epochs_trained": f["selection"].get("epochs_trained")} for f in folds if f.get("selection")]}

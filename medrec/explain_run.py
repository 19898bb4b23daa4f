"""Grad-CAM maps of a cross-validation run's out-of-fold images, each from its own fold's model.

    python -m medrec.explain RUN_DIR [--device cpu] [--batch-size 16]

An out-of-fold image was predicted by the one fold model that did not train on it, so its map
comes from that model alone (not the ensemble, which trained on it in the other folds). Maps
are written as `RUN/cams/<image_id>.npy` (float16, original image size, values in [0, 1]) with
an overlay `RUN/cams/<image_id>.png`, exactly as `medrec.predict --cam` writes them (see
medrec.explain for the conventions); the review app shows them. Multilabel runs get one
(labels, H, W) map per image, in the run's label order. With repeated CV, repeat 0's fold
models are used.

After training, medrec.finetune calls `cams_after_training`: `eval.cams: auto` computes the maps
when the run has at most AUTO_MAX_IMAGES out-of-fold images; `true` / `false` force or skip.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrec import runfolder as rf
from medrec.errors import DataError, MedrecError
from medrec.exitcodes import handle_errors

log = logging.getLogger(__name__)

AUTO_MAX_IMAGES = 3000
CAMS_DIR = "cams"


def cams_wanted(setting: bool | str, n_images: int) -> bool:
    """eval.cams: True / False as given; "auto" when there are at most AUTO_MAX_IMAGES images."""
    if setting == "auto":
        return n_images <= AUTO_MAX_IMAGES
    return bool(setting)


def _oof_images(run_dir: Path) -> pd.DataFrame:
    """One row per out-of-fold image (repeat 0), with its fold."""
    oof = rf.read_oof(run_dir)
    if "repeat" in oof.columns:
        oof = oof[pd.to_numeric(oof["repeat"], errors="coerce").fillna(0) == 0]
    if "fold" not in oof.columns:
        raise DataError(f"{run_dir / rf.OOF_CSV} has no 'fold' column; CAMs need each image's fold model")
    return oof.drop_duplicates("image_id").reset_index(drop=True)


def write_oof_cams(run_dir: str | Path, *, device: str | None = None, batch_size: int = 16,
                   workers: int = 0) -> dict[str, Any]:
    """Write RUN/cams/<image_id>.npy for every out-of-fold image from its own fold's model.

    Returns {"folder", "written", "failed", "folds", "seconds"}; an image that cannot be read
    gets no map (listed in the log), the others are still written.

    Raises:
        MedrecError (CheckpointError, DataError, ...): no OOF predictions or a fold checkpoint missing.
    """
    from medrec.infer.ensemble import load_ensemble

    run_dir = Path(run_dir).resolve()
    start = time.time()
    oof = _oof_images(run_dir)
    folder = run_dir / CAMS_DIR
    settings = {"batch_size": batch_size, "workers": workers}
    written, failed = 0, []
    for fold, rows in oof.groupby("fold", sort=True):
        ens = load_ensemble(run_dir, [rf.fold_name(int(fold), 0)], device=device)
        n, bad = _fold_cams(ens, rows.reset_index(drop=True), folder, settings)
        written, failed = written + n, failed + bad
        log.info("Grad-CAM: fold %d done (%d images)", int(fold), len(rows))
    if failed:
        log.warning("Grad-CAM: no map for %d image(s) that could not be read: %s", len(failed),
                    "; ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""))
    return {"folder": str(folder), "written": written, "failed": len(failed), "folds": int(oof["fold"].nunique()),
            "seconds": round(time.time() - start, 1)}


def _fold_cams(ens, rows: pd.DataFrame, folder: Path, settings: dict) -> tuple[int, list[str]]:
    """Maps of one fold's images in batches; if a batch fails on a bad file, image by image,
    so that one unreadable image costs only its own map."""
    one = _multilabel_cams if ens.task == "multilabel" else _cams
    try:
        return one(ens, rows, folder, settings), []
    except (MedrecError, OSError, ValueError) as exc:
        log.info("Grad-CAM: a batch failed (%s); computing this fold's maps one image at a time", exc)
    written, failed = 0, []
    for i in range(len(rows)):
        try:
            written += one(ens, rows.iloc[[i]].reset_index(drop=True), folder, settings)
        except (MedrecError, OSError, ValueError) as exc:
            failed.append(f"{rows['image_id'].iat[i]}: {type(exc).__name__}: {exc}")
    return written, failed


def _cams(ens, rows: pd.DataFrame, folder: Path, settings: dict, cam_class: int | None = None) -> int:
    from medrec.infer.outputs import write_cams

    return int(write_cams(ens, rows, cam_class, folder, settings, ens.device)["written"])


def _multilabel_cams(ens, rows: pd.DataFrame, folder: Path, settings: dict) -> int:
    """One (labels, H, W) map per image: each label's map computed apart, then stacked."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".labels-") as tmp:
        for k, _ in enumerate(ens.names):
            _cams(ens, rows, Path(tmp) / str(k), settings, cam_class=k)
        written = 0
        for image_id in rows["image_id"].astype(str):
            parts = [Path(tmp) / str(k) / f"{image_id}.npy" for k in range(len(ens.names))]
            if all(p.is_file() for p in parts):
                np.save(folder / f"{image_id}.npy", np.stack([np.load(p) for p in parts]), allow_pickle=False)
                written += 1
    return written


def cams_after_training(run_dir: Path, setting: bool | str) -> None:
    """Called once a run is complete: the maps per `eval.cams`. Never raises: the trained run is
    finished work, and the maps can be made later with `python -m medrec.explain RUN`."""
    try:
        n = len(_oof_images(run_dir))
        if not cams_wanted(setting, n):
            log.info("Grad-CAM maps skipped (eval.cams: %s, %d images); make them with "
                     "python -m medrec.explain %s", setting, n, run_dir)
            return
        done = write_oof_cams(run_dir)
        log.info("Grad-CAM maps of %d out-of-fold images written to %s (%.0f s)", done["written"],
                 done["folder"], done["seconds"])
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("Grad-CAM maps not written (%s: %s); retry with python -m medrec.explain %s",
                    type(exc).__name__, exc, run_dir)


@handle_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m medrec.explain",
                                description="Grad-CAM maps of a run's out-of-fold images, each from its fold's model.")
    p.add_argument("run_dir", type=Path, help="run folder written by medrec.finetune")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the run's train.device)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0, help="image-reading worker processes")
    p.add_argument("--clean", action="store_true", help="delete RUN/cams first (maps of images no longer in the run)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.clean:
        shutil.rmtree(args.run_dir / CAMS_DIR, ignore_errors=True)
    done = write_oof_cams(args.run_dir, device=args.device, batch_size=args.batch_size, workers=args.workers)
    failed = f"; {done['failed']} image(s) unreadable, see the log" if done["failed"] else ""
    print(f"{done['written']} Grad-CAM maps from {done['folds']} fold models in {done['folder']} "
          f"({done['seconds']} s{failed})")
    return 0

"""run.json: what a run was made from (config, data fingerprint, weights, versions, hardware)."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

from medrec.config import ExperimentConfig
from medrec.data.manifest import NPZ_SEP, Manifest
from medrec import runfolder as rf

log = logging.getLogger(__name__)

PACKAGES = ("torch", "torchvision", "monai", "pydicom", "scikit-learn", "numpy", "pandas", "pydantic", "medrec")
# Fields that differ between two runs of the same config; everything else must be reproducible.
VOLATILE_FIELDS = ("created", "finished", "wall_time_s", "run_dir", "hardware", "git_commit")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_hashes(manifest: Manifest) -> dict[str, str]:
    """sha256 of every image file of the manifest (an npz file once for all its members)."""
    return {f: sha256_file(Path(f)) for f in sorted({p.split(NPZ_SEP)[0] for p in manifest.table["path"]})}


def row_hashes(manifest: Manifest, hashes: dict[str, str]) -> list[str]:
    return [hashes[p.split(NPZ_SEP)[0]] for p in manifest.table["path"]]


def data_fingerprint(manifest: Manifest, hashes: dict[str, str] | None = None) -> dict:
    """sha256 of the manifest file and of every image file (name-independent order: sorted paths)."""
    hashes = hashes if hashes is not None else file_hashes(manifest)
    root = Path(manifest.data_root)
    h = hashlib.sha256()
    for f, digest in sorted(hashes.items()):
        rel = os.path.relpath(f, root)
        h.update(f"{rel}\0{digest}\n".encode())
    src = Path(manifest.source)
    return {"manifest_sha256": sha256_file(src) if src.is_file() else None, "images_sha256": h.hexdigest(),
            "n_images": int(len(manifest.table)), "n_files": len(hashes),
            "n_patients": int(manifest.table["patient_id"].nunique())}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (res.stdout.strip() + ("-dirty" if dirty else "")) if res.returncode == 0 else None


def hardware(device: torch.device) -> dict:
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def start(run_dir: Path, cfg: ExperimentConfig, manifest: Manifest, provenance: dict, device: torch.device,
          fingerprint: dict | None = None) -> dict:
    """Write (or, on resume, refresh) run.json before the first fold trains."""
    old = rf.read_info_if_any(run_dir)
    info = {
        "name": cfg.name, "created": old.get("created", now()), "finished": None,
        "wall_time_s": old.get("wall_time_s", 0.0), "status": "running", "run_dir": str(run_dir.resolve()),
        "task": cfg.data.task, "label_names": list(manifest.label_columns), "class_names": list(manifest.class_names),
        **{k: provenance.get(k) for k in ("initialisation", "weights_file", "weights_sha256")},
        "data_root": manifest.data_root, "data_fingerprint": old.get("data_fingerprint") or fingerprint or data_fingerprint(manifest),
        "patient_level": _patient_level(manifest), "git_commit": git_commit(), "versions": versions(),
        "seeds": {"seed": cfg.seed, "bootstrap_seed": cfg.eval.bootstrap_seed},
        "hardware": hardware(device), "operating_point": cfg.eval.operating_point, "threshold": None,
        "privacy": {"pseudonym_key_env": cfg.privacy.pseudonym_key_env}, "volatile_fields": list(VOLATILE_FIELDS),
    }
    write(run_dir, info)
    return info


def _patient_level(manifest: Manifest) -> bool:
    """False when every image is its own 'patient' (e.g. MedMNIST): folds are then image-level."""
    return bool(manifest.table["patient_id"].nunique() < len(manifest.table))


def write(run_dir: Path, info: dict) -> None:
    rf.write_info(run_dir, info)


def finish(run_dir: Path, info: dict) -> None:
    info["finished"] = now()
    write(run_dir, info)


def operating_point(oof: pd.DataFrame, cfg: ExperimentConfig) -> dict:
    """The decision threshold for future data, chosen on all out-of-fold predictions (the rule
    lives in medrec.eval.thresholds; an undefined label gets None instead of ending the run)."""
    from medrec.eval.thresholds import run_operating_point

    return run_operating_point(oof, cfg.data.task, cfg.eval.operating_point)


def tensorboard(run_dir: Path):
    """A TensorBoard writer under RUN/tensorboard (rank 0 only), or None if unavailable."""
    from medrec.train import distributed as dist

    if not dist.is_main():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard not installed; per-epoch metrics go to history.csv only")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def mlflow_run(cfg: ExperimentConfig, run_dir: Path):
    """An MLflow run when mlflow is installed and MLFLOW_TRACKING_URI is set (rank 0), else None."""
    from medrec.train import distributed as dist

    if not dist.is_main() or not os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    try:
        import mlflow
    except ImportError:
        log.info("MLFLOW_TRACKING_URI is set but mlflow is not installed; pip install mlflow")
        return None
    active = mlflow.start_run(run_name=run_dir.name)
    mlflow.log_params({"arch": cfg.model.arch, "weights": cfg.model.weights, "image_size": cfg.data.image_size,
                       "epochs": cfg.train.epochs, "lr": cfg.train.lr, "folds": cfg.cv.folds, "seed": cfg.seed})
    return active

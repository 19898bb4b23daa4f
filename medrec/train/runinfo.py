"""run.json: what a run was made from (config, data fingerprint, weights, versions, hardware)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medrec.config import ExperimentConfig
from medrec.data.manifest import NPZ_SEP, Manifest
from medrec.fileio import atomic_write_text

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


def data_fingerprint(manifest: Manifest) -> dict:
    """sha256 of the manifest file and of every image file (name-independent order: sorted paths)."""
    files = sorted({p.split(NPZ_SEP)[0] for p in manifest.table["path"]})
    root = Path(manifest.data_root)
    h = hashlib.sha256()
    for f in files:
        rel = os.path.relpath(f, root)
        h.update(f"{rel}\0{sha256_file(Path(f))}\n".encode())
    src = Path(manifest.source)
    return {"manifest_sha256": sha256_file(src) if src.is_file() else None, "images_sha256": h.hexdigest(),
            "n_images": int(len(manifest.table)), "n_files": len(files),
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


def start(run_dir: Path, cfg: ExperimentConfig, manifest: Manifest, provenance: dict, device: torch.device) -> dict:
    """Write (or, on resume, refresh) run.json before the first fold trains."""
    path = run_dir / "run.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    info = {
        "name": cfg.name, "created": old.get("created", now()), "finished": None,
        "wall_time_s": old.get("wall_time_s", 0.0), "status": "running", "run_dir": str(run_dir.resolve()),
        "task": cfg.data.task, "label_names": list(manifest.label_columns), "class_names": list(manifest.class_names),
        **{k: provenance.get(k) for k in ("initialisation", "weights_file", "weights_sha256")},
        "data_root": manifest.data_root, "data_fingerprint": old.get("data_fingerprint") or data_fingerprint(manifest),
        "patient_level": _patient_level(manifest), "git_commit": git_commit(), "versions": versions(),
        "seeds": {"seed": cfg.seed, "bootstrap_seed": cfg.eval.bootstrap_seed},
        "hardware": hardware(device), "operating_point": cfg.eval.operating_point, "threshold": None,
        "privacy": {"show_identifiers": cfg.privacy.show_identifiers}, "volatile_fields": list(VOLATILE_FIELDS),
    }
    write(run_dir, info)
    return info


def _patient_level(manifest: Manifest) -> bool:
    """False when every image is its own 'patient' (e.g. MedMNIST): folds are then image-level."""
    return bool(manifest.table["patient_id"].nunique() < len(manifest.table))


def write(run_dir: Path, info: dict) -> None:
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2, sort_keys=True, default=_jsonable))


def finish(run_dir: Path, info: dict) -> None:
    info["finished"] = now()
    write(run_dir, info)


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


def operating_point(oof: pd.DataFrame, cfg: ExperimentConfig) -> dict:
    """The decision threshold for future data, chosen on all out-of-fold predictions."""
    from medrec.eval.metrics import choose_threshold

    rule = cfg.eval.operating_point
    if cfg.data.task == "binary":
        return {"threshold": float(choose_threshold(oof["label"].to_numpy(), oof["score"].to_numpy(), rule))}
    if cfg.data.task == "multiclass":
        return {"threshold": None}
    out = {}
    for col in [c for c in oof.columns if c.startswith("label_")]:
        name = col[len("label_"):]
        ok = oof[col].notna().to_numpy()
        out[name] = float(choose_threshold(oof[col].to_numpy()[ok], oof[f"score_{name}"].to_numpy()[ok], rule))
    return {"threshold": out}


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

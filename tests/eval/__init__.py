"""Helpers shared by the evaluation tests: synthetic run folders that follow the run-folder contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medrec.config import ExperimentConfig, save_config

RUN_INFO = {
    "created": "2026-01-01T10:00:00+00:00",
    "finished": "2026-01-01T11:02:03+00:00",
    "wall_time_s": 3723.4,
    "status": "finished",
    "initialisation": "imagenet",
    "weights_file": "/cache/hub/checkpoints/resnet18-f37072fd.pth",
    "weights_sha256": "f37072fd" * 8,
    "data_root": "/data/demo",
    "data_fingerprint": {"manifest_sha256": "a1b2c3d4" * 8, "images_sha256": "e5f6a7b8" * 8, "n_images": 0},
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "versions": {"medrec": "0.1.0", "torch": "2.14.1", "numpy": "2.4.6"},
    "seeds": {"seed": 7, "fold_seeds": [7, 8, 9]},
    "hardware": {"device": "cpu", "cpu_count": 2},
    "operating_point": "youden",
    "folds": [],
    "privacy": {"show_identifiers": False},
}


def oof_table(task: str, names: tuple[str, ...], *, n_patients: int = 45, images: int = 3, folds: int = 3,
              repeats: int = 1, seed: int = 0, signal: float = 0.35) -> pd.DataFrame:
    """Random out-of-fold predictions with some signal; a patient's images share fold and label."""
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(np.arange(n_patients) % folds)
    label_of = rng.random((n_patients, len(names))) < 0.4
    klass_of = rng.integers(0, len(names), n_patients)
    rows = []
    for r in range(repeats):
        for p in range(n_patients):
            for i in range(images):
                row = {"path": f"/data/demo/p{p:03d}/img{i}.dcm", "image_id": f"img{p:03d}-{i}",
                       "patient_id": f"pt{p:03d}", "fold": int((fold_of[p] + r) % folds), "repeat": r}
                if task == "binary":
                    y = int(label_of[p, 0])
                    row.update(label=y, score=float(np.clip(signal * y + (1 - signal) * rng.random(), 0, 1)))
                elif task == "multilabel":
                    for j, n in enumerate(names):
                        y = float(label_of[p, j]) if rng.random() > 0.15 else np.nan
                        row[f"label_{n}"] = y
                        row[f"score_{n}"] = float(np.clip(signal * (y == 1) + (1 - signal) * rng.random(), 0, 1))
                else:
                    prob = rng.dirichlet(np.ones(len(names)))
                    prob[klass_of[p]] += 2 * signal
                    prob /= prob.sum()
                    for j, n in enumerate(names):
                        row[f"label_{n}"] = int(j == klass_of[p])
                        row[f"score_{n}"] = float(prob[j])
                rows.append(row)
    return pd.DataFrame(rows)


def write_run(run_dir: Path, table: pd.DataFrame, task: str, names: tuple[str, ...], *,
              name: str = "demo-run", eval_cfg: dict | None = None, info: dict | None = None,
              data_cfg: dict | None = None) -> Path:
    """A run folder with oof_predictions.csv, run.json and config.yaml (via medrec.config.save_config).

    The images are taken to live under /data/demo (data.root, where oof_table puts them) unless
    `data_cfg` says otherwise: report thumbnails are only read inside the run's data folders."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(run_dir / "oof_predictions.csv", index=False)
    cfg = ExperimentConfig.model_validate({
        "name": name, "data": {"task": task, "root": "/data/demo", **(data_cfg or {})},
        "eval": {"bootstrap": 200, "bootstrap_seed": 3, "worst_cases": 4, **(eval_cfg or {})},
    })
    save_config(cfg, run_dir / "config.yaml")
    meta = {**RUN_INFO, "name": name, "task": task, **(info or {})}
    if task == "multiclass":
        meta.update(class_names=list(names), label_names=["label"])
    else:
        meta.update(label_names=list(names), class_names=None)
    (run_dir / "run.json").write_text(json.dumps(meta))
    return run_dir

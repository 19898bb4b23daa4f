"""`python -m medrec.predict --run RUN --input PATH --out preds.csv`: fold-ensemble inference.

Each fold's network and preprocessing are rebuilt from its checkpoint alone
(`RUN/folds/fold_<k>/best.pt`: resolved config, normalisation, task, label names), the
images are preprocessed exactly as in training (`medrec.data.transforms`: one read with the
run's window, resize of the longest side, zero padding, float16, normalisation), and the
fold models' probabilities are averaged. Optional test-time augmentation (`--tta flip`)
averages each model's probabilities over the image and its horizontal mirror.

Outputs, beside `--out` (default RUN/predictions/predictions.csv), see README "Prediction files":
    preds.csv           one row per predicted image
    preds.errors.csv    path, reason: inputs that could not be read (header only if none)
    preds.meta.json     what was run: models, preprocessing, threshold, TTA, counts, timing
    preds.metrics.json  metrics with bootstrap CIs, when the input carries labels
    cams/<image_id>.npy|.png  Grad-CAM maps and overlays with --cam (medrec.explain)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medrec.config import ExperimentConfig, validate_config
from medrec.data.manifest import table_slices
from medrec.errors import CheckpointError, ConfigError, DataError, MedrecError

log = logging.getLogger(__name__)

FORMAT = "medrec-predictions/1"
EXIT_FAILED = 2  # nothing could be predicted: bad run folder, bad options, no inputs (as medrec.finetune)
EXIT_UNREADABLE = 3  # --strict and at least one input could not be read
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".nii", ".nii.gz")
# Settings every fold of a run must share, since one preprocessed tensor feeds all of them.
_SHARED_DATA = ("image_size", "window", "frame", "modality", "channels", "intensity", "slice")


# ---------------------------------------------------------------- inputs

@dataclass
class Inputs:
    """The images to predict: path, image_id, patient_id (pseudonymous) and label columns."""

    table: pd.DataFrame
    kind: str  # "image", "folder", "manifest" or "npz"
    errors: list[dict[str, str]] = field(default_factory=list)
    skipped: int = 0  # folder files that are not images (README.txt, .csv, ...)
    pseudonym_key_id: str | None = None


def collect_inputs(path: Path, cfg: ExperimentConfig, *, split: str = "test") -> Inputs:
    """Turn `--input` into a table of images to predict.

    PATH is a manifest CSV (.csv), a MedMNIST-style npz (.npz, `split`), a folder (searched
    recursively for DICOM, PNG, JPEG and NIfTI files) or one image file.

    Raises:
        DataError: PATH does not exist, or a folder holds no image file.
    """
    from medrec.data.manifest import image_id_for

    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataError(f"--input {path} does not exist; give a DICOM/PNG/NIfTI file, a folder, a manifest CSV or an npz")
    name = path.name.lower()
    if path.is_file() and name.endswith(".csv"):
        return _manifest_inputs(path, cfg)
    if path.is_file() and name.endswith(".npz"):
        from medrec.data.sources import medmnist_table

        table = medmnist_table(path, split, None)
        table["image_id"] = [image_id_for(p) for p in table["path"]]
        return Inputs(_with_labels(table, cfg), "npz")
    if path.is_dir():
        files, errors, skipped = _scan_folder(path)
        if not files and not errors:
            raise DataError(f"--input {path}: no DICOM, PNG, JPEG or NIfTI file found ({skipped} other file(s))")
        inputs = _file_inputs(files, cfg, "folder")
        inputs.errors, inputs.skipped = errors, skipped
        return inputs
    return _file_inputs([path], cfg, "image")


def _with_slices(table: pd.DataFrame, cfg: ExperimentConfig) -> pd.DataFrame:
    """`data.slice: all` runs predict every slice of each volume, as they were trained."""
    if cfg.data.slice != "all":
        return table
    from medrec.data.sources import expand_slices

    return expand_slices(table).reset_index(drop=True)


def _manifest_inputs(path: Path, cfg: ExperimentConfig) -> Inputs:
    from medrec.data.manifest import first_duplicate, image_ids
    from medrec.data.sources import load_manifest_csv

    table = load_manifest_csv(path, root=None, image_column=cfg.data.image_column,
                              patient_column=cfg.data.patient_column)
    table = _with_slices(table, cfg)
    dup = first_duplicate(table)
    if dup is not None:
        raise DataError(f"{path}: image {dup} is listed twice")
    if "image_id" not in table.columns:
        table["image_id"] = image_ids(table)
    missing = table["patient_id"].isna()
    table["patient_id"] = table["patient_id"].astype(str).where(~missing, table["image_id"])
    return Inputs(_with_labels(table, cfg), "manifest")


def _with_labels(table: pd.DataFrame, cfg: ExperimentConfig) -> pd.DataFrame:
    """path, image_id, patient_id and the run's label columns as named in predictions CSVs."""
    out = table[["path", "image_id", "patient_id"]].astype(str).reset_index(drop=True)
    if "slice" in table.columns:
        out["slice"] = pd.to_numeric(table["slice"], errors="coerce").astype("Int64").to_numpy()
    cols = [c for c in cfg.data.label_columns if c in table.columns]
    if not cols:
        return out
    values = {c: pd.to_numeric(table[c], errors="coerce").to_numpy() for c in cols}
    if cfg.data.task in ("binary", "multiclass"):
        out["label"] = values[cols[0]]
    else:
        for c in cfg.data.label_columns:
            out[f"label_{c}"] = values.get(c, np.full(len(out), np.nan))
    return out


def _scan_folder(root: Path) -> tuple[list[Path], list[dict[str, str]], int]:
    from medrec.io.images import has_dicm_marker
    from medrec.io.index import dicom_like_name, walk_files

    files, folder_errors = walk_files(root)
    errors = [{"path": str(root / e["path"]), "reason": e["reason"]} for e in folder_errors]
    images = [f for f in files if f.name.lower().endswith(IMAGE_SUFFIXES) or dicom_like_name(f) or has_dicm_marker(f)]
    return images, errors, len(files) - len(images)


def _file_inputs(files: list[Path], cfg: ExperimentConfig, kind: str) -> Inputs:
    """Image files; DICOM patients get keyed pseudonyms, others their image_id."""
    from medrec.data.manifest import image_ids

    paths = [str(f) for f in files]
    patients, key_id = _dicom_pseudonyms(files, cfg)
    table = _with_slices(pd.DataFrame({"path": paths, "patient_id": patients}), cfg)
    table.insert(1, "image_id", image_ids(table))
    table["patient_id"] = [p or i for p, i in zip(table["patient_id"], table["image_id"])]
    return Inputs(table, kind, pseudonym_key_id=key_id)


def _dicom_pseudonyms(files: list[Path], cfg: ExperimentConfig) -> tuple[list[str | None], str | None]:
    """HMAC pseudonym of each DICOM file's PatientID (None when absent or not DICOM).

    The raw id is read, hashed with the run's pseudonym key (`medrec.privacy`) and dropped.
    """
    from medrec.io.dicom import dicom_identifiers
    from medrec.privacy import load_key

    key, out = None, []
    for f in files:
        raw = None
        if not f.name.lower().endswith(IMAGE_SUFFIXES):
            try:
                raw = dicom_identifiers(f)["patient_id"]
            except MedrecError:
                raw = None  # unreadable: the pixel read reports it in the errors file
        if raw:
            key = key or load_key(cfg.privacy.pseudonym_key_env)
            out.append(key.pseudonym(raw, "patient"))
        else:
            out.append(None)
    return out, key.key_id if key else None


# ---------------------------------------------------------------- the fold ensemble

@dataclass
class Ensemble:
    """The fold models of a run and what they share."""

    run_dir: Path
    folds: list[str]  # fold folder names, e.g. ["fold_0", "fold_1"]
    models: list[nn.Module]
    cfg: ExperimentConfig  # the resolved config stored in the first checkpoint
    task: str
    names: tuple[str, ...]  # binary: the label column; multiclass: classes; multilabel: labels
    norm: dict[str, list[float]]
    arch: str
    threshold: float | dict[str, float] | None  # None for multiclass (arg-max)
    threshold_source: str
    device: torch.device

    @property
    def score_columns(self) -> list[str]:
        """Score columns as in oof_predictions.csv: `score` (binary) or `score_<name>`."""
        return ["score"] if self.task == "binary" else [f"score_{n}" for n in self.names]


def fold_checkpoints(run_dir: Path, folds: list[str] | None = None) -> list[tuple[str, Path]]:
    """(fold folder name, best.pt) for the chosen folds ("2" means fold_2), all by default.

    Raises:
        CheckpointError: no fold checkpoint in the run, or a chosen fold has none.
    """
    root = Path(run_dir) / "folds"
    available = sorted((d.name for d in root.iterdir() if (d / "best.pt").is_file()) if root.is_dir() else [],
                       key=_fold_order)
    if not available:
        raise CheckpointError(f"{run_dir}: no folds/*/best.pt; is it a finished medrec run folder?")
    if not folds:
        return [(n, root / n / "best.pt") for n in available]
    chosen = []
    for f in folds:
        name = f"fold_{f}" if str(f).isdigit() else str(f)
        if name not in available:
            raise CheckpointError(f"--folds {f}: {root / name / 'best.pt'} not found; available: {', '.join(available)}")
        chosen.append((name, root / name / "best.pt"))
    return chosen


def _fold_order(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split("_") if p.isdigit())


def load_ensemble(run_dir: str | Path, folds: list[str] | None = None, *,
                  device: torch.device | str | None = None) -> Ensemble:
    """Rebuild the chosen fold models (eval mode) from their checkpoints alone.

    `device` None means the run's train.device ("auto": CUDA when available).

    Raises:
        CheckpointError: a checkpoint is missing or unsafe, or the folds disagree on task,
            labels, normalisation or preprocessing.
    """
    from medrec.train.checkpoint import load_checkpoint, rebuild_model
    from medrec.train.distributed import local_device

    run_dir = Path(run_dir).resolve()
    models, names, first, cfg = [], [], None, None
    for name, path in fold_checkpoints(run_dir, folds):
        ckpt = load_checkpoint(path)
        if first is None:
            first, cfg = ckpt, validate_config(ckpt["config"], f"{path} config")
            device = local_device(str(device or cfg.train.device))
        else:
            _check_same(first, ckpt, path)
        models.append(rebuild_model(ckpt).to(device).eval())
        names.append(name)
    task, labels = first["task"], tuple(first["label_names"])
    threshold, source = run_threshold(run_dir, task, labels, first)
    return Ensemble(run_dir, names, models, cfg, task, labels, dict(first["normalization"]),
                    cfg.model.arch, threshold, source, torch.device(device))


def _check_same(a: dict, b: dict, path: Path) -> None:
    pairs = {"task": (a["task"], b["task"]), "label_names": (a["label_names"], b["label_names"]),
             "normalization": (a["normalization"], b["normalization"]),
             "model.in_channels": (a["config"]["model"]["in_channels"], b["config"]["model"]["in_channels"])}
    pairs |= {f"data.{k}": (a["config"]["data"].get(k), b["config"]["data"].get(k)) for k in _SHARED_DATA}
    for what, (x, y) in pairs.items():
        if x != y:
            raise CheckpointError(f"{path}: {what} {y!r} differs from the first fold's {x!r}; "
                                  "predict with folds of one run (--folds)")


def run_threshold(run_dir: Path, task: str, names: tuple[str, ...], ckpt: dict):
    """The run's stored operating point (run.json "threshold"), else 0.5 with a warning."""
    if task == "multiclass":
        return None, "argmax"
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    thr = info.get("threshold", ckpt.get("threshold"))
    if task == "binary" and isinstance(thr, (int, float)) and not isinstance(thr, bool):
        return float(thr), "run.json"
    if task == "multilabel" and isinstance(thr, dict) and all(n in thr for n in names):
        return {n: float(thr[n]) for n in names}, "run.json"
    log.warning("%s has no stored threshold for every label (unfinished run?); decisions use 0.5", info_path)
    return (0.5 if task == "binary" else {n: 0.5 for n in names}), "default 0.5 (run.json has none)"


# ---------------------------------------------------------------- data

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

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from medrec.data.transforms import ERROR_KEY

        try:
            k = self.slices[i]
            item = self.pre({"image": self.paths[i], "slice": -1 if k is None else k})
            if ERROR_KEY in item:
                return {"index": i, "error": item[ERROR_KEY]}
            out = {"index": i, "image": self.finish({"image": item["image"]})["image"]}
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
            "errors": [(b["index"], b["error"]) for b in batch if "error" in b]}


def make_loader(dataset: ImageDataset, batch_size: int, workers: int, device: torch.device):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       collate_fn=collate, pin_memory=device.type == "cuda")


# ---------------------------------------------------------------- inference

def score_batch(models: list[nn.Module], x: torch.Tensor, task: str, *, tta: str = "none", amp: str = "none",
                channels_last: bool = False) -> torch.Tensor:
    """Probabilities of each model on a batch: (models, batch, outputs), float32.

    With tta="flip" each model's probabilities are the mean over x and its left-right mirror.
    Call under torch.inference_mode().
    """
    from medrec.train.loop import autocast_context, scores_from_logits

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


# ---------------------------------------------------------------- outputs

def predictions_table(inputs: pd.DataFrame, scores: np.ndarray, ens: Ensemble, *,
                      fold_scores: bool = False) -> pd.DataFrame:
    """The predictions CSV rows for `inputs` (one row each) and their per-model `scores`."""
    out = inputs.reset_index(drop=True).copy()
    n_out = 1 if ens.task == "binary" else len(ens.names)
    per_model = scores.astype(np.float64).reshape(len(ens.folds), len(out), n_out)
    mean, std = per_model.mean(axis=0), per_model.std(axis=0)  # std over the fold models (ddof 0)
    suffixes = [""] if ens.task == "binary" else [f"_{n}" for n in ens.names]
    for j, s in enumerate(suffixes):
        out[f"score{s}"] = mean[:, j]
    for j, s in enumerate(suffixes):
        out[f"score_std{s}"] = std[:, j]
    if ens.task == "binary":
        out["pred"] = (mean[:, 0] >= ens.threshold).astype(int)
    elif ens.task == "multiclass":
        out["pred"] = [ens.names[k] for k in mean.argmax(axis=1)] if len(mean) else []
    else:
        for j, n in enumerate(ens.names):
            out[f"pred_{n}"] = (mean[:, j] >= ens.threshold[n]).astype(int)
    if fold_scores:
        for m, fold in enumerate(ens.folds):
            for j, s in enumerate(suffixes):
                out[f"{fold}_score{s}"] = per_model[m, :, j]
    return out


def label_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c == "label" or c.startswith("label_")]


def prediction_metrics(table: pd.DataFrame, ens: Ensemble, source: str) -> dict | None:
    """Metrics of labelled predictions at the run's stored operating point, with patient-level
    bootstrap CIs (the report's functions; the threshold is not re-chosen on these images).

    Returns None when no row has a label.
    """
    from medrec.eval import metrics as M
    from medrec.eval.report import oof_from_table

    cols = label_columns(table)
    if not cols or table[cols].isna().all().all():
        return None
    t = table.assign(fold=0, repeat=0)
    if ens.task == "multiclass":
        t = t[t["label"].notna()]
    oof, unit = oof_from_table(t, ens.task, ens.names, source)
    thresholds = None
    if ens.task != "multiclass":
        per_label = [ens.threshold] if ens.task == "binary" else [ens.threshold[n] for n in ens.names]
        thresholds = np.broadcast_to(np.asarray(per_label, dtype=float), oof.y.shape).copy()
    e = ens.cfg.eval
    ci = M.bootstrap(M.oof_statistic(oof, thresholds, e.calibration_bins), oof.unit,
                     n_resamples=e.bootstrap, seed=e.bootstrap_seed)
    headline, per_label_metrics = {}, {}
    for (label, metric), value in ci.items():
        (headline if label == M.HEADLINE else per_label_metrics.setdefault(label, {}))[metric] = value
    return {
        "format": "medrec-prediction-metrics/1", "task": ens.task, "labels": list(ens.names),
        "n_images": len(t), "n_units": len(np.unique(oof.unit)),
        "operating_point": {"rule": e.operating_point if ens.task != "multiclass" else "argmax",
                            "threshold": ens.threshold, "source": ens.threshold_source,
                            "chosen_on": "the run's out-of-fold predictions, not these images"},
        "bootstrap": {"n_resamples": e.bootstrap, "seed": e.bootstrap_seed, "unit": unit, "confidence": 0.95,
                      "method": "percentile"},
        "metrics": headline, "per_label": per_label_metrics, "confusion_matrix": M.confusion(oof, thresholds),
        "models": list(ens.folds),
    }


def sidecar(out_csv: Path, kind: str) -> Path:
    """`preds.csv` -> `preds.errors.csv` / `preds.metrics.json` / `preds.meta.json`."""
    stem = out_csv.name[:-4] if out_csv.name.lower().endswith(".csv") else out_csv.name
    return out_csv.with_name(f"{stem}.{kind}")


# ---------------------------------------------------------------- the whole job

@dataclass
class Options:
    """How to predict; None means "as the run's config says"."""

    folds: list[str] | None = None
    split: str = "test"
    tta: str = "none"
    batch_size: int | None = None
    workers: int | None = None
    device: str | None = None
    amp: str | None = None
    channels_last: bool | None = None
    cam: bool = False
    cam_class: str | None = None
    fold_scores: bool = False
    progress: bool = False


def predict(run_dir: str | Path, input_path: str | Path, out_csv: str | Path | None = None,
            options: Options | None = None) -> dict[str, Any]:
    """Predict every image of `input_path` with the run's fold ensemble and write the outputs.

    Returns:
        The metadata written to `<out>.meta.json` (counts, files, settings, timing).
    Raises:
        CheckpointError, ConfigError, DataError: the run, the options or the input are unusable.
    """
    from medrec.fileio import atomic_write_text

    o, start = options or Options(), time.perf_counter()
    run_dir = Path(run_dir).resolve()
    if o.tta not in ("none", "flip"):
        raise ConfigError(f"--tta {o.tta} unknown; valid: none, flip")
    out_csv = Path(out_csv) if out_csv else run_dir / "predictions" / "predictions.csv"
    ens = load_ensemble(run_dir, o.folds, device=o.device)
    device = ens.device
    cam_class = _cam_class(ens, o) if o.cam else None
    settings = _settings(ens, o, device)
    if settings["channels_last"]:
        ens.models = [m.to(memory_format=torch.channels_last) for m in ens.models]
    inputs = collect_inputs(Path(input_path), ens.cfg, split=o.split)
    ds = ImageDataset(list(inputs.table["path"]), ens, slices=table_slices(inputs.table))
    bar = _progress(len(ds)) if o.progress else None
    started = time.perf_counter()
    scores, rows, read_errors = predict_batches(
        ens.models, make_loader(ds, settings["batch_size"], settings["workers"], device), ens.task, device=device,
        tta=o.tta, amp=settings["amp"], channels_last=settings["channels_last"],
        on_batch=bar.update if bar else None)
    if bar:
        bar.close()
    timing = {"inference_s": time.perf_counter() - started}
    table = predictions_table(inputs.table.iloc[rows], scores, ens, fold_scores=o.fold_scores)
    errors = inputs.errors + [{"path": ds.paths[i], "reason": r} for i, r in read_errors]
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_csv, table.to_csv(index=False))
    atomic_write_text(sidecar(out_csv, "errors.csv"), pd.DataFrame(errors, columns=["path", "reason"]).to_csv(index=False))
    cams = _cams(ens, table, cam_class, out_csv.parent / "cams", settings, device) if o.cam else None
    metrics = prediction_metrics(table, ens, str(out_csv))
    if metrics is not None:
        from medrec.eval.report import dumps

        atomic_write_text(sidecar(out_csv, "metrics.json"), dumps(metrics))
    timing["total_s"] = time.perf_counter() - start
    meta = _metadata(ens, inputs, o, settings, out_csv, table, errors, metrics, cams, timing)
    atomic_write_text(sidecar(out_csv, "meta.json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def _settings(ens: Ensemble, o: Options, device: torch.device) -> dict[str, Any]:
    t, d = ens.cfg.train, ens.cfg.data
    amp = o.amp if o.amp is not None else t.amp
    if amp not in ("none", "bf16", "fp16"):
        raise ConfigError(f"--amp {amp} unknown; valid: none, bf16, fp16")
    batch = o.batch_size or t.batch_size
    if batch < 1 or (o.workers is not None and o.workers < 0):
        raise ConfigError("--batch-size must be >= 1 and --workers >= 0")
    return {"device": str(device), "amp": amp, "batch_size": batch,
            "workers": o.workers if o.workers is not None else d.num_workers,
            "channels_last": t.channels_last if o.channels_last is None else o.channels_last}


def _progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="predict", dynamic_ncols=True, leave=False)


def _cam_class(ens: Ensemble, o: Options) -> int | None:
    """The output index every CAM explains, or None for each image's predicted class."""
    if o.cam_class is not None:
        if ens.task == "binary":
            if o.cam_class not in ens.names:
                raise ConfigError(f"--cam-class {o.cam_class} unknown; this binary run has one output: {ens.names[0]}")
            return 0
        if o.cam_class not in ens.names:
            raise ConfigError(f"--cam-class {o.cam_class} unknown; valid: {', '.join(ens.names)}")
        return ens.names.index(o.cam_class)
    if ens.task == "multilabel":
        raise ConfigError(f"--cam on a multilabel run needs --cam-class NAME; valid: {', '.join(ens.names)}")
    return 0 if ens.task == "binary" else None


def _cams(ens: Ensemble, table: pd.DataFrame, cam_class: int | None, folder: Path, settings: dict,
          device: torch.device) -> dict[str, Any]:
    """Grad-CAM of every predicted image (medrec.explain), averaged over the fold models."""
    from medrec import explain
    from medrec.data.reading import display_image

    models = [m.to(memory_format=torch.contiguous_format) for m in ens.models]
    layer = explain.cam_layer(ens.arch)
    ecam = explain.EnsembleCAM(models, layer)
    if cam_class is None:
        targets = table[ens.score_columns].to_numpy().argmax(axis=1)
    else:
        targets = np.full(len(table), cam_class)
    ds = ImageDataset(list(table["path"]), ens, keep_geometry=True, slices=table_slices(table))
    written = 0
    for batch in make_loader(ds, min(settings["batch_size"], 16), settings["workers"], device):
        if batch["image"] is None:
            continue
        maps = ecam(batch["image"].to(device), torch.as_tensor(targets[batch["index"]])).cpu()
        for m, i, ops in zip(maps, batch["index"], batch["ops"]):
            image_id = str(table["image_id"].iat[i])
            if not explain.safe_name(image_id):
                log.warning("image_id %r is not a plain file name; no CAM written", image_id)
                continue
            cam = explain.normalise(explain.to_original(m, ops))
            gray = display_image(ds.paths[i], ens.cfg.data, ds.slices[i])
            explain.write_cam(folder, image_id, cam, gray if gray.shape == cam.shape else None)
            written += 1
    target = "predicted class" if cam_class is None else ens.names[cam_class]
    if ens.task == "binary":
        target = f"positive logit ({ens.names[0]})"
    return {"folder": str(folder), "written": written, "layer": layer, "target": target,
            "resolution": "original image size (rows x columns of the file)", "dtype": "float16",
            "values": "[0, 1]: per-model map / its max, mean over fold models, / max"}


def _metadata(ens: Ensemble, inputs: Inputs, o: Options, settings: dict, out_csv: Path, table: pd.DataFrame,
              errors: list, metrics: dict | None, cams: dict | None, timing: dict[str, float]) -> dict[str, Any]:
    from medrec import __version__

    d = ens.cfg.data
    return {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "medrec": __version__, "torch": torch.__version__,
        "run_dir": str(ens.run_dir), "run_name": ens.cfg.name, "arch": ens.arch,
        "models": list(ens.folds), "ensemble": "mean of the fold models' probabilities; score_std: their std (ddof 0)",
        "task": ens.task, "label_names": list(ens.names), "score_columns": ens.score_columns,
        "threshold": ens.threshold, "threshold_source": ens.threshold_source,
        "operating_point": ens.cfg.eval.operating_point if ens.task != "multiclass" else "argmax",
        "decision": {"binary": "pred = score >= threshold", "multiclass": "pred = class with the highest score",
                     "multilabel": "pred_<label> = score_<label> >= threshold[label]"}[ens.task],
        "tta": o.tta, **settings,
        "preprocessing": {"image_size": d.image_size, "modality": d.modality, "window": d.window,
                          "channels": d.channels, "intensity": d.intensity, "slice": d.slice, "frame": d.frame,
                          "geometry": "longest side resized to image_size (area), padded to a square "
                                      + ("with 0" if d.modality == "cxr" else "with the image minimum"),
                          "in_channels": ens.cfg.model.in_channels, "normalization": ens.norm},
        "input": {"kind": inputs.kind, "n_images": len(inputs.table),
                  "n_skipped_not_images": inputs.skipped, "split": o.split if inputs.kind == "npz" else None},
        "n_predicted": len(table), "n_errors": len(errors),
        "files": {"predictions": str(out_csv), "errors": str(sidecar(out_csv, "errors.csv")),
                  "metrics": str(sidecar(out_csv, "metrics.json")) if metrics is not None else None},
        "cams": cams, "pseudonym_key_id": inputs.pseudonym_key_id,
        "seconds": {k: round(v, 3) for k, v in timing.items()},
        # reading + preprocessing + networks, without loading the models, CAMs or metrics
        "images_per_s": round(len(table) / timing["inference_s"], 2) if timing["inference_s"] > 0 else None,
    }


# ---------------------------------------------------------------- CLI

EPILOG = """\
examples:
  python -m medrec.predict --run runs/chest_xray --input scans/ --out preds/preds.csv
  python -m medrec.predict --run runs/chest_xray --input new_manifest.csv --tta flip --cam
  python -m medrec.predict --run runs/pneumonia --input pneumoniamnist.npz --split test --folds 0,2

Writes preds.csv, preds.errors.csv, preds.meta.json, preds.metrics.json (when the input has
labels) and, with --cam, cams/<image_id>.npy + .png beside the CSV. Exit code 0 even when some
inputs are unreadable (listed in preds.errors.csv); 3 with --strict; 2 when nothing can run.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m medrec.predict", description=__doc__.splitlines()[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder written by medrec.finetune")
    p.add_argument("--input", type=Path, required=True,
                   help="DICOM/PNG/JPEG/NIfTI file, folder (recursive), manifest CSV (path, patient_id[, labels]) or npz")
    p.add_argument("--out", type=Path, help="predictions CSV (default RUN/predictions/predictions.csv)")
    p.add_argument("--split", default="test", help="npz input: which split (default test)")
    p.add_argument("--folds", help="comma-separated folds to ensemble, e.g. 0,2 (default: all)")
    p.add_argument("--tta", choices=("none", "flip"), default="none",
                   help="flip: average each model over the image and its left-right mirror")
    p.add_argument("--batch-size", type=int, help="default: the run's train.batch_size")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default: the run's data.num_workers)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's train.device)")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), help="autocast (default: the run's train.amp)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (default: the run's train.channels_last)")
    p.add_argument("--cam", action="store_true", help="write Grad-CAM maps and overlays under <out dir>/cams/")
    p.add_argument("--cam-class", help="class or label the CAMs explain (required for multilabel runs)")
    p.add_argument("--fold-scores", action="store_true", help="also write each fold model's scores")
    p.add_argument("--strict", action="store_true", help=f"exit {EXIT_UNREADABLE} if any input cannot be read")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    folds = [f.strip() for f in args.folds.split(",") if f.strip()] if args.folds else None
    options = Options(folds=folds, split=args.split, tta=args.tta, batch_size=args.batch_size, workers=args.workers,
                      device=args.device, amp=args.amp, channels_last=args.channels_last, cam=args.cam,
                      cam_class=args.cam_class, fold_scores=args.fold_scores,
                      progress=not args.quiet and sys.stderr.isatty())
    try:
        meta = predict(args.run, args.input, args.out, options)
    except MedrecError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not args.quiet:
        print(summary(meta))
    return EXIT_UNREADABLE if args.strict and meta["n_errors"] else 0


def summary(meta: dict[str, Any]) -> str:
    f = meta["files"]
    lines = [f"predicted {meta['n_predicted']} image(s) with {len(meta['models'])} fold model(s) "
             f"({meta['images_per_s']} images/s) -> {f['predictions']}"]
    if meta["n_errors"]:
        lines.append(f"{meta['n_errors']} input(s) could not be read: see {f['errors']}")
    if meta["input"]["n_skipped_not_images"]:
        lines.append(f"{meta['input']['n_skipped_not_images']} file(s) skipped: not DICOM, PNG, JPEG or NIfTI")
    if f["metrics"]:
        lines.append(f"metrics: {f['metrics']}")
    if meta["cams"]:
        lines.append(f"Grad-CAM maps: {meta['cams']['written']} in {meta['cams']['folder']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

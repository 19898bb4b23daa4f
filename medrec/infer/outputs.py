"""What predict writes: the predictions table, its metrics, metadata and Grad-CAM maps."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medrec.data.manifest import table_slices
from medrec.runfolder import RUN_JSON, preprocessing_summary
from medrec.infer.engine import ImageDataset, make_loader
from medrec.infer.ensemble import THRESHOLD_NOTE, Ensemble
from medrec.infer.inputs import Inputs

log = logging.getLogger(__name__)

FORMAT = "medrec-predictions/1"


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
                            "chosen_on": ("the run's pooled out-of-fold scores of single fold models, not these images"
                                          if ens.threshold_source.startswith(RUN_JSON)
                                          else "a separate labelled tuning set (ensemble scores), not these images")},
        "bootstrap": {"n_resamples": e.bootstrap, "seed": e.bootstrap_seed, "unit": unit, "confidence": 0.95,
                      "method": "percentile"},
        "metrics": headline, "per_label": per_label_metrics, "confusion_matrix": M.confusion(oof, thresholds),
        "models": list(ens.folds),
    }


def sidecar(out_csv: Path, kind: str) -> Path:
    """`preds.csv` -> `preds.errors.csv` / `preds.metrics.json` / `preds.meta.json`."""
    stem = out_csv.name[:-4] if out_csv.name.lower().endswith(".csv") else out_csv.name
    return out_csv.with_name(f"{stem}.{kind}")



def write_cams(ens: Ensemble, table: pd.DataFrame, cam_class: int | None, folder: Path, settings: dict,
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



def metadata(ens: Ensemble, inputs: Inputs, o, settings: dict, out_csv: Path, table: pd.DataFrame,
              errors: list, metrics: dict | None, cams: dict | None, timing: dict[str, float]) -> dict[str, Any]:
    from medrec import __version__

    return {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "medrec": __version__, "torch": torch.__version__,
        "run_dir": str(ens.run_dir), "run_name": ens.cfg.name, "arch": ens.arch,
        "models": list(ens.folds), "ensemble": "mean of the fold models' probabilities; score_std: their std (ddof 0)",
        "task": ens.task, "label_names": list(ens.names), "score_columns": ens.score_columns,
        "threshold": ens.threshold, "threshold_source": ens.threshold_source,
        "threshold_chosen_on": None if ens.task == "multiclass" else (
            THRESHOLD_NOTE if ens.threshold_source.startswith(RUN_JSON) else "a labelled tuning set (threshold_tuning)"),
        "operating_point": ens.cfg.eval.operating_point if ens.task != "multiclass" else "argmax",
        "decision": {"binary": "pred = score >= threshold", "multiclass": "pred = class with the highest score",
                     "multilabel": "pred_<label> = score_<label> >= threshold[label]"}[ens.task],
        "tta": o.tta, **settings,
        "preprocessing": preprocessing_summary(ens.cfg, ens.norm),
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


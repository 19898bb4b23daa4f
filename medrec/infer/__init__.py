"""Fold-ensemble inference without its command line (`medrec.predict` is the CLI).

    inputs     --input as a table of images (manifest CSV, npz, folder, one file)
    ensemble   the run's fold models rebuilt from their checkpoints; the run's threshold
    engine     preprocessing as in training, batching, scores of every fold model
    outputs    predictions table, metrics, metadata, Grad-CAM maps
    threshold  --tune-threshold: the ensemble's own operating point on a labelled tuning set
    job        predict(run_dir, input, out_csv, Options): the whole job
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Imported on first use (PEP 562), so that `python -m medrec.predict` reads and checks its inputs
# before torch is imported: only engine, ensemble and outputs need torch.
_HOME = {
    "ImageDataset": "engine", "collate": "engine", "make_loader": "engine", "predict_batches": "engine",
    "score_batch": "engine", "Ensemble": "ensemble", "load_ensemble": "ensemble", "run_threshold": "ensemble",
    "Inputs": "inputs", "collect_inputs": "inputs", "refuse_too_large": "inputs", "Options": "job",
    "predict": "job", "FORMAT": "outputs", "metadata": "outputs", "prediction_metrics": "outputs",
    "predictions_table": "outputs", "sidecar": "outputs",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)


__all__ = [
    "FORMAT", "Ensemble", "ImageDataset", "Inputs", "Options", "collate", "collect_inputs", "load_ensemble",
    "make_loader", "metadata", "predict", "predict_batches", "prediction_metrics", "predictions_table",
    "refuse_too_large", "run_threshold", "score_batch", "sidecar",
]

"""Fold-ensemble inference without its command line (`medrec.predict` is the CLI).

    inputs     --input as a table of images (manifest CSV, npz, folder, one file)
    ensemble   the run's fold models rebuilt from their checkpoints; the run's threshold
    engine     preprocessing as in training, batching, scores of every fold model
    outputs    predictions table, metrics, metadata, Grad-CAM maps
    threshold  --tune-threshold: the ensemble's own operating point on a labelled tuning set
    job        predict(run_dir, input, out_csv, Options): the whole job
"""

from medrec.infer.engine import ImageDataset, collate, make_loader, predict_batches, score_batch
from medrec.infer.ensemble import Ensemble, load_ensemble, run_threshold
from medrec.infer.inputs import Inputs, collect_inputs
from medrec.infer.job import Options, predict
from medrec.infer.outputs import FORMAT, metadata, prediction_metrics, predictions_table, sidecar

__all__ = [
    "FORMAT", "Ensemble", "ImageDataset", "Inputs", "Options", "collate", "collect_inputs", "load_ensemble",
    "make_loader", "metadata", "predict", "predict_batches", "prediction_metrics", "predictions_table",
    "run_threshold", "score_batch", "sidecar",
]

"""The fold ensemble of a run: every fold model rebuilt from its checkpoint alone, and the run's
operating point (run.json, chosen on single-model out-of-fold scores; see `threshold_note`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medrec import runfolder as rf
from medrec.config import ExperimentConfig
from medrec.errors import CheckpointError
from medrec.runfolder import CheckpointMeta

log = logging.getLogger(__name__)

# Settings every fold of a run must share, since one preprocessed tensor feeds all of them.
SHARED_DATA = ("image_size", "window", "frame", "modality", "channels", "intensity", "slice")
THRESHOLD_NOTE = ("chosen on the run's pooled out-of-fold scores of single fold models, not on the ensemble's "
                  "scores: the ensemble mean is smoother, so its best threshold can differ; re-choose it on a "
                  "labelled tuning set with --tune-threshold")


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


def load_ensemble(run_dir: str | Path, folds: list[str] | None = None, *,
                  device: torch.device | str | None = None) -> Ensemble:
    """Rebuild the chosen fold models (eval mode) from their checkpoints alone.

    `device` None means the run's train.device ("auto": CUDA when available).

    Raises:
        CheckpointError: a checkpoint is missing or unsafe, or the folds disagree on task,
            labels, normalisation or preprocessing.
    """
    from medrec.train.distributed import local_device

    run_dir = Path(run_dir).resolve()
    models, names, first, cfg = [], [], None, None
    for name, path in rf.fold_checkpoints(run_dir, folds):
        ckpt = rf.load_checkpoint(path)
        if first is None:
            first, cfg = ckpt.meta, ckpt.meta.experiment_config()
            device = local_device(str(device or cfg.train.device))
        else:
            check_same(first, ckpt.meta, path)
        models.append(rf.model_from_checkpoint(ckpt).to(device).eval())
        names.append(name)
    labels = tuple(first.label_names)
    threshold, source = run_threshold(run_dir, first.task, labels)
    return Ensemble(run_dir, names, models, cfg, first.task, labels, dict(first.normalization),
                    cfg.model.arch, threshold, source, torch.device(device))


def check_same(a: CheckpointMeta, b: CheckpointMeta, path: Path) -> None:
    """Raise CheckpointError unless two folds can share one preprocessed input."""
    pairs = {"task": (a.task, b.task), "label_names": (a.label_names, b.label_names),
             "normalization": (a.normalization, b.normalization),
             "model.in_channels": (a.config["model"]["in_channels"], b.config["model"]["in_channels"])}
    pairs |= {f"data.{k}": (a.config["data"].get(k), b.config["data"].get(k)) for k in SHARED_DATA}
    for what, (x, y) in pairs.items():
        if x != y:
            raise CheckpointError(f"{path}: {what} {y!r} differs from the first fold's {x!r}; "
                                  "predict with folds of one run (--folds)")


def run_threshold(run_dir: Path, task: str, names: tuple[str, ...]):
    """(threshold as run.json stores it, source): medrec.runfolder.thresholds' one rule."""
    info = rf.read_info(run_dir) if (Path(run_dir) / rf.RUN_JSON).is_file() else {}
    thr = rf.thresholds(info, task, names)
    if thr.missing:
        log.warning("%s has no stored threshold for %s (unfinished run?); decisions use %s for them",
                    Path(run_dir) / rf.RUN_JSON, ", ".join(thr.missing), rf.DEFAULT_THRESHOLD)
    return thr.for_task(task), ("argmax" if task == "multiclass" else thr.source)

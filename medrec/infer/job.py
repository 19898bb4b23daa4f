"""The whole predict job: read the inputs, refuse oversized ones, load the ensemble, score, write every output.

torch is imported only once there is something to predict: the inputs are collected with the run's
config.yaml and header-checked against its io limits (`medrec.io.preflight`) first, so a folder of
decompression bombs is refused in a fraction of a second and a few tens of MB.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medrec import runfolder as rf
from medrec.data.manifest import table_slices
from medrec.data.reading import ReadCounts, ReadInfo
from medrec.errors import ConfigError
from medrec.fileio import atomic_write_json, atomic_write_text
from medrec.infer.inputs import Inputs, collect_inputs, refuse_too_large
from medrec.infer.threshold import tune_ensemble_threshold

if TYPE_CHECKING:
    import torch

    from medrec.infer.ensemble import Ensemble

log = logging.getLogger(__name__)


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
    allow_identifying_paths: bool = False  # go on when input paths carry their files' identifiers
    tune_threshold: Path | None = None  # labelled manifest CSV: re-choose the threshold on ensemble scores


def predict(run_dir: str | Path, input_path: str | Path, out_csv: str | Path | None = None,
            options: Options | None = None) -> dict[str, Any]:
    """Predict every image of `input_path` with the run's fold ensemble and write the outputs.

    Returns:
        The metadata written to `<out>.meta.json` (counts, files, settings, timing).
    Raises:
        CheckpointError, ConfigError, DataError: the run, the options or the input are unusable
            (DataError too when every input is refused, before any model is loaded).
    """
    o, start = options or Options(), time.perf_counter()
    run_dir = Path(run_dir).resolve()
    if o.tta not in ("none", "flip"):
        raise ConfigError(f"--tta {o.tta} unknown; valid: none, flip")
    out_csv = Path(out_csv) if out_csv else run_dir / "predictions" / "predictions.csv"
    # With config.yaml (every run medrec.finetune writes) the inputs are checked before torch loads;
    # a folder holding only fold checkpoints takes the config from the first of them.
    early = rf.config_path(run_dir).is_file()
    inputs = _checked_inputs(rf.read_config(run_dir), Path(input_path), o) if early else None
    import torch  # only now: something is left to predict

    from medrec.infer.ensemble import load_ensemble
    from medrec.infer.outputs import metadata, prediction_metrics, sidecar, write_cams

    ens = load_ensemble(run_dir, o.folds, device=o.device)
    inputs = inputs or _checked_inputs(ens.cfg, Path(input_path), o)
    cam_class = _cam_class(ens, o) if o.cam else None
    settings = _settings(ens, o, ens.device)
    if settings["channels_last"]:
        ens.models = [m.to(memory_format=torch.channels_last) for m in ens.models]
    tuning = tune_ensemble_threshold(ens, o, settings, inputs.table) if o.tune_threshold else None
    table, errors, timing, reading = _score(ens, inputs, o, settings)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_csv, table.to_csv(index=False))
    atomic_write_text(sidecar(out_csv, "errors.csv"), pd.DataFrame(errors, columns=["path", "reason"]).to_csv(index=False))
    cams = write_cams(ens, table, cam_class, out_csv.parent / "cams", settings, ens.device) if o.cam else None
    metrics = prediction_metrics(table, ens, str(out_csv))
    if metrics is not None:
        from medrec.eval.report import dumps

        atomic_write_text(sidecar(out_csv, "metrics.json"), dumps(metrics))
    timing["total_s"] = time.perf_counter() - start
    meta = metadata(ens, inputs, o, settings, out_csv, table, errors, metrics, cams, timing)
    meta["threshold_tuning"] = tuning
    meta |= reading.write(sidecar(out_csv, "conversions.csv"), meta["files"])
    atomic_write_json(sidecar(out_csv, "meta.json"), meta)
    return meta


def _checked_inputs(cfg, input_path: Path, o: Options) -> Inputs:
    """--input as a table (with the run's config.yaml, which also sets its io limits), every file's
    header checked against those limits: the refused ones are in `errors`, not in `table`.

    Raises:
        DataError: no input, or every input refused.
    """
    from medrec.io.limits import set_limits

    set_limits(cfg.io)  # load_config did it for config.yaml; a checkpoint's config too
    inputs = collect_inputs(input_path, cfg, split=o.split, allow_identifying_paths=o.allow_identifying_paths)
    return refuse_too_large(inputs)


def _score(ens: Ensemble, inputs, o: Options, settings: dict) -> tuple[pd.DataFrame, list[dict], dict, Reading]:
    """(predictions table, read errors, timing, how the images were read) of the ensemble on `inputs`."""
    from medrec.infer.engine import ImageDataset, make_loader, predict_batches
    from medrec.infer.outputs import predictions_table

    ds = ImageDataset(list(inputs.table["path"]), ens, slices=table_slices(inputs.table))
    bar = _progress(len(ds)) if o.progress else None
    started, conversions = time.perf_counter(), {}

    def noted(batches):  # each batch's conversions, on its way to the networks
        for batch in batches:
            conversions.update(batch["conversions"])
            yield batch

    scores, rows, read_errors = predict_batches(
        ens.models, noted(make_loader(ds, settings["batch_size"], settings["workers"], ens.device)), ens.task,
        device=ens.device, tta=o.tta, amp=settings["amp"], channels_last=settings["channels_last"],
        on_batch=bar.update if bar else None)
    if bar:
        bar.close()
    table = predictions_table(inputs.table.iloc[rows], scores, ens, fold_scores=o.fold_scores)
    errors = inputs.errors + [{"path": ds.paths[i], "reason": r} for i, r in read_errors]
    reading = Reading.of([conversions.get(i, "grey") for i in rows], [e["reason"] for e in errors],
                         [(ds.paths[i], c) for i, c in sorted(conversions.items())])
    return table, errors, {"inference_s": time.perf_counter() - started}, reading


@dataclass
class Reading:
    """How predict's inputs were read: the image flow (medrec.data.reading.ReadCounts, as run.json has it)
    and the (path, conversion) of the images not stored grey."""

    counts: ReadCounts
    converted: list[tuple[str, str]]

    @classmethod
    def of(cls, conversions: list[str], refusals: list[str], converted: list[tuple[str, str]]) -> Reading:
        """From the conversion of each predicted image and the reason of each refused one."""
        counts = ReadCounts()
        for c in conversions:
            counts.add(ReadInfo(c))
        for reason in refusals:
            counts.add(error=reason)
        return cls(counts, converted)

    def write(self, path: Path, files: dict) -> dict:
        """Write the conversions list to `path`; the metadata keys: the image flow, as in run.json."""
        atomic_write_text(path, pd.DataFrame(self.converted, columns=["path", "conversion"]).to_csv(index=False))
        return {"images": self.counts.to_dict(), "images_summary": self.counts.summary(),
                "files": {**files, "conversions": str(path)}}


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


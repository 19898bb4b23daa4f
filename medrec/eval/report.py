"""Rebuild a run's metrics.json, report.html, report.md and plots/ from its saved files alone.

Inputs: RUN/oof_predictions.csv, RUN/run.json and RUN/config.yaml. No model, no GPU and no
torch: the out-of-fold predictions hold everything the evaluation needs, so a report can be
rebuilt (or re-thresholded by editing eval.* in config.yaml) on any machine.

metrics.json is canonical: sorted keys, floats rounded to 6 decimals, NaN written as null and a
seeded bootstrap, so two identical runs give byte-identical files once the fields under
"volatile" (listed in "volatile_fields") are left out.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrec.config import ExperimentConfig, load_config
from medrec.data.manifest import table_slices
from medrec.errors import CheckpointError, DataError
from medrec.eval import plots
from medrec.eval.metrics import OOF, THRESHOLD_METRICS, evaluate

log = logging.getLogger(__name__)

SCHEMA = "medrec-metrics/1"
ROUND = 6
LEVEL = 0.95


@dataclass(frozen=True)
class Run:
    """A run folder's saved evaluation inputs."""

    dir: Path
    info: dict  # run.json
    cfg: ExperimentConfig
    table: object  # pandas DataFrame of oof_predictions.csv
    oof: OOF
    unit_kind: str  # "patient" or "image"


# ---------------------------------------------------------------- loading

def load_run(run_dir: str | Path) -> Run:
    """Read and validate a run folder's oof_predictions.csv, run.json and config.yaml.

    Raises:
        CheckpointError: a file is missing or unreadable.
        DataError: the predictions violate the run-folder contract.
    """
    import pandas as pd

    run_dir = Path(run_dir).resolve()
    paths = {n: run_dir / n for n in ("oof_predictions.csv", "run.json", "config.yaml")}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        raise CheckpointError(
            f"{run_dir} is not a complete run folder: missing {', '.join(missing)}; "
            "point at a folder written by `python -m medrec.finetune`"
        )
    try:
        info = json.loads(paths["run.json"].read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{paths['run.json']} is not valid JSON: {exc}") from None
    cfg = load_config(paths["config.yaml"])
    ids = {"path": str, "image_id": str, "patient_id": str}
    try:
        table = pd.read_csv(paths["oof_predictions.csv"], dtype=ids)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{paths['oof_predictions.csv']} is not a readable CSV: {exc}") from None
    task = info.get("task") or cfg.data.task
    oof, unit_kind = oof_from_table(table, task, _names(info, cfg, task), str(paths["oof_predictions.csv"]),
                                    patient_level=info.get("patient_level"))
    return Run(run_dir, info, cfg, table, oof, unit_kind)


def _names(info: dict, cfg: ExperimentConfig, task: str) -> tuple[str, ...] | None:
    if task == "multiclass":
        names = info.get("class_names") or cfg.data.class_names
    else:
        names = info.get("label_names") or cfg.data.label_columns
    return tuple(str(n) for n in names) if names else None


def oof_from_table(
    table, task: str, names: tuple[str, ...] | None, source: str, *, patient_level: bool | None = None
) -> tuple[OOF, str]:
    """Turn the oof_predictions.csv table into arrays (see the run-folder contract).

    Args:
        patient_level: run.json's flag; False says the data has no real patient ids.

    Returns:
        (OOF, "patient" or "image"): the bootstrap unit is the image when the data has no
        patient ids: `patient_level` is False, there is no patient_id column, or every patient
        id has a single image (as when sources without ids, e.g. MedMNIST, use the image id).
    """
    if task not in ("binary", "multiclass", "multilabel"):
        raise DataError(f"{source}: task '{task}' unknown; valid: binary, multiclass, multilabel")
    for col in ("path", "fold"):
        if col not in table.columns:
            raise DataError(f"{source}: no column '{col}'; present: {', '.join(map(str, table.columns))}")
    if len(table) == 0:
        raise DataError(f"{source}: no predictions")
    y, score, names = _labels_and_scores(table, task, names, source)
    fold = _integers(table, "fold", source)
    repeat = _integers(table, "repeat", source) if "repeat" in table.columns else np.zeros(len(table), dtype=int)
    unit, kind = _units(table, patient_level)
    return OOF(task, names, y, score, fold, repeat, unit), kind


def _labels_and_scores(table, task: str, names: tuple[str, ...] | None, source: str):
    import pandas as pd

    score_cols = [c for c in table.columns if str(c).startswith("score_")]
    if task == "binary" and "score" in table.columns:
        names = names[:1] if names else ("label",)
        ycols, scols = ["label"], ["score"]
    else:
        if not names or any(f"score_{n}" not in table.columns for n in names):
            names = tuple(c[len("score_"):] for c in score_cols)
        if not names:
            raise DataError(f"{source}: no score column(s); expected 'score' (binary) or 'score_<name>'")
        ycols, scols = [f"label_{n}" for n in names], [f"score_{n}" for n in names]
    if task == "multiclass" and "label" in table.columns:
        ycols = ["label"]
    absent = [c for c in ycols + scols if c not in table.columns]
    if absent:
        raise DataError(f"{source}: missing column(s) {', '.join(absent)}")
    score = table[scols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(score).all():
        bad = int((~np.isfinite(score)).any(axis=1).sum())
        raise DataError(f"{source}: {bad} row(s) have a missing or infinite score")
    labels = table[ycols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if task == "multiclass":
        return _class_labels(labels, len(names), source), score, names
    ok = np.isnan(labels) | np.isin(labels, [0.0, 1.0])
    if not ok.all():
        raise DataError(f"{source}: label columns {ycols} must hold 0, 1 or empty")
    if task == "binary" and np.isnan(labels).any():
        log.warning("%s: %d row(s) without a label are left out", source, int(np.isnan(labels).sum()))
    return labels, score, names


def _class_labels(labels: np.ndarray, k: int, source: str) -> np.ndarray:
    if labels.shape[1] == 1:
        y = labels[:, 0]
        if np.isnan(y).any() or (y != np.round(y)).any() or y.min() < 0 or y.max() >= k:
            raise DataError(f"{source}: multiclass 'label' must hold class indices 0..{k - 1}")
        return y.astype(int)
    if not (np.isin(labels, [0.0, 1.0]).all() and (labels.sum(axis=1) == 1).all()):
        raise DataError(f"{source}: multiclass label_<class> columns must be one-hot (one 1 per row)")
    return labels.argmax(axis=1)


def _integers(table, col: str, source: str) -> np.ndarray:
    values = table[col].to_numpy(dtype=float)
    if np.isnan(values).any() or (values != np.round(values)).any():
        raise DataError(f"{source}: column '{col}' must hold integers on every row")
    return values.astype(int)


def _units(table, patient_level: bool | None) -> tuple[np.ndarray, str]:
    # The image path is the unit for image-level data, so an image's rows in every repeat move together.
    image = table["path"].astype(str).to_numpy()
    if patient_level is False or "patient_id" not in table.columns or table["patient_id"].isna().all():
        return image, "image"
    pid = table["patient_id"]
    if table.groupby(pid.fillna(""))["path"].nunique().max() == 1:  # every patient id has one image
        return image, "image"
    if pid.isna().any():
        log.warning("%d row(s) without patient_id are resampled as their own unit", int(pid.isna().sum()))
    image_unit = "image:" + table["path"].astype(str).to_numpy()
    unit = np.where(pid.isna().to_numpy(), image_unit, "patient:" + pid.astype(str).to_numpy())
    return unit, "patient"


# ---------------------------------------------------------------- the metrics document

def json_ready(x):
    """JSON-ready copy: floats rounded (NaN/inf -> None), numpy -> Python, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return round(float(x), ROUND) + 0.0 if math.isfinite(x) else None
    if isinstance(x, np.ndarray):
        return json_ready(x.tolist())
    return x


def dumps(doc: dict) -> str:
    """The canonical metrics.json text (sorted keys, 2-space indent, newline at the end)."""
    return json.dumps(json_ready(doc), sort_keys=True, indent=2, allow_nan=False) + "\n"


def is_threshold_metric(name: str) -> bool:
    """True for metrics that depend on the operating point (accuracy, f1_macro, ...)."""
    for suffix in ("_macro", "_micro"):
        name = name.removesuffix(suffix)
    return name in THRESHOLD_METRICS


def metrics_document(run: Run, ev: dict) -> dict:
    """The metrics.json content (unrounded; `dumps` canonicalises it)."""
    oof, cfg, info = run.oof, run.cfg.eval, run.info
    optimistic = ev["selection"] == "same data (optimistic)"
    headline, per_label = {}, {}
    for (label, metric), ci in ev["metrics"].items():
        entry = dict(ci)
        if optimistic and is_threshold_metric(metric):
            entry["note"] = "threshold chosen on this data (optimistic)"
        (headline if label == "" else per_label.setdefault(label, {}))[metric] = entry
    # The fields that differ between two runs of one config (run.json's VOLATILE_FIELDS) and the
    # build time; everything else in metrics.json is reproducible byte for byte.
    volatile = {
        "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "created": info.get("created"), "finished": info.get("finished"), "wall_time_s": info.get("wall_time_s"),
        "run_dir": str(run.dir), "hardware": info.get("hardware"), "git_commit": info.get("git_commit"),
    }
    return {
        "schema_version": SCHEMA,
        "task": oof.task,
        "labels": list(oof.names),
        "data": _data_section(run),
        "bootstrap": {
            "n_resamples": cfg.bootstrap, "seed": cfg.bootstrap_seed, "unit": run.unit_kind,
            "n_units": len(np.unique(oof.unit)), "confidence": LEVEL, "method": "percentile",
            "statistic": "mean over repeats of the metric on the pooled out-of-fold predictions",
        },
        "operating_point": _operating_point(run, ev),
        "metrics": headline,
        "per_label": per_label,
        "per_fold": ev["per_fold"],
        "confusion_matrix": ev["confusion"],
        "calibration": ev["calibration"],
        "provenance": _provenance(run),
        "notes": _notes(run, ev),
        "volatile_fields": sorted(volatile),
        "volatile": volatile,
    }


def _data_section(run: Run) -> dict:
    oof, t = run.oof, run.table
    out = {
        "n_rows": len(t), "n_images": int(t["path"].nunique()),
        "n_patients": int(t["patient_id"].nunique()) if run.unit_kind == "patient" else None,
        "n_repeats": len(np.unique(oof.repeat)),
        "n_folds": len(np.unique(oof.fold)),
        "image_level_folds": run.unit_kind == "image",
    }
    first = oof.repeat == oof.repeat.min()
    if oof.task == "multiclass":
        counts = np.bincount(oof.y[first], minlength=len(oof.names))
        out["class_counts"] = dict(zip(oof.names, counts.tolist()))
    else:
        y = oof.y[first]
        out["prevalence"] = {n: float(np.nanmean(y[:, j])) if (~np.isnan(y[:, j])).any() else None
                             for j, n in enumerate(oof.names)}
        out["n_labelled"] = {n: int((~np.isnan(y[:, j])).sum()) for j, n in enumerate(oof.names)}
    return out


def _operating_point(run: Run, ev: dict) -> dict:
    stored = ev["stored_threshold"]
    if stored is not None and run.oof.task == "binary":
        stored = next(iter(stored.values()))
    return {
        "rule": run.cfg.eval.operating_point if run.oof.task != "multiclass" else "argmax",
        "selection": ev["selection"],
        "threshold": stored,
        "chosen_on": "all out-of-fold predictions" if stored is not None else None,
        "fold_thresholds": ev["fold_thresholds"],
        "run_json_threshold": run.info.get("threshold"),
    }


def _provenance(run: Run) -> dict:
    info = run.info
    keys = ("status", "initialisation", "weights_sha256", "data_fingerprint", "versions", "seeds")
    out = {k: info.get(k) for k in keys}
    out["name"] = run.cfg.name
    out["config_sha256"] = hashlib.sha256((run.dir / "config.yaml").read_bytes()).hexdigest()
    return out


def _notes(run: Run, ev: dict) -> list[str]:
    oof, cfg = run.oof, run.cfg.eval
    notes = []
    if run.unit_kind == "patient":
        notes.append(
            f"95% CIs: percentile bootstrap over patients ({len(np.unique(oof.unit))} patients, "
            f"{cfg.bootstrap} resamples, seed {cfg.bootstrap_seed}); all images of a patient are resampled together."
        )
    else:
        notes.append(
            "Image-level folds and CIs: this data has no patient ids (each patient id has a single image, as for "
            "sources without them, e.g. MedMNIST). If patients contribute several images, their images may sit "
            "in different folds and the CIs are too narrow."
        )
    notes.append(_selection_note(ev["selection"], cfg.operating_point))
    if _differs(run.info.get("threshold"), ev["stored_threshold"]):
        notes.append("run.json holds a different threshold (written at training time) from the one stored here; "
                     "this report's metrics use the thresholds described above.")
    if ev["selection"] in ("cross-fitted", "same data (optimistic)"):
        notes.append("CIs of threshold-dependent metrics hold the thresholds fixed; they leave out the "
                     "uncertainty of choosing a threshold.")
    if len(np.unique(oof.repeat)) > 1:
        notes.append(f"{len(np.unique(oof.repeat))} CV repeats: each metric is the mean over repeats of the "
                     "pooled out-of-fold metric; resamples keep a patient's rows of every repeat together.")
    if run.cfg.eval.temperature_scaling and ev["calibration"]["temperature_scaling"] is not None:
        notes.append("Temperature scaling is fitted like the thresholds (on the other folds) and reported "
                     "before/after; the metric table uses the unscaled scores.")
    undefined = sorted({label for (label, _), m in ev["metrics"].items() if label and not np.isfinite(m["value"])})
    if undefined:
        notes.append("Some metrics are undefined (a class absent, or no threshold in a fold) for: "
                     f"{', '.join(undefined)}; macro averages leave them out.")
    scope = ev["calibration"]["scope"]
    if scope.startswith("skipped"):
        notes.append("Scores are not probabilities in [0, 1]: calibration metrics are skipped.")
    else:
        notes.append(f"Calibration is of the {scope} probability: ECE over {cfg.calibration_bins} equal-width bins "
                     "(scikit-learn's calibration_curve binning) and the Brier score.")
    return notes


def _differs(in_run_json, stored: dict[str, float] | None) -> bool:
    if in_run_json is None or stored is None:
        return False
    if not isinstance(in_run_json, dict):
        in_run_json = {next(iter(stored)): in_run_json} if len(stored) == 1 else {}
    try:
        return any(abs(float(in_run_json[k]) - v) > 1e-6 for k, v in stored.items() if k in in_run_json)
    except (TypeError, ValueError):
        return True


def _selection_note(selection: str, rule: str) -> str:
    return {
        "argmax": "Multiclass decisions are the arg-max class; no threshold is chosen.",
        "fixed": f"Operating point '{rule}' is fixed, not chosen on data.",
        "cross-fitted": (
            f"Operating point '{rule}': each fold's threshold is chosen on the out-of-fold predictions of the "
            "other folds (cross-fitting) and applied to that fold; pooled threshold metrics use these per-fold "
            "thresholds. The stored threshold for future data is chosen on all out-of-fold predictions."
        ),
        "same data (optimistic)": (
            f"Operating point '{rule}': with a single validation fold the threshold is chosen on the same "
            "predictions it is reported on; threshold-dependent metrics are optimistic (marked †)."
        ),
    }[selection]


# ---------------------------------------------------------------- build

def build_report(run_dir: str | Path) -> dict:
    """Write RUN/metrics.json, RUN/report.html, RUN/report.md and RUN/plots/*.png.

    Returns:
        The metrics document as written to metrics.json (rounded, NaN as None).

    Raises:
        CheckpointError, DataError, ConfigError: the run folder cannot be evaluated.
    """
    run = load_run(run_dir)
    ev = evaluate(run.oof, run.cfg.eval)
    doc = json_ready(metrics_document(run, ev))  # rounded as written; keeps the display order
    (run.dir / "metrics.json").write_text(dumps(doc))
    figures = make_figures(run, ev, doc)
    plot_dir = run.dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    for name, png in figures.items():
        (plot_dir / f"{name}.png").write_bytes(png)
    cases = worst_cases(run, ev, run.cfg.eval.worst_cases)
    (run.dir / "report.html").write_text(render_html(run, doc, figures, cases), encoding="utf-8")
    (run.dir / "report.md").write_text(render_markdown(run, doc, sorted(figures), cases), encoding="utf-8")
    log.info("report written to %s", run.dir / "report.html")
    return doc


def make_figures(run: Run, ev: dict, doc: dict) -> dict[str, bytes]:
    """PNG bytes by name: roc, pr, reliability (if probabilities), confusion."""
    oof = run.oof
    points = None
    if oof.task != "multiclass":
        src = doc["per_label"] if len(oof.names) > 1 else {oof.names[0]: doc["metrics"]}
        points = {n: (1 - m["specificity"]["value"], m["sensitivity"]["value"]) for n, m in src.items()
                  if None not in (m["specificity"]["value"], m["sensitivity"]["value"])}
    figures = {"roc": plots.curve_figure(oof, "roc", points), "pr": plots.curve_figure(oof, "pr")}
    rel = plots.reliability_figure(ev["calibration"])
    if rel is not None:
        figures["reliability"] = rel
    figures["confusion"] = plots.confusion_figure(ev["confusion"], oof.task, oof.names)
    return figures


# ---------------------------------------------------------------- worst cases

def worst_cases(run: Run, ev: dict, n: int) -> list[dict]:
    """Sections of the worst errors at the operating point, each with up to `n` cases.

    Binary/multilabel: false positives with the highest scores and false negatives with the
    lowest. Multiclass: wrong predictions with the highest confidence. Each case carries a
    base64 PNG thumbnail or None when the image cannot be read.
    """
    if n == 0:
        return []
    oof, t = run.oof, run.table
    if "image_id" in t.columns:
        ids = t["image_id"].astype(str).to_numpy()
    else:
        ids = np.array([f"row {i}" for i in range(len(t))])
    if oof.task == "multiclass":
        pred = oof.score.argmax(axis=1)
        wrong = np.flatnonzero(pred != oof.y)
        conf = oof.score.max(axis=1)
        rows = [(i, f"{oof.names[oof.y[i]]} → {oof.names[pred[i]]}", conf[i], None) for i in wrong]
        sections = [("Most confident errors (true → predicted)", sorted(rows, key=lambda r: -r[2]))]
    else:
        fps, fns = [], []
        for j, name in enumerate(oof.names):
            has = ~np.isnan(oof.y[:, j])
            called = oof.score[:, j] >= ev["thresholds"][:, j]
            for rows, dest in ((has & called & (oof.y[:, j] == 0), fps), (has & ~called & (oof.y[:, j] == 1), fns)):
                dest += [(i, name, oof.score[i, j], ev["thresholds"][i, j]) for i in np.flatnonzero(rows)]
        sections = [("Worst false positives (highest scores)", sorted(fps, key=lambda r: -r[2])),
                    ("Worst false negatives (lowest scores)", sorted(fns, key=lambda r: r[2]))]
    return [{"title": title, "cases": _pick(rows, n, t, ids, oof, run.cfg.data)} for title, rows in sections]


def _pick(rows: list, n: int, table, ids: np.ndarray, oof: OOF, data_cfg=None) -> list[dict]:
    seen, out = set(), []
    paths = table["path"].astype(str).to_numpy()
    slices = table_slices(table)
    for i, label, score, thr in rows:
        # The same image in another repeat; slices of one volume share a path but are different images.
        key = (paths[i], slices[i], label)
        if key in seen:
            continue
        seen.add(key)
        out.append({"image_id": ids[i], "label": label, "score": float(score),
                    "threshold": None if thr is None else float(thr), "fold": int(oof.fold[i]),
                    "repeat": int(oof.repeat[i]),
                    "thumbnail": thumbnail(paths[i], ids[i], data_cfg=data_cfg, slice_index=slices[i])})
        if len(out) == n:
            break
    return out


def thumbnail(
    path: str, image_id: str, size: int = 160, *, data_cfg=None, slice_index: int | None = None
) -> str | None:
    """A base64 PNG thumbnail of the image, or None if it cannot be read.

    With the run's data config (`cfg.data`) the image looks as the network's preprocessing saw
    it, through `medrec.data.reading.display_image`: CT through its first window of
    data.channels, MRI z-scores from -3 to +3 SD, radiographs through data.window. Without a
    config, or when that fails, `medrec.io.images.read_image(path, window="auto")` (npz
    references through `medrec.data.sources.read_npz_item`). `slice_index` picks the slice of a
    volume (default data.slice when it is a number, else the middle one). Readers are imported
    here so that a report never depends on them being importable.
    """
    try:
        return _encode_png(_to_uint8(np.asarray(_thumbnail_pixels(path, data_cfg, slice_index), dtype=float)), size)
    except Exception as exc:  # noqa: BLE001 - a thumbnail must never stop a report; decoders raise anything
        log.info("thumbnail unavailable for image %s (%s)", image_id, type(exc).__name__)
        return None


def _thumbnail_pixels(path: str, data_cfg, slice_index: int | None) -> np.ndarray:
    if slice_index is None and data_cfg is not None and isinstance(data_cfg.slice, int):
        slice_index = data_cfg.slice
    if data_cfg is not None:
        try:
            from medrec.data.reading import display_image

            return display_image(path, data_cfg, slice_index)
        except Exception as exc:  # noqa: BLE001 - CT/MRI fall back to the plain reader below
            if data_cfg.modality == "cxr":
                raise  # a radiograph's plain read is the same read again
            log.info("thumbnail of %s: %s preprocessing failed (%s); shown with window auto",
                     Path(path).name, data_cfg.modality, type(exc).__name__)
    if "::" in path:
        from medrec.data.sources import read_npz_item

        return read_npz_item(path)
    from medrec.io.images import read_image

    arr, _ = read_image(path, window="auto", slice_index=slice_index)
    return arr


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1) if arr.shape[0] in (3, 4) else arr[arr.shape[0] // 2]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo < 0 or hi > 1:  # not already windowed to [0, 1]
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return (np.nan_to_num(arr) * 255).round().astype(np.uint8)


def _encode_png(arr: np.ndarray, size: int) -> str:
    import io

    from PIL import Image

    img = Image.fromarray(arr)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- rendering

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ci{color:#666;font-size:.85em}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em;margin:.4em 0}
.cases{display:flex;flex-wrap:wrap;gap:10px}.case{border:1px solid #ccc;padding:6px;width:170px;font-size:.8em}
.case img{width:160px;height:auto;display:block;background:#000}
.missing{width:160px;height:120px;display:flex;align-items:center;justify-content:center;background:#eee;color:#777}
img.plot{max-width:100%;border:1px solid #eee}
"""


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _wall(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s"


def _mapping(d) -> str:
    if not isinstance(d, dict) or not d:
        return "—" if not d else str(d)
    return ", ".join(f"{k}: {v}" for k, v in d.items())


def header_rows(run: Run, doc: dict) -> list[tuple[str, str]]:
    """(field, value) pairs of the report header."""
    info, prov, vol, data = run.info, doc["provenance"], doc["volatile"], doc["data"]
    fp = prov.get("data_fingerprint") or {}
    return [
        ("Config name", prov["name"]),
        ("Task", f"{doc['task']} ({', '.join(doc['labels'])})"),
        ("Status", _fmt(prov.get("status"))),
        ("Initialisation", _fmt(prov.get("initialisation"))),
        ("Weights file", _fmt(info.get("weights_file"))),
        ("Weights sha256", _fmt(prov.get("weights_sha256"))),
        ("Data fingerprint", _mapping(fp)),
        ("Git commit", _fmt(vol.get("git_commit"))),
        ("Package versions", _mapping(prov.get("versions"))),
        ("Seeds", _mapping(prov.get("seeds"))),
        ("Hardware", _mapping(vol.get("hardware"))),
        ("Created / finished", f"{_fmt(vol.get('created'))} / {_fmt(vol.get('finished'))}"),
        ("Wall time", _wall(vol.get("wall_time_s"))),
        ("Config sha256", prov["config_sha256"]),
        ("Images / patients / rows", f"{data['n_images']} / {_fmt(data['n_patients'])} / {data['n_rows']}"),
        ("Folds × repeats", f"{data['n_folds']} × {data['n_repeats']}"),
        ("Resampling unit", "patient" if doc["bootstrap"]["unit"] == "patient" else "image (no patient ids)"),
        ("Preprocessing", preprocessing_text(run.cfg.data)),
        ("Augmentation", run.cfg.data.augment.summary(run.cfg.data.modality)),
    ]


def preprocessing_text(data) -> str:
    """One line saying how images were preprocessed: modality, CT windows (C/W) or MRI intensity
    scaling or the radiograph window, which slice of a volume, input size."""
    parts = [f"modality {data.modality}"]
    if data.modality == "ct" and data.channels:
        from medrec.io.dicom import named_windows

        windows = [f"{name} ({c:g}/{width:g})" for name, c, width in named_windows(data.channels)]
        parts.append(f"CT windows (C/W): {', '.join(windows)}")
    elif data.modality == "mri":
        parts.append(f"intensity {data.intensity}")
    else:
        w = data.window
        parts.append(f"window {'C/W ' + '/'.join(f'{v:g}' for v in w) if isinstance(w, (list, tuple)) else w}")
    parts.append({"middle": "middle slice", "all": "all slices"}.get(data.slice, f"slice {data.slice}"))
    if data.frame is not None:
        parts.append(f"frame {data.frame}")
    parts.append(f"{data.image_size} px")
    return " · ".join(parts)


def _threshold_text(doc: dict) -> str:
    op = doc["operating_point"]
    t = op["threshold"]
    if t is None:
        return f"{op['rule']} (no threshold)"
    if isinstance(t, dict):
        t = ", ".join(f"{k}: {_fmt(v, 4)}" for k, v in t.items())
    else:
        t = _fmt(t, 4)
    return f"rule {op['rule']}; selection: {op['selection']}; stored threshold (all OOF predictions): {t}"


def metric_rows(doc: dict) -> list[tuple[str, str, str, str]]:
    """(metric, value, 95% CI, n valid resamples) of the headline metrics."""
    out = []
    for name, m in doc["metrics"].items():
        mark = " †" if "note" in m else ""
        ci = "—" if m["ci_low"] is None else f"{_fmt(m['ci_low'])} – {_fmt(m['ci_high'])}"
        out.append((name + mark, _fmt(m["value"]), ci, str(m["n_valid"])))
    return out


def fold_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-fold table (thresholds from the cross-fitting records)."""
    thr: dict[tuple[int, int], list[str]] = {}
    for rec in doc["operating_point"]["fold_thresholds"]:
        text = _fmt(rec["threshold"], 4)
        if len(doc["labels"]) > 1:
            text = f"{rec['label']}: {text}"
        thr.setdefault((rec["repeat"], rec["fold"]), []).append(text)
    names = list(doc["per_fold"][0]["metrics"]) if doc["per_fold"] else []
    head = ["repeat", "fold", "images", "patients", "threshold"] + names
    rows = [[str(f["repeat"]), str(f["fold"]), str(f["n_images"]),
             str(f["n_patients"]) if doc["bootstrap"]["unit"] == "patient" else "—",
             "; ".join(thr.get((f["repeat"], f["fold"]), ["—"]))] + [_fmt(f["metrics"][n]) for n in names]
            for f in doc["per_fold"]]
    return head, rows


def label_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Per-label (or per-class) metrics with CIs."""
    if not doc["per_label"]:
        return [], []
    names = list(next(iter(doc["per_label"].values())))
    rows = []
    for label, ms in doc["per_label"].items():
        cells = [label]
        for n in names:
            m = ms[n]
            ci = "" if m["ci_low"] is None else f" ({_fmt(m['ci_low'])}–{_fmt(m['ci_high'])})"
            cells.append(_fmt(m["value"]) + ci)
        rows.append(cells)
    return ["label"] + names, rows


def calibration_rows(doc: dict) -> list[list[str]]:
    ts = doc["calibration"].get("temperature_scaling")
    if not ts:
        return []
    return [[name, _fmt(ts["stored"].get(name), 3), _fmt(b["ece"]), _fmt(ts["after"][name]["ece"]),
             _fmt(b["brier"]), _fmt(ts["after"][name]["brier"])] for name, b in ts["before"].items()]


def _h_table(head: list[str], rows: list[list[str]], num_from: int = 1) -> str:
    """An HTML table, every cell escaped; columns from `num_from` on are right-aligned numbers."""
    from html import escape

    def cell(i: int, c) -> str:
        return f"<td class=num>{escape(str(c))}</td>" if i >= num_from else f"<td>{escape(str(c))}</td>"

    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _h_case(c: dict) -> str:
    from html import escape

    if c["thumbnail"]:
        img = f'<img alt="thumbnail" src="data:image/png;base64,{c["thumbnail"]}">'
    else:
        img = '<div class="missing">thumbnail unavailable</div>'
    thr = "" if c["threshold"] is None else f" / thr {c['threshold']:.3f}"
    return (f'<div class="case">{img}<div>{escape(c["image_id"])}</div>'
            f'<div>{escape(str(c["label"]))}: score {c["score"]:.3f}{thr}</div>'
            f'<div>fold {c["fold"]}, repeat {c["repeat"]}</div></div>')


def _h_cases(cases: list[dict]) -> str:
    from html import escape

    parts = []
    for section in cases:
        parts.append(f"<h3>{escape(section['title'])}</h3>")
        cards = "".join(_h_case(c) for c in section["cases"])
        parts.append(f'<div class="cases">{cards}</div>' if cards else "<p>None.</p>")
    return "".join(parts)


_FIGURE_TITLES = {"roc": "ROC curves (per fold, pooled)", "pr": "Precision-recall curves (per fold, pooled)",
                  "reliability": "Reliability diagram", "confusion": "Confusion matrix at the operating point"}
_METRIC_HEAD = ["metric", "value", "95% CI", "valid resamples"]
_TEMPERATURE_HEAD = ["label", "stored T", "ECE before", "ECE after", "Brier before", "Brier after"]


def render_html(run: Run, doc: dict, figures: dict[str, bytes], cases: list[dict]) -> str:
    """One self-contained HTML page (plots as base64 PNG); every string from data is escaped."""
    from html import escape as e

    title = f"medrec report: {e(doc['provenance']['name'])}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             f"<style>{_CSS}</style></head><body><h1>{title}</h1>",
             _h_table(["field", "value"], [list(r) for r in header_rows(run, doc)], num_from=99), "<h2>Method</h2>"]
    parts += [f"<p class='note'>{e(n)}</p>" for n in doc["notes"]]
    parts += [f"<p>{e(_threshold_text(doc))}</p>", "<h2>Metrics</h2>",
              _h_table(_METRIC_HEAD, [list(r) for r in metric_rows(doc)])]
    if doc["operating_point"]["selection"] == "same data (optimistic)":
        parts.append("<p class='note'>† threshold chosen on this data (optimistic).</p>")
    head, rows = label_rows(doc)
    if rows:
        parts += ["<h2>Per label</h2>", _h_table(head, rows)]
    for name in (n for n in ("roc", "pr", "reliability", "confusion") if n in figures):
        b64 = base64.b64encode(figures[name]).decode("ascii")
        parts.append(f"<h2>{e(_FIGURE_TITLES[name])}</h2>"
                     f"<img class='plot' alt='{e(name)}' src='data:image/png;base64,{b64}'>")
    cal = calibration_rows(doc)
    if cal:
        parts += ["<h2>Temperature scaling (cross-fitted)</h2>", _h_table(_TEMPERATURE_HEAD, cal)]
    head, rows = fold_rows(doc)
    parts += ["<h2>Per fold</h2>", _h_table(head, rows, num_from=0)]
    if cases:
        parts += ["<h2>Worst errors at the operating point</h2>", _h_cases(cases)]
    parts.append(f"<h2>Reproducibility</h2><p>{e(_reproducibility_text(doc))}</p></body></html>")
    return "\n".join(parts)


def _reproducibility_text(doc: dict) -> str:
    return (f"metrics.json is byte-identical for identical runs apart from the fields under 'volatile': "
            f"{', '.join(doc['volatile_fields'])}. Built {doc['volatile']['built']} from oof_predictions.csv, "
            "run.json and config.yaml.")


def _m_table(head: list[str], rows: list[list[str]]) -> str:
    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(run: Run, doc: dict, figure_names: list[str], cases: list[dict]) -> str:
    """The report as Markdown, with links to plots/*.png (no thumbnails)."""
    parts = [f"# medrec report: {doc['provenance']['name']}", "",
             _m_table(["field", "value"], [list(r) for r in header_rows(run, doc)]), "", "## Method", ""]
    parts += [f"- {n}" for n in doc["notes"]]
    parts += [f"- {_threshold_text(doc)}", "", "## Metrics", "",
              _m_table(_METRIC_HEAD, [list(r) for r in metric_rows(doc)]), ""]
    if doc["operating_point"]["selection"] == "same data (optimistic)":
        parts += ["† threshold chosen on this data (optimistic).", ""]
    head, rows = label_rows(doc)
    if rows:
        parts += ["## Per label", "", _m_table(head, rows), ""]
    parts += [f"![{_FIGURE_TITLES[n]}](plots/{n}.png)" for n in ("roc", "pr", "reliability", "confusion")
              if n in figure_names] + [""]
    cal = calibration_rows(doc)
    if cal:
        parts += ["## Temperature scaling (cross-fitted)", "", _m_table(_TEMPERATURE_HEAD, cal), ""]
    head, rows = fold_rows(doc)
    parts += ["## Per fold", "", _m_table(head, rows), ""]
    for section in cases:
        table = [[c["image_id"], c["label"], _fmt(c["score"]), _fmt(c["threshold"]), c["fold"], c["repeat"]]
                 for c in section["cases"]]
        parts += [f"## {section['title']}", "",
                  _m_table(["image", "label", "score", "threshold", "fold", "repeat"], table), ""]
    parts += ["## Reproducibility", "", _reproducibility_text(doc), ""]
    return "\n".join(parts)

"""A run's predictions as review cases: loading, filtering, sorting, safe paths, display images.

The review app is a thin Streamlit layer over this module; everything here is plain Python
and numpy so that it can be tested without a browser. Images are read through medrec.io in
modality units and only windowed for display.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrec.config import DataConfig, load_config
from medrec.data.manifest import slice_of
from medrec.errors import CheckpointError, DataError, ImageError, MedrecError
from medrec.io.dicom import named_windows
from medrec.io.images import WINDOW_PRESETS, apply_window, read_image

log = logging.getLogger(__name__)

OOF_CSV = "oof_predictions.csv"
CAM_SUBDIR = Path("predictions") / "cams"
DEFAULT_THRESHOLD = 0.5
DEFAULT_MAX_SIDE = 1024

FILTERS = {
    "all": "All cases",
    "false_positives": "False positives",
    "false_negatives": "False negatives",
    "uncertain": "Uncertain",
    "unreviewed": "Not yet reviewed",
}
SORTS = {
    "csv": "Run order",
    "score_desc": "Score, high to low",
    "score_asc": "Score, low to high",
    "uncertain": "Most uncertain first",
    "spread_desc": "Largest spread first",
}

# Keys of the reader's (already de-identified) metadata that may be shown; anything that
# could identify a patient stays out even if a reader ever returned it.
_DENY = re.compile(
    r"patient|birth|sex|(^|_)age$|uid|accession|address|phone|institution|station|physician|operator|"
    r"referring|person|(^|_)name$|date|study_time|series_time|acquisition_time|content_time|(^|_)id$",
    re.IGNORECASE,
)
_ALLOW = {"manufacturer_model_name", "transfer_syntax_name"}


class PathRefused(DataError):
    """A predictions file points at a file outside the run folder and the run's data_root."""


@dataclass(frozen=True)
class Run:
    """A run folder opened for review. `cases` has one row per image (repeats averaged)."""

    run_dir: Path
    info: dict[str, Any]
    task: str
    targets: tuple[str, ...]  # label (multilabel) or class (multiclass) names; binary: one name
    thresholds: dict[str, float]
    threshold_source: str  # "run.json" or "default 0.5 (run.json has none)"
    data_root: Path | None
    allowed_roots: tuple[Path, ...]
    cam_dirs: tuple[Path, ...]
    predictions_path: Path
    cases: pd.DataFrame = field(repr=False)
    data_cfg: DataConfig | None = None  # the run's config.yaml `data` section, if readable

    @property
    def name(self) -> str:
        return str(self.info.get("name") or self.run_dir.name)

    @property
    def class_names(self) -> list[str] | None:
        names = self.info.get("class_names")
        return [str(n) for n in names] if names else None

    def target_key(self, target: str) -> str:
        """The `target` a verdict is stored under: the label for multilabel runs, else ''."""
        return target if self.task == "multilabel" else ""


# ---------------------------------------------------------------- loading


def load_run(run_dir: str | Path, predictions: str | Path | None = None) -> Run:
    """Open a run folder for review.

    Args:
        run_dir: the folder medrec.finetune wrote (run.json, oof_predictions.csv, ...).
        predictions: a predictions CSV (e.g. from medrec.predict) to review instead of the
            run's out-of-fold predictions.

    Raises:
        CheckpointError: the folder or its run.json is missing or unreadable.
        DataError: the predictions CSV is missing or lacks the columns the task needs.
    """
    run_dir = Path(run_dir).resolve()
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        raise CheckpointError(
            f"{run_dir} is not a medrec run folder: run.json not found; pass the folder medrec.finetune wrote"
        )
    try:
        info = json.loads(run_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{run_json}: cannot read it as JSON: {exc}") from None
    pred_path = Path(predictions).resolve() if predictions else run_dir / OOF_CSV
    if not pred_path.is_file():
        hint = "pass --predictions FILE" if predictions is None else "check the path"
        raise DataError(f"predictions file {pred_path} not found; {hint}")
    try:
        raw = pd.read_csv(pred_path, dtype={"image_id": str, "path": str, "patient_id": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{pred_path}: cannot read it as CSV: {exc}") from None

    task = str(info.get("task") or _guess_task(raw))
    targets = _targets(info, task, raw)
    thresholds, source = _thresholds(info, task, targets)
    data_root = _data_root(info)
    roots = tuple(r for r in (run_dir, data_root) if r is not None)
    cam_dirs = [run_dir / CAM_SUBDIR]
    if predictions:
        cam_dirs.append(pred_path.parent / "cams")
    cases = _cases(raw, task, targets, pred_path)
    return Run(
        run_dir=run_dir,
        info=info,
        task=task,
        targets=targets,
        thresholds=thresholds,
        threshold_source=source,
        data_root=data_root,
        allowed_roots=roots,
        cam_dirs=tuple(dict.fromkeys(cam_dirs)),
        predictions_path=pred_path,
        cases=cases,
        data_cfg=_data_config(run_dir),
    )


def _data_config(run_dir: Path) -> DataConfig | None:
    """The run's data config (modality, CT windows, slice), or None: older runs and copied
    folders may lack config.yaml, and the review works without it (generic windows)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return load_config(path).data
    except (MedrecError, OSError) as exc:
        log.warning("%s: cannot read the run's config (%s); reviewing without its preprocessing", path, exc)
        return None


def _guess_task(raw: pd.DataFrame) -> str:
    return "binary" if "score" in raw.columns else "multilabel"


def _targets(info: Mapping[str, Any], task: str, raw: pd.DataFrame) -> tuple[str, ...]:
    if task == "multiclass" and info.get("class_names"):
        return tuple(str(n) for n in info["class_names"])
    names = [str(n) for n in info.get("label_names") or []]
    if task == "binary":
        return (names[0] if names else "label",)
    if not names:
        names = [c.removeprefix("score_") for c in raw.columns if c.startswith("score_")]
    if not names:
        raise DataError(f"{task} predictions need score_<name> columns; found {', '.join(raw.columns)}")
    return tuple(names)


def _thresholds(info: Mapping[str, Any], task: str, targets: Sequence[str]) -> tuple[dict[str, float], str]:
    thr = info.get("threshold")
    if isinstance(thr, (int, float)) and not isinstance(thr, bool):
        return {t: float(thr) for t in targets}, "run.json"
    if isinstance(thr, Mapping) and thr:
        out = {t: float(thr.get(t, DEFAULT_THRESHOLD)) for t in targets}
        missing = [t for t in targets if t not in thr]
        note = f"run.json (default {DEFAULT_THRESHOLD} for {', '.join(missing)})" if missing else "run.json"
        return out, note
    if task == "multiclass":
        return {t: math.nan for t in targets}, "argmax (multiclass)"
    return {t: DEFAULT_THRESHOLD for t in targets}, f"default {DEFAULT_THRESHOLD} (run.json has none)"


def _data_root(info: Mapping[str, Any]) -> Path | None:
    root = info.get("data_root")
    if not root:
        return None
    path = Path(root).resolve()
    if len(path.parts) <= 1:  # "/" would make every file on the machine servable
        log.warning("run.json data_root %s is a filesystem root; ignored for serving images", root)
        return None
    return path


def _spread_column(raw: pd.DataFrame, suffix: str) -> str | None:
    stems = (
        ("spread", "score_spread", "score_std", "std") if not suffix else ("spread", "score_spread", "std", "score_std")
    )
    for stem in stems:
        col = f"{stem}{suffix}"
        if col in raw.columns:
            return col
    return None


def _cases(raw: pd.DataFrame, task: str, targets: Sequence[str], pred_path: Path) -> pd.DataFrame:
    """One row per image (a slice of a volume is an image): path, slice (NaN: the default slice),
    image_id, fold, then per target `score_<t>`, `label_<t>`, `spread_<t>`."""
    if "path" not in raw.columns:
        raise DataError(f"{pred_path}: no 'path' column; found {', '.join(raw.columns)}")
    df = raw.copy()
    # The slice of a volume (empty or -1: the default slice); slices of one volume share a path.
    slices = pd.to_numeric(df["slice"], errors="coerce") if "slice" in df.columns else pd.Series(np.nan, df.index)
    df["slice"] = slices.where(slices >= 0)
    if "image_id" not in df.columns:
        df["image_id"] = [
            Path(str(p)).name + ("" if pd.isna(k) else f"-s{int(k)}") for p, k in zip(df["path"], df["slice"])
        ]
    df["image_id"] = df["image_id"].astype(str)
    if "repeat" not in df.columns:
        df["repeat"] = 0
    if "fold" not in df.columns:
        df["fold"] = np.nan

    out = pd.DataFrame(index=df.index)
    if task == "binary":
        if "score" not in df.columns:
            raise DataError(f"{pred_path}: binary predictions need a 'score' column; found {', '.join(df.columns)}")
        t = targets[0]
        out[f"score_{t}"] = df["score"].astype(float)
        out[f"label_{t}"] = pd.to_numeric(df["label"], errors="coerce") if "label" in df.columns else np.nan
        spread = _spread_column(df, "")
        out[f"spread_{t}"] = df[spread].astype(float) if spread else np.nan
    else:
        missing = [f"score_{t}" for t in targets if f"score_{t}" not in df.columns]
        if missing:
            raise DataError(f"{pred_path}: missing score columns {', '.join(missing)}; found {', '.join(df.columns)}")
        for i, t in enumerate(targets):
            out[f"score_{t}"] = df[f"score_{t}"].astype(float)
            if f"label_{t}" in df.columns:
                out[f"label_{t}"] = pd.to_numeric(df[f"label_{t}"], errors="coerce")
            elif task == "multiclass" and "label" in df.columns:
                out[f"label_{t}"] = (pd.to_numeric(df["label"], errors="coerce") == i).where(df["label"].notna())
            else:
                out[f"label_{t}"] = np.nan
            spread = _spread_column(df, f"_{t}")
            out[f"spread_{t}"] = df[spread].astype(float) if spread else np.nan
    for col in ("image_id", "path", "slice", "fold", "repeat"):
        out[col] = df[col]
    out["order"] = np.arange(len(out))
    return _collapse_repeats(out, targets)


def _collapse_repeats(df: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """Repeated CV predicts each image once per repeat: average the scores, and without a
    spread column report the standard deviation across repeats as the spread."""
    n_repeats = df.groupby("image_id")["repeat"].nunique().max() if len(df) else 1
    first = df.sort_values(["repeat", "order"]).groupby("image_id", sort=False).first()
    if n_repeats > 1:
        grouped = df.groupby("image_id")
        for t in targets:
            first[f"score_{t}"] = grouped[f"score_{t}"].mean()
            if first[f"spread_{t}"].isna().all():
                first[f"spread_{t}"] = grouped[f"score_{t}"].std(ddof=0)
    first = first.reset_index().sort_values("order").reset_index(drop=True)
    return first.drop(columns=["repeat"])


# ---------------------------------------------------------------- decisions, filters, sorting


def view(run: Run, target: str) -> pd.DataFrame:
    """The cases as seen for one target: score, truth (0/1/NaN), pred (0/1), margin, spread.

    margin is |score - threshold| (binary, multilabel) or top-1 minus top-2 probability
    (multiclass without thresholds): small means the model was close to the other decision.
    """
    if target not in run.targets:
        raise DataError(f"label '{target}' unknown; valid: {', '.join(run.targets)}")
    c = run.cases
    out = c[["image_id", "path", "slice", "fold", "order"]].copy()
    out["score"] = c[f"score_{target}"].astype(float)
    out["truth"] = c[f"label_{target}"].astype(float)
    out["spread"] = c[f"spread_{target}"].astype(float)
    thr = run.thresholds[target]
    if run.task == "multiclass" and math.isnan(thr):
        scores = c[[f"score_{t}" for t in run.targets]].to_numpy(float)
        top = np.sort(scores, axis=1)
        out["pred"] = (scores.argmax(axis=1) == run.targets.index(target)).astype(int)
        out["margin"] = top[:, -1] - top[:, -2] if scores.shape[1] > 1 else 1.0
        out["pred_class"] = [run.targets[i] for i in scores.argmax(axis=1)]
    else:
        out["pred"] = (out["score"] >= thr).astype(int)
        out["margin"] = (out["score"] - thr).abs()
    return out


def select(
    cases: pd.DataFrame,
    *,
    kind: str = "all",
    band: float = 0.1,
    folds: Collection[Any] | None = None,
    reviewed: Collection[str] = (),
    sort: str = "csv",
) -> pd.DataFrame:
    """Filter and sort a `view`.

    kind: one of FILTERS — false_positives = pred 1 & truth 0; false_negatives = truth 1 &
    pred 0; uncertain = margin <= band; unreviewed = image_id not in `reviewed`.
    folds: keep only these folds (None or empty: all).
    """
    if kind not in FILTERS:
        raise DataError(f"filter '{kind}' unknown; valid: {', '.join(FILTERS)}")
    if sort not in SORTS:
        raise DataError(f"sort '{sort}' unknown; valid: {', '.join(SORTS)}")
    keep = pd.Series(True, index=cases.index)
    if kind == "false_positives":
        keep = (cases["pred"] == 1) & (cases["truth"] == 0)
    elif kind == "false_negatives":
        keep = (cases["truth"] == 1) & (cases["pred"] == 0)
    elif kind == "uncertain":
        keep = cases["margin"] <= band
    elif kind == "unreviewed":
        keep = ~cases["image_id"].isin(set(reviewed))
    if folds:
        keep &= cases["fold"].isin(list(folds))
    out = cases[keep]
    if sort == "csv":
        return out.sort_values("order", kind="stable")
    column, ascending = {
        "score_desc": ("score", False),
        "score_asc": ("score", True),
        "uncertain": ("margin", True),
        "spread_desc": ("spread", False),
    }[sort]
    return out.sort_values([column, "order"], ascending=[ascending, True], kind="stable", na_position="last")


# ---------------------------------------------------------------- safe file access


def resolve_case_path(raw: Any, roots: Sequence[Path], *, base: Path | None = None) -> Path:
    """Resolve an image path from a predictions file, refusing anything outside `roots`.

    The path is resolved (symlinks followed) before the check, so '..' components, absolute
    paths elsewhere and symlinks that lead out of the roots are all refused. Relative paths
    are taken relative to `base` (default: the first root).

    Raises:
        PathRefused: the resolved path is outside every root, or the value is not a path.
        ImageError: the path is allowed but no such file exists.
    """
    text = "" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else str(raw)
    if not text.strip() or "\x00" in text:
        raise PathRefused(f"image path {text!r} is empty or invalid; refused")
    if not roots:
        raise PathRefused("no allowed folder (run folder or data_root) to serve images from")
    path = Path(text)
    if not path.is_absolute():
        path = (base or roots[0]) / path
    real = Path(os.path.realpath(path))
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    # Containment is checked before existence, so the app never reveals which outside files exist.
    if not any(real == r or real.is_relative_to(r) for r in real_roots):
        where = " or ".join(str(r) for r in real_roots)
        raise PathRefused(
            f"image path {text!r} resolves outside the run folder and the run's data_root ({where}); refused"
        )
    if not real.is_file():
        raise ImageError(f"image {text} not found (resolved to {real})")
    return real


def case_path(run: Run, raw: Any) -> Path:
    """`resolve_case_path` with the run's roots; relative paths are under data_root if set."""
    return resolve_case_path(raw, run.allowed_roots, base=run.data_root or run.run_dir)


def file_stamp(path: Path) -> tuple[str, int, int]:
    """(path, mtime_ns, size): a cache key that changes when the file is rewritten."""
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


# ---------------------------------------------------------------- display images


@dataclass(frozen=True)
class DisplayImage:
    """An image in modality units, downsampled for display, with its de-identified metadata."""

    pixels: np.ndarray  # float32, 2-D, modality units
    meta: dict[str, Any]
    native_shape: tuple[int, int]

    @property
    def scale(self) -> float:
        return self.pixels.shape[0] / self.native_shape[0]


def prepare_display(
    path: str | Path, max_side: int = DEFAULT_MAX_SIDE, *, slice_index: int | None = None, frame: int | None = None
) -> DisplayImage:
    """Read an image in modality units (medrec.io, window=None) and downsample it so its longer
    side is at most `max_side`, averaging pixel areas so that values stay in modality units.

    Args:
        slice_index: the slice of a volume (NIfTI third axis, multi-frame DICOM frame); default
            the middle one. Use `case_slice` for a case's slice.
        frame: the volume of a 4-D NIfTI file (the run's data.frame); default the middle one.
    """
    arr, meta = read_image(Path(path), window=None, slice_index=slice_index, frame=frame)
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour PNG/JPEG: review on luminance
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2:
        raise ImageError(f"{path}: expected a 2-D image for display, got shape {arr.shape}")
    native = (int(arr.shape[0]), int(arr.shape[1]))
    return DisplayImage(pixels=downsample(arr, max_side), meta=dict(meta or {}), native_shape=native)


def downsample(arr: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average `arr` so its longer side is at most `max_side` (unchanged if already small)."""
    h, w = arr.shape
    if max(h, w) <= max_side:
        return arr
    from PIL import Image

    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(
        Image.fromarray(arr.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX), dtype=np.float32
    )


def case_slice(run: Run, value: Any) -> int | None:
    """The slice of a volume a case shows: its `slice` cell, else the run's data.slice when that
    is a number (the slice the network was trained on), else None (the middle slice)."""
    k = slice_of(pd.to_numeric(value, errors="coerce"))
    if k is not None:
        return k
    fixed = run.data_cfg.slice if run.data_cfg is not None else None
    return fixed if isinstance(fixed, int) and not isinstance(fixed, bool) else None


def case_frame(run: Run) -> int | None:
    """The run's data.frame (the volume of a 4-D NIfTI file), or None (the middle one)."""
    return run.data_cfg.frame if run.data_cfg is not None else None


def slice_caption(meta: Mapping[str, Any], slice_index: int | None) -> str | None:
    """'slice 3 of volume (0–4)' for a slice of a volume; None for a plain 2-D image."""
    if meta.get("number_of_slices") is not None:  # NIfTI
        k, n = meta.get("slice_index"), int(meta["number_of_slices"])
    else:  # DICOM: slices of a multi-frame file are its frames
        k, n = meta.get("frame"), int(meta.get("number_of_frames") or 1)
    if n <= 1 and slice_index is None:
        return None
    k = slice_index if k is None else k
    return f"slice {k} of volume (0–{n - 1})" if n > 1 else f"slice {k} of volume"


def window_presets() -> dict[str, tuple[float, float]]:
    """The named DICOM windows (center, width) that medrec.io knows."""
    return {str(k): (float(v[0]), float(v[1])) for k, v in WINDOW_PRESETS.items()}


def run_windows(run: Run) -> dict[str, tuple[float, float]]:
    """A CT run's windows of data.channels, named like 'brain (40/80)', in channel order (the
    first is the one medrec shows a CT image through); empty for other modalities."""
    cfg = run.data_cfg
    if cfg is None or cfg.modality != "ct" or not cfg.channels:
        return {}
    return {f"{name} ({c:g}/{width:g})": (c, width) for name, c, width in named_windows(cfg.channels)}


def file_window(meta: Mapping[str, Any]) -> tuple[float, float] | None:
    """The first WindowCenter/Width recorded in the file, if any."""
    c, w = meta.get("window_center"), meta.get("window_width")
    c = c[0] if isinstance(c, (list, tuple)) and c else c
    w = w[0] if isinstance(w, (list, tuple)) and w else w
    try:
        c, w = float(c), float(w)
    except (TypeError, ValueError):
        return None
    return (c, w) if w > 0 and math.isfinite(c) else None


def auto_window(pixels: np.ndarray, meta: Mapping[str, Any]) -> tuple[float, float]:
    """The file's window if it has one, else the 0.5-99.5 percentile range (as in medrec.io's
    window="auto"; a VOI LUT sequence is not expressible as center/width and is not used here)."""
    fw = file_window(meta)
    if fw:
        return fw
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(pixels.min()), float(pixels.max())
    return float(lo + hi) / 2, max(float(hi - lo), 1e-3)


def to_gray8(pixels: np.ndarray, center: float, width: float) -> np.ndarray:
    """Window modality values with medrec.io's apply_window and quantise to uint8."""
    # DICOM's LINEAR window needs width >= 1; narrower windows (images in small units) use
    # LINEAR_EXACT, the same ramp without the half-pixel offsets.
    windowed = (
        apply_window(pixels, center, width) if width >= 1 else apply_window(pixels, center, width, "LINEAR_EXACT")
    )
    out = np.clip(np.asarray(windowed, dtype=np.float32), 0.0, 1.0)
    return np.round(out * 255).astype(np.uint8)


def load_cam(run: Run, image_id: str, target: str | None = None) -> np.ndarray | None:
    """The Grad-CAM map for an image (RUN/predictions/cams/<image_id>.npy), as float32 in [0, 1],
    or None when there is none. A (labels, H, W) map is indexed by the target's position."""
    name = f"{image_id}.npy"
    if Path(name).name != name or name.startswith("."):
        raise PathRefused(f"image_id {image_id!r} is not a plain file name; CAM refused")
    for folder in run.cam_dirs:
        path = folder / name
        if not path.is_file():
            continue
        real = resolve_case_path(str(path), [folder])
        cam = np.load(real, allow_pickle=False)
        if cam.ndim == 3:
            idx = run.targets.index(target) if target in run.targets and cam.shape[0] == len(run.targets) else 0
            cam = cam[idx]
        cam = np.nan_to_num(cam.astype(np.float32))
        top = float(cam.max()) if cam.size else 0.0
        return np.clip(cam / top, 0, 1) if top > 1 else np.clip(cam, 0, 1)
    return None


_CAM_COLORS = np.array(  # a perceptual "inferno"-like ramp: dark purple -> red -> yellow
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


def colorize(cam: np.ndarray) -> np.ndarray:
    """Map a [0, 1] map to RGB float32 in [0, 255]."""
    xs = np.linspace(0, 1, len(_CAM_COLORS))
    return np.stack([np.interp(cam, xs, _CAM_COLORS[:, k]) for k in range(3)], axis=-1)


def compose(
    gray: np.ndarray,
    cam: np.ndarray | None = None,
    *,
    opacity: float = 0.4,
    zoom: float = 1.0,
    pan: tuple[float, float] = (0.5, 0.5),
) -> np.ndarray:
    """RGB uint8 view: the windowed image, the CAM blended in proportion to its value
    (cold regions stay untinted), then a crop of 1/zoom of each side centred at `pan`
    (fractions of height and width)."""
    rgb = np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)
    if cam is not None and opacity > 0:
        if cam.shape != gray.shape:
            from PIL import Image

            cam = np.asarray(
                Image.fromarray(cam.astype(np.float32), mode="F").resize(gray.shape[::-1], Image.Resampling.BILINEAR)
            )
        alpha = (opacity * np.clip(cam, 0, 1))[..., None]
        rgb = (1 - alpha) * rgb + alpha * colorize(cam)
    if zoom > 1:
        h, w = gray.shape
        ch, cw = max(1, round(h / zoom)), max(1, round(w / zoom))
        top = int(np.clip(round(pan[0] * h - ch / 2), 0, h - ch))
        left = int(np.clip(round(pan[1] * w - cw / 2), 0, w - cw))
        rgb = rgb[top : top + ch, left : left + cw]
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def safe_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Only the displayable, non-identifying metadata: no names, dates, UIDs or IDs, and only
    short scalar or small-list values."""
    out = {}
    for key, value in meta.items():
        if _DENY.search(str(key)) and str(key) not in _ALLOW:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if (
            isinstance(value, (list, tuple))
            and len(value) <= 4
            and all(isinstance(v, (int, float, str)) for v in value)
        ):
            value = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        if isinstance(value, float):
            value = f"{value:g}"
        if isinstance(value, (str, int, bool)) and len(str(value)) <= 80:
            out[str(key)] = value
    return out

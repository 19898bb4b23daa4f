"""Worst errors at the operating point, with thumbnails of the images as the network saw them."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import numpy as np

from medrec.data.manifest import NPZ_SEP, table_slices
from medrec.eval.inputs import Run
from medrec.eval.oof import OOF

log = logging.getLogger(__name__)


def worst_cases(run: Run, ev: dict, n: int) -> list[dict]:
    """Sections of the worst errors at the operating point, each with up to `n` cases.

    Binary/multilabel: false positives with the highest scores and false negatives with the
    lowest, among rows whose fold has a threshold (the rest are counted in "excluded", never
    called negative). Multiclass: wrong predictions with the highest confidence. Each case
    carries a base64 PNG thumbnail or None when the image cannot be read.
    """
    if n == 0:
        return []
    oof, t = run.oof, run.table
    if "image_id" in t.columns:
        ids = t["image_id"].astype(str).to_numpy()
    else:
        ids = np.array([f"row {i}" for i in range(len(t))])
    sections = _multiclass_errors(oof) if oof.task == "multiclass" else _threshold_errors(oof, ev["thresholds"])
    roots = data_roots(run)
    return [{"title": title, "excluded": excluded, "cases": _pick(rows, n, t, ids, oof, run.cfg.data, roots)}
            for title, rows, excluded in sections]


def data_roots(run: Run) -> list[Path]:
    """The folders thumbnails may be read from: the ones the run was trained on (config.yaml's
    data.root and the manifest's folder). A relative one is taken from run.json's data_root when
    that names the same folder, else from the working directory. A filesystem root, the home
    folder or a parent of the working directory is never one: oof_predictions.csv is untrusted
    input and must not make the report read (and embed) arbitrary files."""
    data, recorded = run.cfg.data, run.info.get("data_root")
    trained = ([Path(data.root)] if data.root else []) + ([Path(data.manifest).parent] if data.manifest else [])
    roots = []
    for p in trained:
        if not p.is_absolute():
            here = Path(os.path.realpath(recorded)) if isinstance(recorded, str) and "\x00" not in recorded else None
            p = here if here is not None and p.parts and here.parts[-len(p.parts):] == p.parts else Path.cwd() / p
        roots.append(Path(os.path.realpath(p)))
    cwd, home = Path(os.path.realpath(Path.cwd())), Path(os.path.realpath(Path.home()))
    return [r for r in roots if len(r.parts) > 1 and r != home and not (cwd != r and cwd.is_relative_to(r))]


def _inside(path: str, roots: list[Path]) -> bool:
    """True when the image file (an npz member: its npz file) resolves inside one of `roots`."""
    real = Path(os.path.realpath(path.split(NPZ_SEP)[0]))
    return any(real == r or real.is_relative_to(r) for r in roots)


def _multiclass_errors(oof: OOF) -> list[tuple[str, list, int]]:
    pred = oof.score.argmax(axis=1)
    conf = oof.score.max(axis=1)
    rows = [(i, f"{oof.names[oof.y[i]]} → {oof.names[pred[i]]}", conf[i], None) for i in np.flatnonzero(pred != oof.y)]
    return [("Most confident errors (true → predicted)", sorted(rows, key=lambda r: -r[2]), 0)]


def _threshold_errors(oof: OOF, thresholds: np.ndarray) -> list[tuple[str, list, int]]:
    fps, fns = [], []
    excluded = {0: 0, 1: 0}  # labelled negatives / positives in folds without a threshold
    for j, name in enumerate(oof.names):
        has, thr = ~np.isnan(oof.y[:, j]), thresholds[:, j]
        defined = has & ~np.isnan(thr)
        called = defined & (oof.score[:, j] >= np.where(defined, thr, np.inf))
        for value, rows, dest in ((0, called, fps), (1, defined & ~called, fns)):
            rows = rows & (oof.y[:, j] == value)
            dest += [(i, name, oof.score[i, j], thr[i]) for i in np.flatnonzero(rows)]
            excluded[value] += int((has & ~defined & (oof.y[:, j] == value)).sum())
    return [("Worst false positives (highest scores)", sorted(fps, key=lambda r: -r[2]), excluded[0]),
            ("Worst false negatives (lowest scores)", sorted(fns, key=lambda r: r[2]), excluded[1])]


def _pick(rows: list, n: int, table, ids: np.ndarray, oof: OOF, data_cfg=None, roots=()) -> list[dict]:
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
                    "thumbnail": thumbnail(paths[i], ids[i], data_cfg=data_cfg, slice_index=slices[i])
                    if _inside(paths[i], roots) else None})
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

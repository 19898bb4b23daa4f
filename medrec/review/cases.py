"""A run's predictions as review cases: loading, checking each row, filtering and sorting.

The review app is a thin Streamlit layer over this module and medrec.review.display /
medrec.review.paths; everything here is plain Python and pandas, testable without a browser.
A predictions file is untrusted: a row with a value the app cannot use (a score that is not a
number in [0, 1], a label that is not 0/1, a slice that is not a slice number) stays a case
whose `problem` says what is wrong, and the run lists such rows once in `bad_rows`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrec.config import DataConfig
from medrec.errors import DataError
from medrec.review import runinfo
from medrec.safetext import one_line

OOF_CSV = runinfo.OOF_CSV
DEFAULT_THRESHOLD = runinfo.DEFAULT_THRESHOLD

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
    bad_rows: tuple[str, ...] = ()  # "row 4 (img7): score 'abc' is not a number in [0, 1]"
    notes: tuple[str, ...] = ()  # things the loader ignored (e.g. a refused data_root)

    @property
    def name(self) -> str:
        return str(self.info.get("name") or self.run_dir.name)

    @property
    def class_names(self) -> list[str] | None:
        names = self.info.get("class_names")
        return [str(n) for n in names] if isinstance(names, list) and names else None

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
    folder = runinfo.read_folder(run_dir, predictions)
    raw, info = folder.predictions, folder.info
    task = str(info.get("task") or ("binary" if "score" in raw.columns else "multilabel"))
    if task not in ("binary", "multilabel", "multiclass"):
        raise DataError(f"{folder.run_dir}/run.json: task {task!r} unknown; valid: binary, multilabel, multiclass")
    targets = _targets(info, task, raw)
    thresholds, source = runinfo.thresholds(info, task, targets)
    cases = _cases(raw, task, targets, folder.predictions_path)
    bad = tuple(
        f"row {int(r.order) + 2} ({one_line(r.image_id, 60)}): {r.problem}"  # +2: header line, 1-based
        for r in cases.itertuples()
        if r.problem
    )
    return Run(
        run_dir=folder.run_dir,
        info=info,
        task=task,
        targets=targets,
        thresholds=thresholds,
        threshold_source=source,
        data_root=folder.data_root,
        allowed_roots=tuple(r for r in (folder.run_dir, folder.data_root) if r is not None),
        cam_dirs=folder.cam_dirs,
        predictions_path=folder.predictions_path,
        cases=cases,
        data_cfg=folder.data_cfg,
        bad_rows=bad,
        notes=folder.notes,
    )


def _targets(info: Mapping[str, Any], task: str, raw: pd.DataFrame) -> tuple[str, ...]:
    if task == "multiclass" and info.get("class_names"):
        return tuple(str(n) for n in info["class_names"])
    names = [str(n) for n in info.get("label_names") or []]
    if task == "binary":
        return (names[0] if names else "label",)
    if not names:
        names = [c.removeprefix("score_") for c in raw.columns if c.startswith("score_")]
    if not names:
        raise DataError(f"{task} predictions need score_<name> columns; found {', '.join(map(str, raw.columns))}")
    return tuple(names)


def _spread_column(raw: pd.DataFrame, suffix: str) -> str | None:
    stems = ("spread", "score_spread", "score_std", "std")
    for stem in stems:
        col = f"{stem}{suffix}"
        if col in raw.columns:
            return col
    return None


class _Checker:
    """Numeric columns of a predictions file, with a problem note for each unusable cell."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.problems: list[list[str]] = [[] for _ in range(len(df))]

    def note(self, bad: pd.Series, message) -> None:
        for i in np.flatnonzero(bad.to_numpy()):
            self.problems[i].append(message(self.df.iloc[i]))

    def number(self, col: str, *, lo: float, hi: float, required: bool, what: str) -> pd.Series:
        """`col` as float; a cell that is not a finite number in [lo, hi] is NaN plus a problem."""
        if col not in self.df.columns:
            return pd.Series(np.nan, index=self.df.index)
        raw = self.df[col]
        num = pd.to_numeric(raw, errors="coerce").astype(float)
        bad = ~np.isfinite(num) | (num < lo) | (num > hi)
        bad &= raw.notna() | required
        self.note(bad, lambda r: f"{col} {one_line(r[col], 40)!r} is not {what}")
        return num.where(~bad)

    def label(self, col: str, n_classes: int = 2) -> pd.Series:
        what = "a label (0 or 1) or empty" if n_classes == 2 else f"a class index (0 to {n_classes - 1}) or empty"
        num = self.number(col, lo=0, hi=n_classes - 1, required=False, what=what)
        frac = num.notna() & (num != np.round(num))
        self.note(frac, lambda r: f"{col} {one_line(r[col], 40)!r} is not a whole number")
        return num.where(~frac)


def _cases(raw: pd.DataFrame, task: str, targets: Sequence[str], pred_path: Path) -> pd.DataFrame:
    """One row per image (a slice of a volume is an image): path, slice (NaN: the default slice),
    image_id, fold, problem, then per target `score_<t>`, `label_<t>`, `spread_<t>`."""
    if "path" not in raw.columns:
        raise DataError(f"{pred_path.name}: no 'path' column; found {', '.join(map(str, raw.columns))}")
    df = raw.reset_index(drop=True)
    check = _Checker(df)
    # The slice of a volume (empty or -1: the default slice); slices of one volume share a path.
    slices = check.number("slice", lo=-1, hi=2**31, required=False, what="a slice number")
    slices = slices.where(slices >= 0).apply(lambda v: v if pd.isna(v) else float(int(v)))
    ids = df["image_id"] if "image_id" in df.columns else pd.Series(np.nan, index=df.index)
    ids = [
        str(i) if isinstance(i, str) and i else Path(str(p)).name + ("" if pd.isna(k) else f"-s{int(k)}")
        for i, p, k in zip(ids, df["path"], slices)
    ]
    out = pd.DataFrame(index=df.index)
    if task == "binary":
        if "score" not in df.columns:
            raise DataError(f"{pred_path.name}: binary predictions need a 'score' column; found "
                            f"{', '.join(map(str, df.columns))}")
        _target_columns(out, check, targets[0], "score", "label", _spread_column(df, ""))
    else:
        missing = [f"score_{t}" for t in targets if f"score_{t}" not in df.columns]
        if missing:
            raise DataError(f"{pred_path.name}: missing score columns {', '.join(missing)}; found "
                            f"{', '.join(map(str, df.columns))}")
        shared = check.label("label", len(targets)) if task == "multiclass" and "label" in df.columns else None
        for i, t in enumerate(targets):
            label_col = f"label_{t}" if f"label_{t}" in df.columns or shared is None else None
            _target_columns(out, check, t, f"score_{t}", label_col, _spread_column(df, f"_{t}"))
            if label_col is None:
                out[f"label_{t}"] = (shared == i).astype(float).where(shared.notna())
    out["image_id"] = ids
    out["path"] = df["path"]
    out["slice"] = slices
    out["fold"] = check.number("fold", lo=0, hi=10_000, required=False, what="a fold number")
    out["repeat"] = pd.to_numeric(df["repeat"], errors="coerce").fillna(0) if "repeat" in df.columns else 0
    out["problem"] = ["; ".join(p) for p in check.problems]
    out["order"] = np.arange(len(out))
    return _collapse_repeats(out, targets)


def _target_columns(out: pd.DataFrame, check: _Checker, t: str, score: str, label: str | None, spread: str | None):
    out[f"score_{t}"] = check.number(score, lo=0, hi=1, required=True, what="a number in [0, 1]")
    out[f"label_{t}"] = check.label(label) if label else np.nan
    out[f"spread_{t}"] = (
        check.number(spread, lo=0, hi=1, required=False, what="a spread in [0, 1]") if spread else np.nan
    )


def _collapse_repeats(df: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """Repeated CV predicts each image once per repeat: average the scores, and without a
    spread column report the standard deviation across repeats as the spread."""
    n_repeats = df.groupby("image_id")["repeat"].nunique().max() if len(df) else 1
    first = df.sort_values(["repeat", "order"]).groupby("image_id", sort=False).first()
    if n_repeats > 1:
        grouped = df.groupby("image_id")
        first["problem"] = grouped["problem"].agg(lambda p: "; ".join(dict.fromkeys(x for x in p if x)))
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
    A case with a problem keeps its row (score NaN, pred 0) so that it can show its error.
    """
    if target not in run.targets:
        raise DataError(f"label '{target}' unknown; valid: {', '.join(run.targets)}")
    c = run.cases
    out = c[["image_id", "path", "slice", "fold", "order", "problem"]].copy()
    out["score"] = c[f"score_{target}"].astype(float)
    out["truth"] = c[f"label_{target}"].astype(float)
    out["spread"] = c[f"spread_{target}"].astype(float)
    thr = run.thresholds[target]
    if run.task == "multiclass" and math.isnan(thr):
        scores = np.nan_to_num(c[[f"score_{t}" for t in run.targets]].to_numpy(float), nan=-1.0)
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
        keep = (cases["truth"] == 1) & (cases["pred"] == 0) & cases["score"].notna()
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

"""How a case's truth and decision are named on the page ('pneumonia', 'false negative', ...)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from medrec.review.cases import Run


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value)


def label_text(run: Run, value: Any) -> str:
    """'positive' / 'negative' / a class name for a 0/1 truth or decision; 'unknown' if missing."""
    if _missing(value):
        return "unknown"
    if run.task == "multiclass":
        return str(value)
    names = run.class_names
    k = int(value)
    if run.task == "binary" and names and len(names) == 2 and k in (0, 1):
        return names[k]
    return "positive" if k == 1 else "negative"


def outcome(truth: Any, pred: Any) -> tuple[str, str]:
    """(text, colour) of a 0/1 decision against a 0/1 truth."""
    if _missing(truth) or _missing(pred):
        return "no ground truth", "gray"
    return {
        (1, 1): ("true positive", "green"),
        (0, 0): ("true negative", "green"),
        (0, 1): ("false positive", "red"),
        (1, 0): ("false negative", "red"),
    }.get((int(truth), int(pred)), ("no ground truth", "gray"))


def decision_value(row: pd.Series) -> str:
    """The model's decision as stored with a verdict: the class name, or '0'/'1'."""
    return str(row["pred_class"]) if "pred_class" in row else str(int(row["pred"]))


def truth_value(run: Run, row: pd.Series) -> str | None:
    """The case's ground truth as stored with a verdict: the class name, '0'/'1', or None."""
    if _missing(row["truth"]):
        return None
    if run.task == "multiclass":
        case = run.cases.loc[run.cases["image_id"] == row["image_id"]].iloc[0]
        hits = [t for t in run.targets if case[f"label_{t}"] == 1]
        return hits[0] if hits else None
    return str(int(row["truth"]))


def multiclass_outcome(run: Run, row: pd.Series) -> tuple[str, str, str]:
    """(decision, truth text, colour-coded outcome) of a multiclass case."""
    decision, truth = str(row["pred_class"]), truth_value(run, row)
    if truth is None:
        return decision, "unknown", "no ground truth|gray"
    return decision, truth, "correct|green" if truth == decision else "misclassified|red"


def verdict_choices(run: Run) -> dict[str, str]:
    """Corrected-label choices shown to the reviewer -> the value stored."""
    if run.task == "multiclass":
        return {t: t for t in run.targets}
    return {f"{label_text(run, v)} ({v})": str(v) for v in (0, 1)}

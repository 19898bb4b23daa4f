"""The report as an ordered list of blocks, rendered alike to report.html and report.md.

A block is a small tuple: ("h1" | "h2" | "h3" | "p" | "note", text), ("table", head, rows,
first numeric column), ("figure", name, title) or ("cases", section). Every text in a block is
plain text (possibly from files); the renderers escape it, so no string from a run folder can
become markup in either format.
"""

from __future__ import annotations

from medrec.eval.inputs import Run
from medrec.eval.sections import (
    aggregate_notes, aggregate_table, stability_notes, stability_table, subgroup_notes, subgroup_tables,
)
from medrec.eval.tables import (
    _threshold_text, calibration_rows, fold_rows, header_rows, label_rows, metric_rows, temperature_title,
)

Block = tuple
FIGURE_TITLES = {"roc": "ROC curves (per fold, pooled)", "pr": "Precision-recall curves (per fold, pooled)",
                 "reliability": "Reliability diagram", "confusion": "Confusion matrix at the operating point",
                 "forest": "Subgroups: forest plot"}
METRIC_HEAD = ["metric", "value", "95% CI", "valid resamples"]
TEMPERATURE_HEAD = ["label", "stored T", "ECE before", "ECE after", "Brier before", "Brier after"]
OPTIMISTIC = "† threshold chosen on this data (optimistic)."


def report_blocks(run: Run, doc: dict, figure_names: list[str], cases: list[dict]) -> list[Block]:
    """Every block of the report, in order."""
    blocks: list[Block] = [("h1", f"medrec report: {doc['provenance']['name']}"),
                           ("table", ["field", "value"], [list(r) for r in header_rows(run, doc)], 99),
                           ("h2", "Method")]
    blocks += [("note", n) for n in doc["notes"]]
    blocks += [("p", _threshold_text(doc)), ("h2", "Metrics"),
               ("table", METRIC_HEAD, [list(r) for r in metric_rows(doc)], 1)]
    if doc["operating_point"]["selection"] == "same data (optimistic)":
        blocks.append(("note", OPTIMISTIC))
    head, rows = label_rows(doc)
    if rows:
        blocks += [("h2", "Per label"), ("table", head, rows, 1)]
    blocks += [("figure", n, FIGURE_TITLES[n]) for n in ("roc", "pr", "reliability", "confusion")
               if n in figure_names]
    cal = calibration_rows(doc)
    if cal:
        blocks += [("h2", temperature_title(doc)), ("table", TEMPERATURE_HEAD, cal, 1)]
    if doc.get("threshold_stability"):
        head, rows = stability_table(doc)
        blocks += [("h2", "Operating point stability")] + [("note", n) for n in stability_notes(doc)]
        blocks.append(("table", head, rows, 2))
    if doc.get("aggregate"):
        head, rows = aggregate_table(doc)
        blocks += [("h2", "Image, patient and study level")] + [("note", n) for n in aggregate_notes(doc)]
        blocks.append(("table", head, rows, 1))
    blocks += _subgroup_blocks(doc, figure_names)
    head, rows = fold_rows(doc)
    blocks += [("h2", "Per fold"), ("table", head, rows, 0)]
    if cases:
        blocks.append(("h2", "Worst errors at the operating point"))
        blocks += [("cases", section) for section in cases]
    blocks += [("h2", "Reproducibility"), ("p", reproducibility_text(doc))]
    return blocks


def _subgroup_blocks(doc: dict, figure_names: list[str]) -> list[Block]:
    section = doc.get("subgroups")
    if not section:
        return []
    blocks: list[Block] = [("h2", "Subgroups")] + [("note", n) for n in subgroup_notes(section)]
    for label, head, rows in subgroup_tables(section):
        if label and len(doc["labels"]) > 1:
            blocks.append(("h3", label))
        blocks.append(("table", head, rows, 2))
    if "forest" in figure_names:
        blocks.append(("figure", "forest", FIGURE_TITLES["forest"]))
    return blocks


def reproducibility_text(doc: dict) -> str:
    return (f"metrics.json is byte-identical for identical runs apart from the fields under 'volatile': "
            f"{', '.join(doc['volatile_fields'])}. Built {doc['volatile']['built']} from oof_predictions.csv, "
            "run.json and config.yaml.")


def excluded_text(section: dict) -> str | None:
    """The line saying how many images of folds without a threshold a case section leaves out."""
    n = section.get("excluded", 0)
    return (f"{n} labelled row(s) in folds without a threshold are not shown here (not called negative)."
            if n else None)

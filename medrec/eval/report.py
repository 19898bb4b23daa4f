"""Rebuild a run's metrics.json, report.html, report.md and plots/ from its saved files alone.

Inputs: RUN/oof_predictions.csv, RUN/run.json and RUN/config.yaml. No model, no GPU and no
torch: the out-of-fold predictions hold everything the evaluation needs, so a report can be
rebuilt (or re-thresholded by editing eval.* in config.yaml) on any machine.

metrics.json is canonical: sorted keys, floats rounded to 6 decimals, NaN written as null and a
seeded bootstrap, so two identical runs give byte-identical files once the fields under
"volatile" (listed in "volatile_fields") are left out.
"""


from __future__ import annotations

import logging
from pathlib import Path

from medrec.eval import plots
from medrec.fileio import atomic_write_bytes, atomic_write_text
from medrec.eval.aggregate import aggregate_results
from medrec.eval.document import LEVEL, SCHEMA, dumps, json_ready, metrics_document
from medrec.eval.evaluate import evaluate
from medrec.eval.inputs import Run, load_run, oof_from_table
from medrec.eval.render import render_html, render_markdown
from medrec.eval.stability import threshold_stability
from medrec.eval.subgroups import METRICS, headline_label, subgroup_analysis
from medrec.eval.tables import preprocessing_text
from medrec.eval.thumbnails import thumbnail, worst_cases

__all__ = ["LEVEL", "SCHEMA", "Run", "build_report", "dumps", "json_ready", "load_run", "make_figures",
           "oof_from_table", "preprocessing_text", "thumbnail"]

log = logging.getLogger(__name__)


def build_report(run_dir: str | Path) -> dict:
    """Write RUN/metrics.json, RUN/report.html, RUN/report.md and RUN/plots/*.png.

    Returns:
        The metrics document as written to metrics.json (rounded, NaN as None).

    Raises:
        CheckpointError, DataError, ConfigError: the run folder cannot be evaluated.
    """
    run = load_run(run_dir)
    ev = evaluate(run.oof, run.cfg.eval)
    ev["subgroups"] = subgroup_analysis(run, ev)
    ev["aggregate"] = aggregate_results(run)
    ev["threshold_stability"] = threshold_stability(run.oof, run.cfg.eval)
    doc = json_ready(metrics_document(run, ev))  # rounded as written; keeps the display order
    atomic_write_text(run.dir / "metrics.json", dumps(doc))
    figures = make_figures(run, ev, doc)
    plot_dir = run.dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    for name, png in figures.items():
        atomic_write_bytes(plot_dir / f"{name}.png", png)
    cases = worst_cases(run, ev, run.cfg.eval.worst_cases)
    atomic_write_text(run.dir / "report.html", render_html(run, doc, figures, cases))
    atomic_write_text(run.dir / "report.md", render_markdown(run, doc, sorted(figures), cases))
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
    if doc.get("subgroups"):
        forest = _forest(doc)
        if forest is not None:
            figures["forest"] = forest
    return figures


def _forest(doc: dict) -> bytes | None:
    """The subgroup forest plot of the first label, with the whole data's values as reference."""
    label = headline_label(doc["subgroups"])
    if label is None:
        return None
    source = doc["per_label"].get(label) or doc["metrics"]
    overall = {m: (source.get(m) or {}).get("value") for m in METRICS[doc["task"]]}
    return plots.forest_figure(doc["subgroups"], label, overall)

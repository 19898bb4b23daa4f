"""report.html (self-contained, plots as base64 PNG) and report.md from the metrics document."""

from __future__ import annotations

import base64

from medrec.eval.inputs import Run
from medrec.eval.tables import (
    _fmt, _threshold_text, calibration_rows, fold_rows, header_rows, label_rows, metric_rows,
)


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

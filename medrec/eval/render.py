"""report.html (self-contained, plots as base64 PNG) and report.md from the report's blocks.

Every text is escaped with `medrec.safetext` (HTML for the page, Markdown for report.md):
config names, labels, image ids and notes come from run files and must stay text. Numbers the
report formats itself are written as they are, so report.md stays readable.
"""

from __future__ import annotations

import base64
import re

from medrec.eval.inputs import Run
from medrec.eval.outline import excluded_text, report_blocks
from medrec.eval.tables import _fmt
from medrec.safetext import html as h
from medrec.safetext import md, one_line

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
img.plot{max-width:100%;border:1px solid #eee}.wide{overflow-x:auto;max-width:100%}
"""
# Text without a Markdown metacharacter (letters, digits, spaces, ordinary punctuation) is inert and
# written as it is, so report.md stays readable; anything else goes through safetext.md.
_INERT = re.compile(r"(?:[^\W_]|(?<=[^\W_])_(?=[^\W_])|[ .,;:()%/×†–—−'=+\-])*")  # a_b: no emphasis
_MARKUP_START = re.compile(r"\s*(?:[-+=]|\d+[.)](?:\s|$))")  # a list item or rule at the start of a line


# ---------------------------------------------------------------- HTML

def _h_table(head: list[str], rows: list[list[str]], num_from: int = 1) -> str:
    """An HTML table, every cell escaped; columns from `num_from` on are right-aligned numbers."""
    def cell(i: int, c) -> str:
        return f"<td class=num>{h(c)}</td>" if i >= num_from else f"<td>{h(c)}</td>"

    th = "".join(f"<th>{h(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<div class=wide><table><tr>{th}</tr>{body}</table></div>"  # wide tables scroll, the page does not


def _h_case(c: dict) -> str:
    if c["thumbnail"]:
        img = f'<img alt="thumbnail" src="data:image/png;base64,{c["thumbnail"]}">'
    else:
        img = '<div class="missing">thumbnail unavailable</div>'
    thr = "" if c["threshold"] is None else f" / thr {c['threshold']:.3f}"
    return (f'<div class="case">{img}<div>{h(c["image_id"])}</div>'
            f'<div>{h(c["label"])}: score {c["score"]:.3f}{thr}</div>'
            f'<div>fold {c["fold"]}, repeat {c["repeat"]}</div></div>')


def _h_block(block: tuple, figures: dict[str, bytes]) -> str:
    kind = block[0]
    if kind in ("h1", "h2", "h3", "p"):
        return f"<{kind}>{h(block[1])}</{kind}>"
    if kind == "note":
        return f"<p class='note'>{h(block[1])}</p>"
    if kind == "table":
        return _h_table(block[1], block[2], block[3])
    if kind == "figure":
        b64 = base64.b64encode(figures[block[1]]).decode("ascii")
        return f"<h2>{h(block[2])}</h2><img class='plot' alt='{h(block[1])}' src='data:image/png;base64,{b64}'>"
    section = block[1]  # "cases"
    cards = "".join(_h_case(c) for c in section["cases"])
    extra = excluded_text(section)
    return (f"<h3>{h(section['title'])}</h3>" + (f"<p class='note'>{h(extra)}</p>" if extra else "")
            + (f'<div class="cases">{cards}</div>' if cards else "<p>None.</p>"))


def render_html(run: Run, doc: dict, figures: dict[str, bytes], cases: list[dict]) -> str:
    """One self-contained HTML page (plots as base64 PNG); every string from data is escaped."""
    title = f"medrec report: {h(doc['provenance']['name'])}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             f"<style>{_CSS}</style></head><body>"]
    parts += [_h_block(b, figures) for b in report_blocks(run, doc, sorted(figures), cases)]
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------- Markdown

def md_text(text, cell: bool = False) -> str:
    """Markdown-safe text on one line: inert text as it is, anything else escaped (safetext.md).

    Bare URLs are escaped too (GitHub links "www." and "://" without any markup). In a table
    `cell` a leading "+" or "-" is inert (cells hold inline content only, never a list)."""
    text = one_line(text)
    inert = _INERT.fullmatch(text) and (cell or not _MARKUP_START.match(text))
    return text if inert and "://" not in text and "www." not in text.lower() else md(text)


def _m_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_text(x, cell=True) for x in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_text(c, cell=True) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _m_block(block: tuple) -> list[str]:
    kind = block[0]
    if kind in ("h1", "h2", "h3"):
        return ["#" * int(kind[1]) + " " + md_text(block[1]), ""]
    if kind == "p":
        return [md_text(block[1]), ""]
    if kind == "note":
        return [f"- {md_text(block[1])}"]
    if kind == "table":
        return ["", _m_table(block[1], block[2]), ""]
    if kind == "figure":
        return [f"![{md_text(block[2])}](plots/{block[1]}.png)", ""]
    section = block[1]
    table = [[c["image_id"], c["label"], _fmt(c["score"]), _fmt(c["threshold"]), c["fold"], c["repeat"]]
             for c in section["cases"]]
    extra = excluded_text(section)
    return ([f"### {md_text(section['title'])}", ""] + ([md_text(extra), ""] if extra else [])
            + [_m_table(["image", "label", "score", "threshold", "fold", "repeat"], table), ""])


def render_markdown(run: Run, doc: dict, figure_names: list[str], cases: list[dict]) -> str:
    """The report as Markdown, with links to plots/*.png (no thumbnails); all text escaped."""
    lines: list[str] = []
    for block in report_blocks(run, doc, figure_names, cases):
        if block[0] != "note" and lines and lines[-1].startswith("- "):
            lines.append("")  # end a list of notes
        lines += _m_block(block)
    return "\n".join(lines) + "\n"

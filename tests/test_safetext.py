"""medrec.safetext against independent renderers: Python-Markdown (which elements a string
makes), CommonMark's backslash-escape rule (which text it shows) and html.parser."""

from __future__ import annotations

import html as std_html
import re
import string
from html.parser import HTMLParser

import pytest

from medrec.safetext import csv_cell, html, md, md_code, one_line

PAYLOADS = [
    "![x](http://example.invalid/t.png)",
    "[click](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
    ":red[alarm] :material/warning:",
    "# heading\n- item\n| a | b |",
    "**bold** _it_ `code` ~~strike~~ $x^2$",
    "id\r\nwith\nnewlines\x00and\tNUL",
    "&lt;already&gt; & plain",
]


def _commonmark_unescape(markup: str) -> str:
    """CommonMark 2.4: a backslash before ASCII punctuation shows that character; then entities."""
    punct = re.escape(string.punctuation)
    return std_html.unescape(re.sub(rf"\\([{punct}])", r"\1", markup))


def _commonmark_text(markup: str) -> tuple[str, list[str]]:
    """(text CommonMark shows, elements other than p/br that Python-Markdown makes of it)."""
    markdown = pytest.importorskip("markdown")
    rendered = markdown.markdown(markup, extensions=["tables"])

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.tags = []

        def handle_starttag(self, tag, attrs):
            if tag not in ("p", "br"):
                self.tags.append(tag)

    c = Tags()
    c.feed(rendered)
    text = markup.replace("  \n", "\n")
    return (text if text.startswith("`") else _commonmark_unescape(text)), c.tags


@pytest.mark.parametrize("payload", PAYLOADS)
def test_md_renders_as_the_literal_text(payload):
    text, tags = _commonmark_text(md(payload))
    assert tags == []  # no link, image, heading, list, table, emphasis, code
    assert text == one_line(payload)


def test_md_multiline_keeps_lines_as_hard_breaks():
    text, tags = _commonmark_text(md("# one\n* two", multiline=True))
    assert tags == [] and text == "# one\n* two"


def test_md_code_shows_verbatim_and_cannot_close_early():
    text, tags = _commonmark_text(md_code("a`b ![x](y)"))
    assert tags == ["code"] and text == "`a'b ![x](y)`"


@pytest.mark.parametrize("payload", PAYLOADS)
def test_html_round_trips_through_an_html_parser(payload):
    class Collect(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.text, self.tags = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

        def handle_data(self, data):
            self.text.append(data)

    c = Collect()
    c.feed(f'<span title="{html(payload)}">{html(payload)}</span>')
    assert c.tags == ["span"] and "".join(c.text) == one_line(payload)
    assert std_html.unescape(html(payload)) == one_line(payload)


def test_one_line_strips_every_control_character():
    out = one_line("a\nb\rc\td\x00e\x85f\u2028g   h")
    assert out == "a b c d e f g h"
    assert one_line("x" * 10, max_len=5) == "xxxx…"


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "=cmd|' /C calc'!A0"])
def test_csv_cell_neutralises_formula_starts(cell):
    assert csv_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["plain", "a=b", "", -1.5, 3, None])
def test_csv_cell_leaves_other_values(cell):
    assert csv_cell(cell) == cell

"""Text from files shown as text: the one escaping helper for Markdown, HTML, CSV cells and ids.

Everything medrec shows that it did not write itself (run.json fields, CSV cells and column
names, DICOM strings, image ids, exception messages that quote them, reviewer comments) goes
through one of these functions where it is shown, so that a crafted value cannot add a link,
an image (an outside request), a Streamlit directive (`:red[...]`, `:material/...:`), raw HTML,
a table cell or a new line to the page or file it lands in.

- `md(text)`: for Streamlit Markdown (st.markdown, captions, st.error/warning/info, table
  cells, report.md). Backslash-escapes every Markdown/Streamlit special character and turns
  HTML's `<` `>` `&` into entities; newlines are folded to spaces unless `multiline=True`.
- `html(text)`: for HTML element text and attribute values (report.html).
- `one_line(text)`: control characters (newline, CR, tab, NUL, ...) replaced by spaces and
  runs of spaces collapsed; for ids and names placed in headers, file names or log lines.
- `csv_cell(value)`: OWASP CSV-injection guard for a cell a spreadsheet will open.
"""

from __future__ import annotations

import html as _html
import re
from typing import Any

__all__ = ["md", "md_code", "html", "one_line", "csv_cell", "CSV_FORMULA_PREFIXES"]

# Markdown (CommonMark + GFM tables/strikethrough) and Streamlit's extras: ':' starts a
# directive or an emoji/icon shortcode, '$' starts LaTeX, '~' strikethrough, '|' a table cell.
_MD_SPECIAL = frozenset("\\`*_{}[]()#+-.!|~:$=\"'^")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"[ \t]{2,}")

CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def one_line(value: Any, max_len: int | None = None) -> str:
    """`value` as one line: control characters (newlines, CR, tab, NUL, C1, line/paragraph
    separators) become single spaces; cut to `max_len` characters with '…' if given."""
    text = _CONTROL.sub(" ", _text(value))
    text = _SPACES.sub(" ", text).strip()
    if max_len is not None and len(text) > max_len:
        text = text[: max(0, max_len - 1)] + "…"
    return text


def md(value: Any, *, multiline: bool = False) -> str:
    """`value` as literal text inside Streamlit Markdown (or any CommonMark document).

    Every Markdown and Streamlit special character is backslash-escaped and `& < >` become
    HTML entities (so raw HTML is shown, not parsed, even where the renderer allows HTML).
    With `multiline=False` (default) the text is folded onto one line, so it cannot start a
    heading, list or table row; with `multiline=True` its own line breaks are kept as Markdown
    hard breaks (reviewer comments).
    """
    if multiline:
        lines = [one_line(line) for line in _text(value).replace("\r\n", "\n").replace("\r", "\n").split("\n")]
        return "  \n".join(_md_line(line) for line in lines)
    return _md_line(one_line(value))


def _md_line(text: str) -> str:
    out = []
    for ch in text:
        if ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        else:
            out.append(ch)
    return "".join(out)


def md_code(value: Any) -> str:
    """`value` as inline code (`` `...` ``) on one line. Backticks are replaced by ' since
    code spans have no escapes; the rest shows verbatim and is never parsed."""
    text = one_line(value).replace("`", "'")
    return f"`{text}`" if text else "` `"


def html(value: Any, *, multiline: bool = False) -> str:
    """`value` escaped for HTML text or a quoted attribute value (`& < > " '`). One line
    unless `multiline=True` (then newlines become <br>)."""
    if multiline:
        lines = _text(value).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return "<br>".join(_html.escape(one_line(line), quote=True) for line in lines)
    return _html.escape(one_line(value), quote=True)


def csv_cell(value: Any) -> Any:
    """A cell safe to open in a spreadsheet: a string starting with = + - @ tab or CR gets a
    leading ' so it is read as text, not a formula (OWASP CSV injection). Non-strings (numbers,
    None) are returned unchanged, so negative numbers stay numbers."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_PREFIXES):
        return "'" + value
    return value

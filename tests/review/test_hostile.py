"""A crafted run in the review page (AppTest): markup from files renders as text, and one bad
case (bad values, a uniform image, a huge-shape CAM, a decompression bomb) fails alone."""

from __future__ import annotations

import json
import re
import string
import struct
import zlib
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from medrec.review.server import PAGE

from .conftest import build_run

LINK = "[click](http://evil.example/x)"
IMAGE = "![t](http://evil.example/t.png)"
HTML = "<img src=x onerror=alert(1)>"
DIRECTIVE = ":red[pwned]"
PAYLOAD = f"{LINK} {IMAGE} {HTML} {DIRECTIVE}"


def _start(run_dir: Path, monkeypatch, **query) -> AppTest:
    monkeypatch.setenv("MEDREC_REVIEW_RUN", str(run_dir))
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def _markdown_strings(at: AppTest) -> list[str]:
    kinds = ("markdown", "caption", "error", "warning", "info", "toast", "expander")
    out = [str(getattr(e, "value", None) or getattr(e, "label", "")) for k in kinds for e in getattr(at, k)]
    out += [str(e.value) for e in at.sidebar.markdown] + [str(e.value) for e in at.sidebar.caption]
    return out


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _shown(markup: str) -> tuple[str, list]:
    """(text a CommonMark renderer shows, the link/image/raw-HTML tags Python-Markdown makes)."""
    import markdown

    parser = _Tags()
    parser.feed(markdown.markdown(markup))
    bad = [(t, a) for t, a in parser.tags if t in ("a", "img", "script") or "onerror" in a]
    text = unescape(re.sub(rf"\\([{re.escape(string.punctuation)}])", r"\1", markup))
    return text, bad


def _assert_all_text(at: AppTest, needle: str) -> None:
    strings = _markdown_strings(at)
    assert any(needle in _shown(s)[0] for s in strings), f"{needle!r} not shown as text"
    for s in strings:
        text, bad = _shown(s)
        assert not bad, (s, bad)
        # Streamlit directives (:red[...]) are not parsed inside code spans; elsewhere, escaped.
        assert ":red[" not in re.sub(r"`[^`]*`", "", s), s


def test_markup_in_run_files_renders_as_text(tmp_path: Path, monkeypatch):
    evil_id = f"img\n# {PAYLOAD}"
    run = build_run(tmp_path, extra_rows=[{"path": str(tmp_path / "data" / "img0.png"), "image_id": evil_id,
                                           "patient_id": "p1", "fold": 0, "repeat": 0, "label": 1, "score": 0.9}])
    info = json.loads((run / "run.json").read_text())
    info["name"] = f"run {PAYLOAD}"
    info["class_names"] = ["normal", f"pneu {PAYLOAD}"]
    (run / "run.json").write_text(json.dumps(info))
    at = _start(run, monkeypatch, case=evil_id)
    header = next(m.value for m in at.markdown if m.value.startswith("### Case "))
    assert "\n" not in header and "# [click]" in header  # the id: one line, inside a code span
    assert _shown(header)[1] == []
    _assert_all_text(at, f"run {LINK}")  # sidebar title
    _assert_all_text(at, f"pneu {LINK}")  # the decision badge
    for s in _markdown_strings(at):  # outside code spans, every link bracket is escaped
        assert "](http://evil" not in re.sub(r"`[^`]*`", "", s)


def test_markup_in_task_and_column_names_renders_as_text(tmp_path: Path, monkeypatch):
    run = build_run(tmp_path)
    info = json.loads((run / "run.json").read_text())
    info["task"] = f"binary {PAYLOAD}"
    (run / "run.json").write_text(json.dumps(info))
    at = _start(run, monkeypatch)
    assert len(at.error) == 1 and not at.image
    _assert_all_text(at, f"binary {LINK}")  # the error quotes the task, as text

    info["task"] = "binary"
    (run / "run.json").write_text(json.dumps(info))
    table = pd.read_csv(run / "oof_predictions.csv").rename(columns={"path": f"file {PAYLOAD}"})
    table.to_csv(run / "oof_predictions.csv", index=False)
    at = _start(run, monkeypatch)
    assert len(at.error) == 1 and "no 'path' column" in at.error[0].value.replace("\\", "")
    _assert_all_text(at, f"file {LINK}")


# ---------------------------------------------------------------- one case fails, the page does not


def _bomb_png(path: Path, side: int = 60_000) -> None:
    """A 60 000 x 60 000 PNG header (3.6 gigapixels) with a few bytes of data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _huge_cam(path: Path) -> None:
    """A .npy whose header declares 100 x 100 000 x 100 000 float32 (4 TB) over 16 bytes of data."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (100, 100_000, 100_000)}
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 16)


ROWS = [  # image_id, file, score, label, slice
    ("good_first", "img0.png", 0.9, 1, ""),
    ("bad_score", "img0.png", "abc", 1, ""),
    ("bad_label", "img0.png", 0.8, 2, ""),
    ("bad_slice", "img0.png", 0.7, 1, "inf"),
    ("uniform", "uniform.png", 0.6, 0, ""),
    ("huge_cam", "img1.png", 0.5, 0, ""),
    ("bomb", "bomb.png", 0.4, 1, ""),
    ("good_last", "img3.png", 0.3, 0, ""),
]


@pytest.fixture
def hostile_run(tmp_path: Path) -> Path:
    run = build_run(tmp_path)
    data = tmp_path / "data"
    Image.fromarray(np.full((48, 40), 128, np.uint8)).save(data / "uniform.png")
    _bomb_png(data / "bomb.png")
    _huge_cam(run / "predictions" / "cams" / "huge_cam.npy")
    rows = [{"path": str(data / f), "image_id": i, "patient_id": f"p{k}", "fold": 0, "label": lab, "score": s,
             "slice": sl} for k, (i, f, s, lab, sl) in enumerate(ROWS)]
    pd.DataFrame(rows).to_csv(run / "oof_predictions.csv", index=False)
    return run


def _case(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("### Case ")).split("`")[1]


def test_bad_rows_are_listed_once_and_each_fails_alone(hostile_run: Path, monkeypatch):
    at = _start(hostile_run, monkeypatch, case="good_first")
    listing = [e for e in at.expander if "have bad values" in e.label]
    assert len(listing) == 1
    text = " ".join(m.value for m in listing[0].markdown).replace("\\", "")
    assert "bad_score" in text and "score 'abc' is not a number in [0, 1]" in text
    assert "label '2'" in text and "slice 'inf'" in text and "good_first" not in text
    for bad, reason in (("bad_score", "score 'abc'"), ("bad_label", "label '2'"), ("bad_slice", "slice 'inf'")):
        at = _start(hostile_run, monkeypatch, case=bad)
        assert _case(at) == bad and not at.image
        assert len(at.error) == 1 and reason in at.error[0].value.replace("\\", "")


def test_uniform_image_and_bad_cam_show_the_image_with_a_note(hostile_run: Path, monkeypatch):
    at = _start(hostile_run, monkeypatch, case="uniform")
    assert len(at.image) == 1 and not at.error
    assert any("values 128 to 128" in c.value for c in at.caption)
    assert any("Every pixel" in i.value for i in at.info)
    at = _start(hostile_run, monkeypatch, case="huge_cam")  # the next case is the bomb: prefetched
    assert len(at.image) == 1 and not at.error
    warning = " ".join(w.value for w in at.warning).replace("\\", "")
    assert "Grad-CAM map not shown" in warning and "(100, 100000, 100000)" in warning


def test_a_bomb_as_the_next_case_fails_alone(hostile_run: Path, monkeypatch):
    at = _start(hostile_run, monkeypatch, case="huge_cam")
    assert _case(at) == "huge_cam" and len(at.image) == 1  # its prefetch of the bomb was refused quietly
    at.button(key="next").click().run()
    assert not at.exception and _case(at) == "bomb"
    assert len(at.error) == 1 and not at.image
    assert "image" in at.error[0].value and "Traceback" not in at.error[0].value
    at.button(key="next").click().run()
    assert not at.exception and _case(at) == "good_last"
    assert len(at.image) == 1 and not at.error

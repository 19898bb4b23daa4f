"""Clinician review dashboard for a medrec run: page through predictions, record verdicts.

    python -m medrec.review RUN_DIR            (binds 127.0.0.1, prints the URL)
    streamlit run apps/review.py -- --run RUN_DIR [--predictions FILE]

The run folder is read through medrec.review (predictions, images, CAMs); verdicts go to
RUN/review.sqlite. No training or inference happens here. Keyboard: J next, K previous,
A agree, D disagree, U unsure (ignored while typing in a text field).

A case can fail, the page cannot: anything that goes wrong reading, decoding or drawing one
case is shown as that case's error panel (the full traceback goes to the server log only).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from medrec.errors import MedrecError
from medrec.review import cache, gate
from medrec.review import navigation as N
from medrec.review.agreement_tab import agreement_tab
from medrec.review.cases import Run
from medrec.review.paths import case_path
from medrec.review.verdicts import verdict_panel
from medrec.review.viewer import facts, viewer
from medrec.safetext import md, one_line

log = logging.getLogger(__name__)


def _args() -> argparse.Namespace:
    """--run/--predictions after `--` on the streamlit command line, else the environment
    (MEDREC_REVIEW_RUN, MEDREC_REVIEW_PREDICTIONS; used by python -m medrec.review and tests)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--run")
    parser.add_argument("--predictions")
    args, _ = parser.parse_known_args(sys.argv[1:])
    args.run = args.run or os.environ.get("MEDREC_REVIEW_RUN")
    args.predictions = args.predictions or os.environ.get("MEDREC_REVIEW_PREDICTIONS") or None
    return args


def problem_text(exc: BaseException) -> str:
    """A short, one-line reason for a case's error panel (Markdown-escaped)."""
    if isinstance(exc, (MedrecError, OSError, ValueError)):
        return md(one_line(exc, 300))
    return md(f"{type(exc).__name__}: {one_line(exc, 200)}")


def guarded(what: str, fn, *args):
    """Run one case's part of the page; on any error show an error panel instead (and log it)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - one bad case must not take the page down
        log.warning("review: %s failed: %s", what, one_line(exc, 300), exc_info=not isinstance(exc, MedrecError))
        st.error(f"Cannot show this case's {what}: {problem_text(exc)}", icon=":material/error:")
        return None


def _flash() -> None:
    msg = st.session_state.pop("flash", None)
    if msg:
        kind, text = msg
        st.toast(md(text), icon=":material/check:" if kind == "ok" else ":material/warning:")
        if kind != "ok":
            st.warning(md(text))


def _open() -> tuple[Run, object]:
    args = _args()
    if not args.run:
        st.error(
            "No run folder given. Start with `python -m medrec.review RUN_DIR` "
            "or `streamlit run apps/review.py -- --run RUN_DIR`."
        )
        st.stop()
    try:
        run = cache.run(str(Path(args.run).resolve()), args.predictions)
        return run, cache.store(str(run.run_dir / "review.sqlite"))
    except Exception as exc:  # noqa: BLE001 - the reason, never a traceback
        log.warning("review: cannot open %s: %s", args.run, exc, exc_info=not isinstance(exc, MedrecError))
        st.error(f"Cannot open the run: {problem_text(exc)}")
        st.stop()


def _run_notes(run: Run) -> None:
    """Rows of the predictions file that cannot be reviewed, and refused run settings: once."""
    for note in run.notes:
        st.warning(md(note))
    if run.bad_rows:
        with st.expander(f":orange[{len(run.bad_rows)} rows of {md(run.predictions_path.name)} have bad values]"):
            st.markdown("  \n".join(md(r) for r in run.bad_rows[:200]))


def main() -> None:
    st.set_page_config(page_title="medrec review", page_icon=":material/radiology:", layout="wide")
    # Less empty space above the case header, so image and verdict buttons share one screen.
    st.html("<style>.stMainBlockContainer, .block-container {padding-top: 3.5rem;}</style>")
    gate.check_access()
    run, store = _open()
    if "case_id" not in st.session_state and st.query_params.get("case"):
        st.session_state["case_id"] = st.query_params["case"]
    state = N.sidebar(run, store)
    target, shown = state["target"], state["shown"]
    _flash()
    review_tab, list_tab, summary_tab = st.tabs(list(N.TABS), key=N.TAB_KEY, on_change="rerun")
    if list_tab.open:
        with list_tab:
            N.case_list(run, shown, state["reviewed"])
    if summary_tab.open:
        with summary_tab:
            agreement_tab(run, store, target)
    if review_tab.open:
        with review_tab:
            _run_notes(run)
            _review(run, store, shown, target)


def _review(run: Run, store, shown: pd.DataFrame, target: str) -> None:
    current = N.current(shown)
    if current is None:
        st.info("No cases match this filter. Choose another one in the sidebar.")
        return
    pos, row = current
    N.header(run, pos, len(shown), row, target)
    N.nav(pos, len(shown))
    if row["problem"]:
        st.error(f"This row of the predictions file cannot be reviewed: {md(row['problem'])}", icon=":material/error:")
    else:
        left, middle, right = st.columns([5, 2, 3.3], gap="medium")
        with left:
            img = guarded("image", viewer, run, row, target, middle)
            guarded("details", facts, run, row, target, img)
        with right:
            guarded("verdict panel", verdict_panel, run, store, row, target)
    _prefetch(run, shown, pos)


def _prefetch(run: Run, shown: pd.DataFrame, pos: int) -> None:
    """Warm the cache with the next case's image after the page is drawn, so Next is instant.
    Under the same guard as the case itself: a bad next case shows its error when opened."""
    if pos + 1 >= len(shown) or shown.iloc[pos + 1]["problem"]:
        return
    try:
        nxt = shown.iloc[pos + 1]
        cache.display_for(run, case_path(run, nxt["path"]), nxt)
    except Exception as exc:  # noqa: BLE001
        log.info("review: prefetch of the next case failed (shown when it is opened): %s", one_line(exc, 200))

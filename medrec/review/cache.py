"""Streamlit caches of the review app: the opened run, the verdict store, display images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from medrec import runfolder as rf
from medrec.review import display as D
from medrec.review.cases import Run, load_run
from medrec.review.paths import file_stamp
from medrec.review.store import VerdictStore

MAX_SIDE = D.DEFAULT_MAX_SIDE


@st.cache_data(show_spinner=False, max_entries=4)
def _load_run(run_dir: str, predictions: str | None, stamp: tuple) -> Run:
    return load_run(run_dir, predictions)


def run(run_dir: str, predictions: str | None) -> Run:
    """The run, read again when run.json, config.yaml or the predictions file change."""
    files = [
        Path(run_dir) / rf.RUN_JSON,
        rf.config_path(run_dir),
        Path(predictions) if predictions else rf.oof_path(run_dir),
    ]
    stamp = tuple((str(f), f.stat().st_mtime_ns) for f in files if f.exists())
    return _load_run(run_dir, predictions, stamp)


@st.cache_resource(show_spinner=False)
def store(path: str) -> VerdictStore:
    return VerdictStore(path)


@st.cache_data(show_spinner=False, max_entries=48)
def _display(
    path: str, mtime_ns: int, size: int, max_side: int, slice_index: int | None, frame: int | None
) -> D.DisplayImage:
    # Keyed by path + mtime + size: a rewritten file is read again, an unchanged one never is;
    # and by slice: the slices of one volume share a path.
    return D.prepare_display(path, max_side, slice_index=slice_index, frame=frame)


def display_for(run: Run, path: Path, row: pd.Series, max_side: int = MAX_SIDE) -> D.DisplayImage:
    """The display image of a case whose file `path` is already resolved (its slice of a volume)."""
    return _display(*file_stamp(path), max_side, D.case_slice(run, row.get("slice")), D.case_frame(run))

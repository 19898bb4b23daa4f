"""The Agreement tab: who reviewed how much, where reviewers disagree, agreement, exports."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from medrec.review.cases import Run
from medrec.review.navigation import open_case
from medrec.review.store import VerdictStore, agreement, disagreements, progress
from medrec.safetext import md, md_code, one_line

SUMMARY_NAMES = {
    "agree_rate": "agree rate",
    "kappa_vs_model": "κ vs model",
    "reviewer_a": "reviewer A",
    "reviewer_b": "reviewer B",
    "n_shared": "cases shared",
    "n_labelled": "both labelled",
    "kappa": "Cohen's κ",
}
MAX_DISAGREEMENTS_SHOWN = 100


def agreement_tab(run: Run, store: VerdictStore, target: str) -> None:
    latest = store.latest()
    st.markdown(f"**{store.count()} verdicts** ({len(latest)} current) in {md_code(store.path.name)}")
    _progress(run, latest, target)
    _disagreements(run, latest, target)
    summary = agreement(latest)
    for key, title, empty in (
        ("model_vs_reviewer", "Model vs reviewers", "No verdicts yet."),
        ("reviewer_vs_reviewer", "Reviewer vs reviewer (cases both reviewed; Cohen's κ)",
         "Needs two reviewers on one case."),
    ):
        st.markdown(f"##### {title}")
        if summary[key]:
            st.dataframe(pd.DataFrame(summary[key]).rename(columns=SUMMARY_NAMES), hide_index=True, width="stretch")
        else:
            st.caption(empty)
    _downloads(run, store)


def _progress(run: Run, latest, target: str) -> None:
    st.markdown("##### Progress per reviewer" + (f" · {md(target)}" if len(run.targets) > 1 else ""))
    rows = progress(latest, run.target_key(target), len(run.cases))
    if not rows:
        st.caption("No verdicts yet.")
        return
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        key="progress_table",
        column_config={
            "reviewed": st.column_config.NumberColumn(f"reviewed (of {len(run.cases)})"),
            "share": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
        },
    )


def _disagreements(run: Run, latest, target: str) -> None:
    """One row per case where reviewers assert different labels, with a button that opens it."""
    tkey = run.target_key(target)
    known = set(run.cases["image_id"])
    rows = [d for d in disagreements(latest) if d["target"] == tkey and d["image_id"] in known]
    st.markdown(f"##### Cases where reviewers disagree ({len(rows)})")
    if not rows:
        st.caption("None: no case has two reviewers asserting different labels.")
        return
    for i, d in enumerate(rows[:MAX_DISAGREEMENTS_SHOWN]):
        votes = " · ".join(
            f"**{md(r)}** {md(verdict)}" + (f" → {md(label)}" if label is not None else "")
            for r, (verdict, label) in d["votes"].items()
        )
        left, right = st.columns([1, 5], vertical_alignment="center")
        left.button(
            "Open", key=f"open_disagreement_{i}", on_click=open_case, args=(d["image_id"],),
            icon=":material/open_in_new:", width="stretch",
        )
        right.markdown(f"{md_code(d['image_id'])} · {votes}")
    if len(rows) > MAX_DISAGREEMENTS_SHOWN:
        st.caption(f"… and {len(rows) - MAX_DISAGREEMENTS_SHOWN} more (in the verdict export).")


def _downloads(run: Run, store: VerdictStore) -> None:
    c1, c2, _ = st.columns([1, 1, 2])
    c1.download_button(
        "Download all verdicts (CSV)",
        store.export_csv(),
        file_name=f"{one_line(run.name, 80)}_verdicts.csv",
        mime="text/csv",
        key="dl_all",
    )
    c2.download_button(
        "Download latest per reviewer (CSV)",
        store.export_csv(latest_only=True),
        file_name=f"{one_line(run.name, 80)}_verdicts_latest.csv",
        mime="text/csv",
        key="dl_latest",
    )

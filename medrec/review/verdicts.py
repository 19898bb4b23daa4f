"""The verdict column of the review page: record a verdict, show this case's verdicts."""

from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from medrec.errors import MedrecError
from medrec.review import labels as L
from medrec.review.cases import Run
from medrec.review.navigation import go
from medrec.review.store import Verdict, VerdictStore
from medrec.safetext import md

log = logging.getLogger(__name__)

VERDICT_COLOURS = {"agree": "green", "disagree": "red", "unsure": "orange"}
SHORTCUTS = {"agree": "A", "disagree": "D", "unsure": "U"}


def save(verdict: str, store: VerdictStore, record: dict) -> None:
    """Button callback: store the verdict, flash the outcome, advance if asked to."""
    key = record["widget_key"]
    corrected = st.session_state.get(f"corr_{key}")
    reviewer = (st.session_state.get("reviewer") or "").strip()
    try:
        saved = store.add(
            Verdict(
                image_id=record["image_id"],
                target=record["target"],
                reviewer=reviewer,
                verdict=verdict,
                corrected_label=None if corrected in (None, "—") else record["label_values"][corrected],
                comment=(st.session_state.get(f"comment_{key}") or "").strip(),
                model_score=record["score"],
                model_decision=record["decision"],
                truth=record["truth"],
            )
        )
    except MedrecError as exc:
        st.session_state["flash"] = ("error", str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - a failed save is reported, the page stays up
        log.exception("saving a verdict failed")
        st.session_state["flash"] = ("error", f"the verdict was not saved ({type(exc).__name__})")
        return
    st.session_state["flash"] = ("ok", f"Saved “{saved.verdict}” for {saved.image_id}")
    if st.session_state.get("advance", True):
        go(+1)


def verdict_panel(run: Run, store: VerdictStore, row: pd.Series, target: str) -> None:
    tkey = run.target_key(target)
    label_values = L.verdict_choices(run)
    widget_key = f"{row['image_id']}_{tkey}"
    record = {
        "image_id": str(row["image_id"]),
        "target": tkey,
        "score": float(row["score"]),
        "decision": L.decision_value(row),
        "truth": L.truth_value(run, row),
        "label_values": label_values,
        "widget_key": widget_key,
    }
    st.markdown("#### Your verdict")
    st.selectbox("Corrected label (optional)", ["—", *label_values], key=f"corr_{widget_key}")
    st.text_area("Comment", key=f"comment_{widget_key}", height=80, placeholder="optional")
    for col, verdict in zip(st.columns(3), ("agree", "disagree", "unsure")):
        col.button(
            verdict.capitalize(),
            key=f"v_{verdict}",
            on_click=save,
            args=(verdict, store, record),
            shortcut=SHORTCUTS[verdict],
            width="stretch",
        )
    if not (st.session_state.get("reviewer") or "").strip():
        st.caption("Enter your name in the sidebar to record verdicts.")
    names = {value: text.rsplit(" (", 1)[0] for text, value in label_values.items()}
    case_verdicts(store, record["image_id"], tkey, names)


def case_verdicts(store: VerdictStore, image_id: str, tkey: str, names: dict[str, str]) -> None:
    """Each reviewer's latest verdict on the case, then the full history if there is more."""
    latest = store.latest(image_id, tkey)
    st.markdown("#### Verdicts on this case")
    if not latest:
        st.caption("No verdicts yet.")
        return
    for v in latest:
        colour = VERDICT_COLOURS.get(v.verdict, "gray")
        fixed = names.get(v.corrected_label, v.corrected_label)
        corrected = f" · corrected to **{md(fixed)}**" if fixed else ""
        comment = f"  \n“{md(v.comment, multiline=True)}”" if v.comment else ""
        when = md(v.created_utc[:16].replace("T", " "))
        st.markdown(f"**{md(v.reviewer)}** · :{colour}-badge[{md(v.verdict)}]{corrected} · :gray[{when} UTC]{comment}")
    history = store.history(image_id, tkey)
    if len(history) > len(latest):
        with st.expander(f"History ({len(history)} entries)"):
            rows = [
                {
                    "when (UTC)": md(v.created_utc[:19].replace("T", " ")),
                    "reviewer": md(v.reviewer),
                    "verdict": md(v.verdict),
                    "corrected": md(v.corrected_label or ""),
                    "comment": md(v.comment),
                }
                for v in history
            ]
            st.table(pd.DataFrame(rows), hide_index=True, border="horizontal")

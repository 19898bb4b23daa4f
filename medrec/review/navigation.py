"""Finding cases on the review page: sidebar filters, case header, paging, the case list."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from medrec.review import cases as C
from medrec.review import labels as L
from medrec.review.store import VerdictStore
from medrec.safetext import md, md_code

SHORTCUTS = {"next": "J", "prev": "K"}
TABS = ("Review", "Case list", "Agreement & export")
TAB_KEY = "tab"


def go(step: int) -> None:
    ids = st.session_state.get("case_ids", [])
    if not ids:
        return
    cur = st.session_state.get("case_id")
    pos = ids.index(cur) if cur in ids else 0
    st.session_state["case_id"] = ids[max(0, min(len(ids) - 1, pos + step))]


def open_case(image_id: str) -> None:
    """Callback: show `image_id` in the Review tab (clearing filters that would hide it)."""
    if image_id not in st.session_state.get("case_ids", []):
        st.session_state["filter"] = "all"
        st.session_state["folds"] = []
    st.session_state["case_id"] = image_id
    st.session_state[TAB_KEY] = TABS[0]


def _jump() -> None:
    ids = st.session_state.get("case_ids", [])
    n = int(st.session_state.get("jump", 1))
    if ids:
        st.session_state["case_id"] = ids[max(0, min(len(ids), n) - 1)]


def _pick_from_table() -> None:
    rows = st.session_state["case_table"].selection.rows
    ids = st.session_state.get("case_ids", [])
    if rows and rows[0] < len(ids):
        st.session_state["case_id"] = ids[rows[0]]


def sidebar(run: C.Run, store: VerdictStore) -> dict:
    """Reviewer, label, filters and progress; returns the target and the cases shown."""
    sb = st.sidebar
    sb.markdown(f"## :material/radiology: {md(run.name)}")
    sb.caption(md(f"{run.task} · {len(run.cases)} images · threshold: {run.threshold_source}"))
    sb.text_input("Reviewer", key="reviewer", placeholder="your name or initials", bind="query-params")
    target = run.targets[0]
    if len(run.targets) > 1:
        kind = "Label" if run.task == "multilabel" else "Class (one vs rest)"
        target = sb.selectbox(kind, run.targets, key="target", bind="query-params")
    reviewer = (st.session_state.get("reviewer") or "").strip()
    reviewed = store.reviewed_ids(reviewer or None, run.target_key(target))
    cases = C.view(run, target)

    folds = sorted(int(f) for f in cases["fold"].dropna().unique())
    band = float(st.session_state.get("band", 0.1))
    counts = {k: len(C.select(cases, kind=k, band=band, reviewed=reviewed)) for k in C.FILTERS}
    kind = sb.radio(
        "Show",
        list(C.FILTERS),
        key="filter",
        format_func=lambda k: f"{C.FILTERS[k]} ({counts[k]})",
        bind="query-params",
    )
    sb.slider("Uncertain if |score − threshold| ≤", 0.01, 0.5, 0.1, 0.01, key="band")
    chosen_folds = sb.multiselect("Folds", folds, key="folds", placeholder="all folds") if folds else []
    sort = sb.selectbox("Sort", list(C.SORTS), key="sort", format_func=C.SORTS.get, bind="query-params")
    shown = C.select(cases, kind=kind, band=band, folds=chosen_folds, reviewed=reviewed, sort=sort)

    done = len(set(cases["image_id"]) & reviewed)
    who = f" by {md(reviewer)}" if reviewer else ""
    sb.markdown(f"**{done} of {len(cases)} reviewed{who}**")
    sb.progress(done / len(cases) if len(cases) else 0.0)
    sb.checkbox("Advance to the next case after saving", value=True, key="advance")
    sb.caption("Keys: **J** next · **K** previous · **A** agree · **D** disagree · **U** unsure")
    return {"target": target, "cases": cases, "shown": shown, "reviewed": reviewed, "kind": kind}


def current(shown: pd.DataFrame) -> tuple[int, pd.Series] | None:
    """(position, row) of the case shown now; the first one when none is chosen."""
    ids = shown["image_id"].tolist()
    st.session_state["case_ids"] = ids
    if not ids:
        return None
    if st.session_state.get("case_id") not in ids:
        st.session_state["case_id"] = ids[0]
    pos = ids.index(st.session_state["case_id"])
    st.query_params["case"] = st.session_state["case_id"]
    return pos, shown.iloc[pos]


def header(run: C.Run, pos: int, n: int, row: pd.Series, target: str) -> None:
    label = f" · {md(target)}" if len(run.targets) > 1 else ""
    st.markdown(f"### Case {pos + 1} of {n} · {md_code(row['image_id'])}{label}")
    if row["problem"]:
        return
    thr = run.thresholds[target]
    thr_text = "argmax" if pd.isna(thr) else f"{thr:.3f}"
    if run.task == "multiclass":
        decision, truth, result = L.multiclass_outcome(run, row)
        outcome, colour = result.split("|")
    else:
        outcome, colour = L.outcome(row["truth"], row["pred"])
        decision, truth = L.label_text(run, row["pred"]), L.label_text(run, row["truth"])
    st.markdown(
        f"Score **{row['score']:.3f}** (threshold {thr_text}) &nbsp; "
        f"Decision :blue-badge[{md(decision)}] &nbsp; Truth :{colour}-badge[{md(truth)}] &nbsp; :{colour}[{outcome}]"
    )


def nav(pos: int, n: int) -> None:
    c1, c2, c3, _ = st.columns([1, 1, 1.2, 3], vertical_alignment="bottom")
    c1.button("Previous", key="prev", icon=":material/arrow_back:", on_click=go, args=(-1,),
              disabled=pos == 0, shortcut=SHORTCUTS["prev"], width="stretch")
    c2.button("Next", key="next", icon=":material/arrow_forward:", icon_position="right", on_click=go, args=(+1,),
              disabled=pos >= n - 1, shortcut=SHORTCUTS["next"], width="stretch")
    st.session_state["jump"] = pos + 1
    c3.number_input(f"Go to case (1–{n})", 1, max(n, 1), key="jump", on_change=_jump)


def case_list(run: C.Run, shown: pd.DataFrame, reviewed: set[str]) -> None:
    if shown.empty:
        st.info("No cases match the filter.")
        return
    if "pred_class" in shown:
        decisions = shown["pred_class"].tolist()
    else:
        decisions = [L.label_text(run, p) for p in shown["pred"]]
    # st.dataframe shows cell text as text (no Markdown), so ids are shown as they are.
    table = pd.DataFrame(
        {
            "case": range(1, len(shown) + 1),
            "image": shown["image_id"].to_numpy(),
            "fold": shown["fold"].to_numpy(),
            "score": shown["score"].round(4).to_numpy(),
            "decision": decisions,
            "truth": [L.label_text(run, t) for t in shown["truth"]],
            "margin": shown["margin"].round(4).to_numpy(),
            "spread": shown["spread"].round(4).to_numpy(),
            "reviewed": shown["image_id"].isin(reviewed).to_numpy(),
            "problem": shown["problem"].to_numpy(),
        }
    )
    table = table.drop(columns=[c for c in ("fold", "spread") if table[c].isna().all()])
    if not table["problem"].astype(bool).any():
        table = table.drop(columns="problem")
    st.caption("Click a row to open that case.")
    st.dataframe(table, hide_index=True, width="stretch", key="case_table", on_select=_pick_from_table,
                 selection_mode="single-row")

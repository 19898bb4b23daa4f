"""Clinician review dashboard for a medrec run: page through predictions, record verdicts.

    streamlit run apps/review.py -- --run RUN_DIR [--predictions FILE]
    python -m medrec.review RUN_DIR            (binds 127.0.0.1, prints the URL)

The run folder is read through medrec.review (predictions, images, CAMs); verdicts go to
RUN/review.sqlite. No training or inference happens here. Keyboard: J next, K previous,
A agree, D disagree, U unsure (ignored while typing in a text field).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from medrec.errors import MedrecError
from medrec.review import cases as C
from medrec.review.store import Verdict, VerdictStore, agreement

MAX_SIDE = C.DEFAULT_MAX_SIDE
ZOOM_MAX_SIDE = 4096
IMAGE_MAX_HEIGHT = 540  # px
SUMMARY_NAMES = {
    "agree_rate": "agree rate",
    "kappa_vs_model": "κ vs model",
    "reviewer_a": "reviewer A",
    "reviewer_b": "reviewer B",
    "n_shared": "cases shared",
    "n_labelled": "both labelled",
    "kappa": "Cohen's κ",
}
VERDICT_COLOURS = {"agree": "green", "disagree": "red", "unsure": "orange"}
SHORTCUTS = {"next": "J", "prev": "K", "agree": "A", "disagree": "D", "unsure": "U"}


# ---------------------------------------------------------------- inputs and caches


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


@st.cache_data(show_spinner=False, max_entries=4)
def _load_run(run_dir: str, predictions: str | None, stamp: tuple) -> C.Run:
    return C.load_run(run_dir, predictions)


@st.cache_resource(show_spinner=False)
def _store(path: str) -> VerdictStore:
    return VerdictStore(path)


@st.cache_data(show_spinner=False, max_entries=48)
def _display(
    path: str, mtime_ns: int, size: int, max_side: int, slice_index: int | None, frame: int | None
) -> C.DisplayImage:
    # Keyed by path + mtime + size: a rewritten file is read again, an unchanged one never is;
    # and by slice: the slices of one volume share a path.
    return C.prepare_display(path, max_side, slice_index=slice_index, frame=frame)


def _display_for(run: C.Run, path: Path, row: pd.Series, max_side: int) -> C.DisplayImage:
    """The display image of a case whose file `path` is already resolved (its slice of a volume)."""
    return _display(*C.file_stamp(path), max_side, C.case_slice(run, row.get("slice")), C.case_frame(run))


def _stamp(run_dir: str, predictions: str | None) -> tuple:
    files = [
        Path(run_dir) / "run.json",
        Path(run_dir) / "config.yaml",
        Path(predictions) if predictions else Path(run_dir) / C.OOF_CSV,
    ]
    return tuple((str(f), f.stat().st_mtime_ns) for f in files if f.exists())


# ---------------------------------------------------------------- labels and formatting

_MD_SPECIAL = set("\\`*_{}[]()#+-.!|<>~:$")


def _md(text) -> str:
    """Escape text from files or reviewers for st.markdown / st.table, so a comment or a DICOM
    string cannot add links, images (external requests) or Streamlit directives."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(text)).replace("\n", "  \n")


def _label_text(run: C.Run, value, target: str) -> str:
    """'positive' / 'negative' / a class name for a 0/1 truth or decision; 'unknown' if missing."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "unknown"
    if run.task == "multiclass":
        return str(value)
    names = run.class_names
    if run.task == "binary" and names and len(names) == 2:
        return names[int(value)]
    return "positive" if int(value) == 1 else "negative"


def _outcome(truth, pred) -> tuple[str, str]:
    if truth is None or pd.isna(truth):
        return "no ground truth", "gray"
    truth, pred = int(truth), int(pred)
    return {
        (1, 1): ("true positive", "green"),
        (0, 0): ("true negative", "green"),
        (0, 1): ("false positive", "red"),
        (1, 0): ("false negative", "red"),
    }[(truth, pred)]


def _decision_value(run: C.Run, row: pd.Series) -> str:
    return str(row["pred_class"]) if "pred_class" in row else str(int(row["pred"]))


def _truth_value(run: C.Run, row: pd.Series, target: str) -> str | None:
    if pd.isna(row["truth"]):
        return None
    if run.task == "multiclass":
        labels = {t: run.cases.loc[run.cases["image_id"] == row["image_id"], f"label_{t}"].iloc[0] for t in run.targets}
        hits = [t for t, v in labels.items() if v == 1]
        return hits[0] if hits else None
    return str(int(row["truth"]))


# ---------------------------------------------------------------- navigation callbacks


def _go(step: int) -> None:
    ids = st.session_state.get("case_ids", [])
    if not ids:
        return
    cur = st.session_state.get("case_id")
    pos = ids.index(cur) if cur in ids else 0
    st.session_state["case_id"] = ids[max(0, min(len(ids) - 1, pos + step))]


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


def _save(verdict: str, store: VerdictStore, record: dict) -> None:
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
    st.session_state["flash"] = ("ok", f"Saved “{saved.verdict}” for {_md(saved.image_id)}")
    if st.session_state.get("advance", True):
        _go(+1)


# ---------------------------------------------------------------- page sections


def _sidebar(run: C.Run, store: VerdictStore) -> dict:
    sb = st.sidebar
    sb.markdown(f"## :material/radiology: {_md(run.name)}")
    sb.caption(f"{run.task} · {len(run.cases)} images · threshold: {run.threshold_source}")
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
    who = f" by {_md(reviewer)}" if reviewer else ""
    sb.markdown(f"**{done} of {len(cases)} reviewed{who}**")
    sb.progress(done / len(cases) if len(cases) else 0.0)
    sb.checkbox("Advance to the next case after saving", value=True, key="advance")
    sb.caption("Keys: **J** next · **K** previous · **A** agree · **D** disagree · **U** unsure")
    return {"target": target, "cases": cases, "shown": shown, "reviewed": reviewed, "kind": kind}


def _current(shown: pd.DataFrame) -> tuple[int, pd.Series] | None:
    ids = shown["image_id"].tolist()
    st.session_state["case_ids"] = ids
    if not ids:
        return None
    if st.session_state.get("case_id") not in ids:
        st.session_state["case_id"] = ids[0]
    pos = ids.index(st.session_state["case_id"])
    st.query_params["case"] = st.session_state["case_id"]
    return pos, shown.iloc[pos]


def _header(run: C.Run, pos: int, n: int, row: pd.Series, target: str) -> None:
    thr = run.thresholds[target]
    thr_text = "argmax" if pd.isna(thr) else f"{thr:.3f}"
    if run.task == "multiclass":
        decision, truth = str(row["pred_class"]), _truth_value(run, row, target)
        outcome, colour = (
            ("no ground truth", "gray")
            if truth is None
            else (("correct", "green") if truth == decision else ("misclassified", "red"))
        )
        truth = truth or "unknown"
    else:
        outcome, colour = _outcome(row["truth"], row["pred"])
        decision, truth = _label_text(run, row["pred"], target), _label_text(run, row["truth"], target)
    label = f" · {target}" if len(run.targets) > 1 else ""
    st.markdown(f"### Case {pos + 1} of {n} · `{str(row['image_id']).replace('`', '')}`{_md(label)}")
    st.markdown(
        f"Score **{row['score']:.3f}** (threshold {thr_text}) &nbsp; "
        f"Decision :blue-badge[{_md(decision)}] &nbsp; Truth :{colour}-badge[{_md(truth)}] &nbsp; :{colour}[{outcome}]"
    )


def _nav(pos: int, n: int) -> None:
    c1, c2, c3, _ = st.columns([1, 1, 1.2, 3], vertical_alignment="bottom")
    c1.button(
        "Previous",
        key="prev",
        icon=":material/arrow_back:",
        on_click=_go,
        args=(-1,),
        disabled=pos == 0,
        shortcut=SHORTCUTS["prev"],
        width="stretch",
    )
    c2.button(
        "Next",
        key="next",
        icon=":material/arrow_forward:",
        icon_position="right",
        on_click=_go,
        args=(+1,),
        disabled=pos >= n - 1,
        shortcut=SHORTCUTS["next"],
        width="stretch",
    )
    st.session_state["jump"] = pos + 1
    c3.number_input(f"Go to case (1–{n})", 1, max(n, 1), key="jump", on_change=_jump)


def _viewer(run: C.Run, row: pd.Series, target: str, controls) -> C.DisplayImage | None:
    """The image (in the current container) with its display controls in `controls`."""
    try:
        path = C.case_path(run, row["path"])
    except MedrecError as exc:
        st.error(f"Cannot show this case's image: {exc}")
        return None
    zoom = float(st.session_state.get("zoom", 1.0))
    try:
        img = _display_for(run, path, row, min(ZOOM_MAX_SIDE, int(MAX_SIDE * zoom)))
        cam = C.load_cam(run, str(row["image_id"]), target)
    except (MedrecError, OSError, ValueError) as exc:
        st.error(f"Cannot read this case's image: {exc}")
        return None
    with controls:
        center, width = _window_controls(img, str(row["image_id"]), C.run_windows(run))
        # A preference that holds across cases; cases without a map show the plain image.
        show_cam = st.toggle(
            "Grad-CAM overlay", value=True, key="cam_on", help="shown where medrec.predict saved a map"
        )
        opacity = st.slider(
            "CAM opacity", 0.0, 1.0, 0.45, 0.05, key="cam_opacity", disabled=cam is None or not show_cam
        )
        st.slider("Zoom", 1.0, 4.0, 1.0, 0.25, key="zoom", format="%.2f×")
        pan = (0.5, 0.5)
        if zoom > 1:
            pan = (
                st.slider("Pan vertical", 0.0, 1.0, 0.5, 0.01, key="pan_y"),
                st.slider("Pan horizontal", 0.0, 1.0, 0.5, 0.01, key="pan_x"),
            )
    rgb = C.compose(
        C.to_gray8(img.pixels, center, width),
        cam if show_cam else None,
        opacity=opacity,
        zoom=zoom,
        pan=pan,
    )
    # Fit the image to the column but keep it no taller than IMAGE_MAX_HEIGHT, so a tall
    # chest film and the verdict buttons fit on one screen.
    st.image(rgb, width=max(64, int(IMAGE_MAX_HEIGHT * rgb.shape[1] / rgb.shape[0])), output_format="PNG")
    h, w = img.native_shape
    note = "" if img.scale == 1 else f" · shown at {img.pixels.shape[1]}×{img.pixels.shape[0]}"
    cam_note = "" if cam is not None else " · no Grad-CAM map for this case"
    lo, hi = float(img.pixels.min()), float(img.pixels.max())
    where = C.slice_caption(img.meta, C.case_slice(run, row.get("slice")))
    where = f"{where} · " if where else ""
    st.caption(f"{where}{w}×{h} px{note} · values {lo:g} to {hi:g} · window C {center:g} / W {width:g}{cam_note}")
    return img


def _window_controls(
    img: C.DisplayImage, case_key: str, run_windows: dict[str, tuple[float, float]]
) -> tuple[float, float]:
    """Window preset and center/width sliders. A CT run's own windows (data.channels) come
    first and the first is the default, as the network saw the image through it; other runs
    default to "auto" (the file's window, else a percentile range)."""
    presets = dict(run_windows)
    presets["auto"] = C.auto_window(img.pixels, img.meta)
    fw = C.file_window(img.meta)
    if fw:
        presets["file window"] = fw
    known = set(run_windows.values())
    presets.update({k: v for k, v in C.window_presets().items() if v not in known})
    if st.session_state.get("preset") not in presets:
        st.session_state["preset"] = next(iter(presets))
    preset = st.selectbox("Window", list(presets), key="preset")
    c0, width0 = presets[preset]
    lo, hi = float(img.pixels.min()), float(img.pixels.max())
    span = max(hi - lo, 1.0)
    step = 1.0 if span > 50 else round(span / 500, 6) or 1e-3
    c_lo, c_hi = min(lo, c0), max(hi, c0)
    w_hi = max(2 * span, width0)
    # Slider keys include the case and preset: a new case or preset starts at its window,
    # a manual adjustment stays while the reviewer stays on that case and preset.
    center = st.slider("Center (level)", c_lo, c_hi, float(c0), step, key=f"wc_{case_key}_{preset}")
    width = st.slider("Width", step, w_hi, float(max(width0, step)), step, key=f"ww_{case_key}_{preset}")
    return float(center), float(width)


def _facts(run: C.Run, row: pd.Series, target: str, img: C.DisplayImage | None) -> None:
    facts = {"Score": f"{row['score']:.4f}", "Margin to threshold": f"{row['margin']:.4f}"}
    if not pd.isna(row["spread"]):
        facts["Spread across models"] = f"{row['spread']:.4f}"
    if not pd.isna(row["fold"]):
        facts["Fold"] = str(int(row["fold"]))
    if run.task == "multilabel":
        scores = run.cases.loc[row.name]
        facts["Other labels"] = ", ".join(f"{t} {scores[f'score_{t}']:.2f}" for t in run.targets if t != target)
    _pairs(facts)
    with st.expander("Image metadata (de-identified)", expanded=False):
        meta = C.safe_meta(img.meta) if img else {}
        if meta:
            _pairs(meta)
        else:
            st.caption("No metadata for this image.")


def _pairs(items: dict) -> None:
    """A two-column key/value table (escaped: values may come from files)."""
    table = pd.DataFrame([(_md(k), _md(v)) for k, v in items.items()], columns=["key", "value"])
    st.table(table, hide_index=True, hide_header=True, border="horizontal")


def _verdict_panel(run: C.Run, store: VerdictStore, row: pd.Series, target: str) -> None:
    tkey = run.target_key(target)
    widget_key = f"{row['image_id']}_{tkey}"
    if run.task == "multiclass":
        label_values = {t: t for t in run.targets}
    else:
        label_values = {f"{_label_text(run, v, target)} ({v})": str(v) for v in (0, 1)}
    record = {
        "image_id": str(row["image_id"]),
        "target": tkey,
        "score": float(row["score"]),
        "decision": _decision_value(run, row),
        "truth": _truth_value(run, row, target),
        "label_values": label_values,
        "widget_key": widget_key,
    }
    st.markdown("#### Your verdict")
    st.selectbox("Corrected label (optional)", ["—", *label_values], key=f"corr_{widget_key}")
    st.text_area("Comment", key=f"comment_{widget_key}", height=80, placeholder="optional")
    b1, b2, b3 = st.columns(3)
    for col, verdict in zip((b1, b2, b3), ("agree", "disagree", "unsure")):
        col.button(
            verdict.capitalize(),
            key=f"v_{verdict}",
            on_click=_save,
            args=(verdict, store, record),
            shortcut=SHORTCUTS[verdict],
            width="stretch",
        )
    if not (st.session_state.get("reviewer") or "").strip():
        st.caption("Enter your name in the sidebar to record verdicts.")
    latest = store.latest(record["image_id"], tkey)
    st.markdown("#### Verdicts on this case")
    if not latest:
        st.caption("No verdicts yet.")
        return
    names = {value: text.rsplit(" (", 1)[0] for text, value in label_values.items()}
    for v in latest:
        colour = VERDICT_COLOURS[v.verdict]
        fixed = names.get(v.corrected_label, v.corrected_label)
        corrected = f" · corrected to **{_md(fixed)}**" if fixed else ""
        comment = f"  \n“{_md(v.comment)}”" if v.comment else ""
        when = v.created_utc[:16].replace("T", " ")
        st.markdown(f"**{_md(v.reviewer)}** · :{colour}-badge[{v.verdict}]{corrected} · :gray[{when} UTC]{comment}")
    history = store.history(record["image_id"], tkey)
    if len(history) > len(latest):
        with st.expander(f"History ({len(history)} entries)"):
            rows = [
                {
                    "when (UTC)": v.created_utc[:19].replace("T", " "),
                    "reviewer": _md(v.reviewer),
                    "verdict": v.verdict,
                    "corrected": _md(v.corrected_label or ""),
                    "comment": _md(v.comment),
                }
                for v in history
            ]
            st.table(pd.DataFrame(rows), hide_index=True, border="horizontal")


def _case_list(run: C.Run, shown: pd.DataFrame, reviewed: set[str], target: str) -> None:
    if shown.empty:
        st.info("No cases match the filter.")
        return
    if "pred_class" in shown:
        decisions = shown["pred_class"].tolist()
    else:
        decisions = [_label_text(run, p, target) for p in shown["pred"]]
    table = pd.DataFrame(
        {
            "case": range(1, len(shown) + 1),
            "image": shown["image_id"].to_numpy(),
            "fold": shown["fold"].to_numpy(),
            "score": shown["score"].round(4).to_numpy(),
            "decision": decisions,
            "truth": [_label_text(run, t, target) for t in shown["truth"]],
            "margin": shown["margin"].round(4).to_numpy(),
            "spread": shown["spread"].round(4).to_numpy(),
            "reviewed": shown["image_id"].isin(reviewed).to_numpy(),
        }
    )
    table = table.drop(columns=[c for c in ("fold", "spread") if table[c].isna().all()])
    st.caption("Click a row to open that case.")
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        key="case_table",
        on_select=_pick_from_table,
        selection_mode="single-row",
    )


def _summary(run: C.Run, store: VerdictStore) -> None:
    latest = store.latest()
    summary = agreement(latest)
    st.markdown(f"**{store.count()} verdicts** ({len(latest)} current) in `{store.path.name}`")
    st.markdown("##### Model vs reviewers")
    for key, title, empty in (
        ("model_vs_reviewer", "Model vs reviewers", "No verdicts yet."),
        (
            "reviewer_vs_reviewer",
            "Reviewer vs reviewer (cases both reviewed; Cohen's κ)",
            "Needs two reviewers on one case.",
        ),
    ):
        st.markdown(f"##### {title}")
        if summary[key]:
            st.dataframe(pd.DataFrame(summary[key]).rename(columns=SUMMARY_NAMES), hide_index=True, width="stretch")
        else:
            st.caption(empty)
    c1, c2, _ = st.columns([1, 1, 2])
    c1.download_button(
        "Download all verdicts (CSV)",
        store.export_csv(),
        file_name=f"{run.name}_verdicts.csv",
        mime="text/csv",
        key="dl_all",
    )
    c2.download_button(
        "Download latest per reviewer (CSV)",
        store.export_csv(latest_only=True),
        file_name=f"{run.name}_verdicts_latest.csv",
        mime="text/csv",
        key="dl_latest",
    )


def _flash() -> None:
    msg = st.session_state.pop("flash", None)
    if msg:
        kind, text = msg
        st.toast(text if kind == "ok" else _md(text), icon=":material/check:" if kind == "ok" else ":material/warning:")
        if kind != "ok":
            st.warning(_md(text))


def main() -> None:
    st.set_page_config(page_title="medrec review", page_icon=":material/radiology:", layout="wide")
    # Less empty space above the case header, so image and verdict buttons share one screen.
    st.html("<style>.stMainBlockContainer, .block-container {padding-top: 3.5rem;}</style>")
    args = _args()
    if not args.run:
        st.error(
            "No run folder given. Start with `python -m medrec.review RUN_DIR` "
            "or `streamlit run apps/review.py -- --run RUN_DIR`."
        )
        st.stop()
    try:
        run = _load_run(str(Path(args.run).resolve()), args.predictions, _stamp(args.run, args.predictions))
        store = _store(str(run.run_dir / "review.sqlite"))
    except (MedrecError, OSError) as exc:
        st.error(str(exc))
        st.stop()
    if "case_id" not in st.session_state and st.query_params.get("case"):
        st.session_state["case_id"] = st.query_params["case"]

    address = st.get_option("server.address")
    if address not in ("127.0.0.1", "localhost", "::1"):
        # Plain `streamlit run` listens on every interface: patient images would be reachable
        # from the network. python -m medrec.review binds 127.0.0.1.
        st.sidebar.warning(
            f"This server listens on {address or 'all interfaces'}. For this machine only, start it with "
            "`python -m medrec.review RUN_DIR` or add `--server.address 127.0.0.1`."
        )
    state = _sidebar(run, store)
    target, shown = state["target"], state["shown"]
    _flash()
    review_tab, list_tab, summary_tab = st.tabs(["Review", f"Case list ({len(shown)})", "Agreement & export"])
    with list_tab:
        _case_list(run, shown, state["reviewed"], target)
    with summary_tab:
        _summary(run, store)
    with review_tab:
        current = _current(shown)
        if current is None:
            st.info("No cases match this filter. Choose another one in the sidebar.")
            return
        pos, row = current
        _header(run, pos, len(shown), row, target)
        _nav(pos, len(shown))
        left, middle, right = st.columns([5, 2, 3.3], gap="medium")
        with left:
            img = _viewer(run, row, target, middle)
            _facts(run, row, target, img)
        with right:
            _verdict_panel(run, store, row, target)
        _prefetch(run, shown, pos)


def _prefetch(run: C.Run, shown: pd.DataFrame, pos: int) -> None:
    """Warm the cache with the next case's image after the page is drawn, so Next is instant."""
    if pos + 1 >= len(shown):
        return
    try:
        nxt = shown.iloc[pos + 1]
        _display_for(run, C.case_path(run, nxt["path"]), nxt, MAX_SIDE)
    except (MedrecError, OSError, ValueError):
        pass  # the error is shown when that case is opened


# Streamlit runs this file as __main__; the guard keeps a multiprocessing "spawn" child (which
# re-imports the main module) or an import for inspection from starting the page.
if __name__ == "__main__":
    main()

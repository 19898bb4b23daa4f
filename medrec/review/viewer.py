"""The image column of the review page: the case's image, its window and CAM controls, facts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from medrec.review import cache
from medrec.review import display as D
from medrec.review.cases import Run
from medrec.review.paths import case_path
from medrec.safetext import md

ZOOM_MAX_SIDE = 4096
IMAGE_MAX_HEIGHT = 540  # px


def viewer(run: Run, row: pd.Series, target: str, controls) -> D.DisplayImage:
    """The image (in the current container) with its display controls in `controls`.

    Raises whatever reading, decoding or drawing raises: the page shows it as this case's error.
    """
    path = case_path(run, row["path"])
    zoom = float(st.session_state.get("zoom", 1.0))
    img = cache.display_for(run, path, row, min(ZOOM_MAX_SIDE, int(cache.MAX_SIDE * zoom)))
    try:
        cam, cam_problem = D.load_cam(run, str(row["image_id"]), target), None
    except (D.CamError, OSError, ValueError) as exc:  # the image is still worth showing
        cam, cam_problem = None, str(exc)
    with controls:
        center, width = window_controls(img, str(row["image_id"]), D.run_windows(run))
        # A preference that holds across cases; cases without a map show the plain image.
        show_cam = st.toggle("Grad-CAM overlay", value=True, key="cam_on", help="the fold model's Grad-CAM map")
        opacity = st.slider(
            "CAM opacity", 0.0, 1.0, 0.5, 0.05, key="cam_opacity", disabled=cam is None or not show_cam
        )
        st.slider("Zoom", 1.0, 4.0, 1.0, 0.25, key="zoom", format="%.2f×")
        pan = (0.5, 0.5)
        if zoom > 1:
            pan = (
                st.slider("Pan vertical", 0.0, 1.0, 0.5, 0.01, key="pan_y"),
                st.slider("Pan horizontal", 0.0, 1.0, 0.5, 0.01, key="pan_x"),
            )
    gray = D.to_gray8(img.pixels, center, width)
    rgb = D.compose(gray, cam if show_cam else None, opacity=opacity, zoom=zoom, pan=pan)
    # Fit the image to the column but keep it no taller than IMAGE_MAX_HEIGHT, so a tall
    # chest film and the verdict buttons fit on one screen.
    st.image(rgb, width=max(64, int(IMAGE_MAX_HEIGHT * rgb.shape[1] / rgb.shape[0])), output_format="PNG")
    st.caption(_caption(run, row, img, center, width, cam is not None))  # numbers only
    if cam_problem:
        st.warning(f"Grad-CAM map not shown: {md(cam_problem)}")
    if float(img.pixels.min()) == float(img.pixels.max()):
        st.info(f"Every pixel of this image has the value {float(img.pixels.min()):g}: there is nothing to "
                "window or review here; check the file.")
    return img


def _caption(run: Run, row: pd.Series, img: D.DisplayImage, center: float, width: float, has_cam: bool) -> str:
    h, w = img.native_shape
    note = "" if img.scale == 1 else f" · shown at {img.pixels.shape[1]}×{img.pixels.shape[0]}"
    cam_note = "" if has_cam else " · no Grad-CAM map for this case"
    lo, hi = float(img.pixels.min()), float(img.pixels.max())
    where = D.slice_caption(img.meta, D.case_slice(run, row.get("slice")))
    where = f"{where} · " if where else ""
    return f"{where}{w}×{h} px{note} · values {lo:g} to {hi:g} · window C {center:g} / W {width:g}{cam_note}"


def window_controls(
    img: D.DisplayImage, case_key: str, run_windows: dict[str, tuple[float, float]]
) -> tuple[float, float]:
    """Window preset and center/width sliders. A CT run's own windows (data.channels) come
    first and the first is the default, as the network saw the image through it; other runs
    default to "auto" (the file's window, else a percentile range)."""
    presets = dict(run_windows)
    presets["auto"] = D.auto_window(img.pixels, img.meta)
    fw = D.file_window(img.meta)
    if fw:
        presets["file window"] = fw
    known = set(run_windows.values())
    presets.update({k: v for k, v in D.window_presets().items() if v not in known})
    if st.session_state.get("preset") not in presets:
        st.session_state["preset"] = next(iter(presets))
    preset = st.selectbox("Window", list(presets), key="preset")
    c0, width0 = presets[preset]
    lo, hi = float(img.pixels.min()), float(img.pixels.max())
    span = max(hi - lo, 1.0)
    step = 1.0 if span > 50 else round(span / 500, 6) or 1e-3
    # A uniform image (min = max) still needs a slider range: at least one step either side.
    c_lo, c_hi = min(lo, c0) - step, max(hi, c0) + step
    w_hi = max(2 * span, width0, 2 * step)
    # Slider keys include the case and preset: a new case or preset starts at its window,
    # a manual adjustment stays while the reviewer stays on that case and preset.
    center = st.slider("Center (level)", c_lo, c_hi, float(c0), step, key=f"wc_{case_key}_{preset}")
    width = st.slider("Width", step, w_hi, float(max(width0, step)), step, key=f"ww_{case_key}_{preset}")
    return float(center), float(width)


def facts(run: Run, row: pd.Series, target: str, img: D.DisplayImage | None) -> None:
    """Score, margin, spread, fold and the image's de-identified metadata."""
    items = {"Score": f"{row['score']:.4f}", "Margin to threshold": f"{row['margin']:.4f}"}
    if not pd.isna(row["spread"]):
        items["Spread across models"] = f"{row['spread']:.4f}"
    if not pd.isna(row["fold"]):
        items["Fold"] = str(int(row["fold"]))
    if run.task == "multilabel":
        scores = run.cases.loc[row.name]
        items["Other labels"] = ", ".join(f"{t} {scores[f'score_{t}']:.2f}" for t in run.targets if t != target)
    pairs(items)
    with st.expander("Image metadata (de-identified)", expanded=False):
        meta = D.safe_meta(img.meta) if img else {}
        if meta:
            pairs(meta)
        else:
            st.caption("No metadata for this image.")


def pairs(items: dict) -> None:
    """A two-column key/value table (escaped: values may come from files)."""
    table = pd.DataFrame([(md(k), md(v)) for k, v in items.items()], columns=["key", "value"])
    st.table(table, hide_index=True, hide_header=True, border="horizontal")

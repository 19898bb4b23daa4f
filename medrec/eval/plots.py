"""Report figures as PNG bytes: ROC and PR curves, reliability diagram, confusion matrix.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no `matplotlib.use`), so
building a report changes no global state and needs no display.
"""

from __future__ import annotations

import io
import math

import numpy as np

from medrec.eval.metrics import OOF, pr_curve, roc_curve


def _figure(n_panels: int, size: tuple[float, float] = (4.2, 3.8)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(3, max(1, n_panels))
    rows = math.ceil(max(1, n_panels) / cols)
    # Fixed margins rather than a layout engine: constrained layout measured ~2 s per 14-panel figure.
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), dpi=90)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.6 / (size[0] * cols), right=1 - 0.15 / (size[0] * cols),
                        bottom=0.55 / (size[1] * rows), top=1 - 0.35 / (size[1] * rows), wspace=0.3, hspace=0.45)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _thin(x: np.ndarray, y: np.ndarray, limit: int = 800) -> tuple[np.ndarray, np.ndarray]:
    """At most ~`limit` points of a curve (ends kept): invisible at report size, much faster to draw."""
    if len(x) <= limit:
        return x, y
    keep = np.unique(np.r_[np.linspace(0, len(x) - 1, limit).astype(int), len(x) - 1])
    return x[keep], y[keep]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def panels(oof: OOF) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(title, mask of rows with a label, 0/1 target, score) per label (one-vs-rest for classes)."""
    if oof.task == "multiclass":
        everyone = np.ones(len(oof.y), dtype=bool)
        return [(n, everyone, oof.y == c, oof.score[:, c]) for c, n in enumerate(oof.names)]
    return [(n, ~np.isnan(oof.y[:, j]), oof.y[:, j] == 1, oof.score[:, j]) for j, n in enumerate(oof.names)]


def curve_figure(oof: OOF, kind: str, points: dict[str, tuple[float, float]] | None = None) -> bytes:
    """ROC (`kind="roc"`) or precision-recall (`kind="pr"`) curves: one thin line per
    (repeat, fold), one thick line per repeat for the pooled out-of-fold predictions.

    Args:
        points: optional operating point per panel title, as (x, y) on the plot's axes.
    """
    plist = panels(oof)
    fig, axes = _figure(len(plist))
    curve = roc_curve if kind == "roc" else pr_curve  # both give (x, y, thresholds)
    for ax, (title, has, target, score) in zip(axes, plist):
        for r in np.unique(oof.repeat):
            in_r = has & (oof.repeat == r)
            for k in np.unique(oof.fold[in_r]):
                rows = in_r & (oof.fold == k)
                if 0 < target[rows].sum() < rows.sum():
                    x, y, _ = curve(target[rows], score[rows])
                    ax.plot(*_thin(x, y), lw=0.8, alpha=0.6, label=f"fold {k}" if r == 0 else None)
            if 0 < target[in_r].sum() < in_r.sum():
                x, y, _ = curve(target[in_r], score[in_r])
                ax.plot(*_thin(x, y), lw=2.2, color="black", label="pooled" if r == 0 else None)
        if points and title in points:
            ax.plot(*points[title], "o", color="crimson", ms=7, label="operating point")
        _style(ax, kind, title, target[has].mean() if has.any() else np.nan)
    return _png(fig)


def _style(ax, kind: str, title: str, prevalence: float) -> None:
    if kind == "roc":
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
    else:
        if np.isfinite(prevalence):
            ax.axhline(prevalence, ls="--", color="grey", lw=0.8)
        ax.set_xlabel("recall (sensitivity)")
        ax.set_ylabel("precision (PPV)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=7)
    else:  # a label with one class only: no curve exists
        ax.text(0.5, 0.5, "undefined: one class only", ha="center", va="center", color="grey")


def reliability_figure(calibration: dict) -> bytes | None:
    """Reliability diagram per calibrated quantity, with the number of images per bin."""
    curves = calibration.get("reliability") or {}
    if not curves:
        return None
    fig, axes = _figure(len(curves))
    for ax, (name, c) in zip(axes, curves.items()):
        lower, upper = np.asarray(c["bin_lower"]), np.asarray(c["bin_upper"])
        count = np.asarray(c["count"], dtype=float)
        obs = np.asarray(c["observed"], dtype=float)
        pred = np.asarray(c["mean_predicted"], dtype=float)
        share = count / max(count.sum(), 1)
        ax.bar(lower, share, width=upper - lower, align="edge", color="lightgrey", label="share of images")
        ok = count > 0
        ax.plot(pred[ok], obs[ok], "o-", color="navy", label="observed")
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed frequency")
        ax.set_title(str(name))
        ax.legend(loc="upper left", fontsize=7)
    return _png(fig)


def confusion_figure(confusion: dict, task: str, names: tuple[str, ...]) -> bytes:
    """Confusion matrices at the operating point (rows: truth, columns: prediction)."""
    if task == "multiclass":
        mats = {"all classes": (np.asarray(confusion["matrix"]), list(names))}
    else:
        mats = {n: (np.asarray(m), ["negative", "positive"]) for n, m in confusion.items()}
    fig, axes = _figure(len(mats), size=(3.6 + 0.35 * len(names) * (task == "multiclass"), 3.4))
    for ax, (title, (m, ticks)) in zip(axes, mats.items()):
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            text = f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"
            ax.text(j, i, text, ha="center", va="center", color="white" if v > m.max() / 2 else "black")
        many = len(ticks) > 2
        ax.set_xticks(range(len(ticks)), ticks, rotation=45 if many else 0, ha="right" if many else "center")
        ax.set_yticks(range(len(ticks)), ticks)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    return _png(fig)


def forest_figure(section: dict, label: str, overall: dict[str, float | None]) -> bytes | None:
    """Forest plot of the subgroups: one panel per metric, one row per (column, value), the
    value with its 95% CI; "too few" rows are named but not drawn. A dashed line marks the
    whole data's value (`overall`, by metric)."""
    groups = section["groups"]
    metrics = [m for m in overall if any(m in (g.get("metrics") or {}).get(label, {}) for g in groups)]
    if not metrics:
        return None
    fig, axes = _figure(len(metrics), size=(4.2, 0.9 + 0.32 * len(groups)))
    names = [f"{g['column']} = {g['value']} (n={g['patients']})" for g in groups]
    for ax, metric in zip(axes, metrics):
        for i, g in enumerate(groups):
            m = (g.get("metrics") or {}).get(label, {}).get(metric)
            if g["too_few"] or m is None or m["value"] is None:
                ax.text(0.5, i, "too few" if g["too_few"] else "undefined", ha="center", va="center",
                        fontsize=7, color="grey")
                continue
            lo, hi = m["ci_low"], m["ci_high"]
            if lo is not None:
                ax.plot([lo, hi], [i, i], color="navy", lw=1.5)
            ax.plot(m["value"], i, "s", color="navy", ms=5)
        if overall[metric] is not None:
            ax.axvline(overall[metric], ls="--", color="grey", lw=0.8)
        ax.set_yticks(range(len(groups)), names if ax is axes[0] else [""] * len(groups), fontsize=7)
        ax.set_ylim(len(groups) - 0.5, -0.5)
        ax.set_xlim(-0.02, 1.02)
        ax.set_title(f"{label}: {metric}" if label else metric, fontsize=9)
    width = fig.get_size_inches()[0]  # room for the row names: ~0.06 in per character at 7 pt
    fig.subplots_adjust(left=min(0.45, (0.06 * max(len(n) for n in names) + 0.3) / width))
    return _png(fig)

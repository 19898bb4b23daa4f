"""Rows of the report's later sections: subgroups, patient/study aggregates, threshold stability,
image flow. Plain text; the renderers escape it."""

from __future__ import annotations

from medrec.eval.tables import _fmt


def _ci(m: dict | None, signed: bool = False) -> str:
    """"0.812 (0.701–0.902)"; signed values carry + or −; "—" when undefined."""
    if not m or m.get("value") is None:
        return "—"
    fmt = (lambda v: f"{v:+.3f}".replace("-", "−")) if signed else (lambda v: f"{v:.3f}")
    ci = "" if m.get("ci_low") is None else f" ({fmt(m['ci_low'])} to {fmt(m['ci_high'])})"
    return fmt(m["value"]) + ci


def subgroup_tables(section: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(label, head, rows) per label: one row per (column, value) with counts, prevalence, each
    metric with its CI and the difference to the rest with its CI ("too few" below the minimum)."""
    labels = list(dict.fromkeys(lab for g in section["groups"] for lab in (g.get("metrics") or {})))
    metrics = list(dict.fromkeys(m for g in section["groups"] for ms in (g.get("metrics") or {}).values()
                                 for m in ms))
    out = []
    for label in labels or [""]:
        head = ["column", "value", "patients", "images", "prevalence"]
        for m in metrics:
            head += [f"{m} (95% CI)", f"Δ {m} vs rest (95% CI)"]
        rows = []
        for g in section["groups"]:
            prev = g["prevalence"].get(label)  # None for "all classes" of a multiclass task
            row = [g["column"], g["value"], str(g["patients"]), str(g["images"]), _fmt(prev)]
            for m in metrics:
                if g["too_few"]:
                    row += ["too few", "—"]
                    continue
                entry = (g.get("metrics") or {}).get(label, {}).get(m)
                row += [_ci(entry), _ci(entry.get("difference") if entry else None, signed=True)]
            rows.append(row)
        out.append((label, head, rows))
    return out


def subgroup_notes(section: dict) -> list[str]:
    notes = [f"Per value of {', '.join(section['columns'])}: metrics at {section['operating_point']}; "
             f"95% CIs from the same patient bootstrap; difference = {section['difference']}. Values with fewer "
             f"than {section['min_patients']} patients are shown as 'too few'. A subgroup check is descriptive: "
             "many comparisons, so an interval that excludes 0 by chance is expected now and then."]
    notes += [f"Subgroup column '{col}' unavailable: {why}" for col, why in section["unavailable"].items()]
    return notes


AGGREGATE_METRICS = ("auroc", "auprc", "sensitivity", "specificity", "balanced_accuracy", "auroc_macro",
                     "sensitivity_macro", "specificity_macro")


def aggregate_table(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Image-level metrics beside each aggregate (level × max/mean), value (95% CI) per cell."""
    section = doc["aggregate"]
    columns = [("image", doc["data"]["n_rows"], doc["metrics"])]
    for level, res in section["levels"].items():
        if "unavailable" in res:
            continue
        for how, r in res.items():
            columns.append((f"{level} ({how})", r["n"], r["metrics"]))
    names = [m for m in AGGREGATE_METRICS if m in doc["metrics"]]
    head = ["metric"] + [f"{name}, n = {n}" for name, n, _ in columns]
    rows = [[m] + [_ci(ms.get(m)) for _, _, ms in columns] for m in names]
    return head, rows


def aggregate_notes(doc: dict) -> list[str]:
    section = doc["aggregate"]
    notes = [f"Patient/study level: one score per patient (study) and repeat, the {section['how']['max']} (max) "
             f"or the {section['how']['mean']} (mean); its label is positive when any image's is. Threshold "
             f"{section['threshold']}; CIs resample patients. n counts rows of the first repeat."]
    notes += [f"{level}-level results unavailable: {res['unavailable']}"
              for level, res in section["levels"].items() if "unavailable" in res]
    return notes


def stability_table(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Per (label, rule): stored threshold with its bootstrap interval, cross-fitted sensitivity
    and specificity with CIs; the run's own rule marked "(this run)"."""
    section = doc["threshold_stability"]
    head = ["label", "rule", "stored threshold", "threshold 95% interval", "sensitivity (95% CI)",
            "specificity (95% CI)"]
    rows = []
    for r in section["rows"]:
        iv = r["threshold_interval"]
        interval = "—" if iv["ci_low"] is None else f"{iv['ci_low']:.4f} to {iv['ci_high']:.4f}"
        rule = r["rule"] + (" (this run)" if r["rule"] == section["rule"] else "")
        rows.append([r["label"], rule, _fmt(r["threshold"], 4), interval, _ci(r["sensitivity"]),
                     _ci(r["specificity"])])
    return head, rows


def stability_notes(doc: dict) -> list[str]:
    return [f"How far the operating point would move with other patients: {doc['threshold_stability']['method']}. "
            "A wide threshold interval means the threshold will not transfer precisely to new data; a rule "
            "stated as a target (sensitivity:0.9) keeps its meaning when the score scale shifts, and its "
            "cross-fitted sensitivity with CI shows how well the target held on unseen folds."]


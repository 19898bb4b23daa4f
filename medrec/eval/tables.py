"""The report's tables as rows of text, shared by the HTML and Markdown renderings."""

from __future__ import annotations

from medrec.eval.inputs import Run


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _wall(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s"


def _mapping(d) -> str:
    if not isinstance(d, dict) or not d:
        return "—" if not d else str(d)
    return ", ".join(f"{k}: {v}" for k, v in d.items())


def header_rows(run: Run, doc: dict) -> list[tuple[str, str]]:
    """(field, value) pairs of the report header."""
    info, prov, vol, data = run.info, doc["provenance"], doc["volatile"], doc["data"]
    fp = prov.get("data_fingerprint") or {}
    return [
        ("Config name", prov["name"]),
        ("Task", f"{doc['task']} ({', '.join(doc['labels'])})"),
        ("Status", _fmt(prov.get("status"))),
        ("Initialisation", _fmt(prov.get("initialisation"))),
        ("Weights file", _fmt(info.get("weights_file"))),
        ("Weights sha256", _fmt(prov.get("weights_sha256"))),
        ("Data fingerprint", _mapping(fp)),
        ("Git commit", _fmt(vol.get("git_commit"))),
        ("Package versions", _mapping(prov.get("versions"))),
        ("Seeds", _mapping(prov.get("seeds"))),
        ("Hardware", _mapping(vol.get("hardware"))),
        ("Created / finished", f"{_fmt(vol.get('created'))} / {_fmt(vol.get('finished'))}"),
        ("Wall time", _wall(vol.get("wall_time_s"))),
        ("Config sha256", prov["config_sha256"]),
        _count_row(data),
        ("Folds × repeats", f"{data['n_folds']} × {data['n_repeats']}"),
        ("Resampling unit", "patient" if doc["bootstrap"]["unit"] == "patient" else "image (no patient ids)"),
        ("Preprocessing", preprocessing_text(run.cfg.data)),
        ("Augmentation", run.cfg.data.augment.summary(run.cfg.data.modality)),
        *([("Tuned", run.cfg.tune.tuned_from.summary())] if run.cfg.tune and run.cfg.tune.tuned_from else []),
        *_run_json_rows(info),
    ]


def _run_json_rows(info: dict) -> list[tuple[str, str]]:
    """Header rows from run.json when the run wrote them: how each fold's epoch was chosen and
    the image flow (listed -> read, and how -> refused, by reason)."""
    rows = []
    selection = info.get("model_selection")
    if isinstance(selection, dict) and selection.get("note"):
        chosen = _epochs_chosen(selection.get("epochs"))
        rows.append(("Model selection", f"{selection['note']}{chosen}"))
    flow = image_flow(info.get("images"))
    if flow:
        rows.append(("Image flow", flow))
    return rows


def _epochs_chosen(epochs) -> str:
    """run.json stores 0-based epoch indices; the log and the report count from 1 ("epoch 10 of 10")."""
    shown = []
    for e in epochs or []:
        if isinstance(e, dict) and isinstance(e.get("epoch"), int):
            n = e.get("epochs_trained")
            shown.append(f"{e['epoch'] + 1}" + (f" of {n}" if isinstance(n, int) else ""))
    return f" (epochs chosen, counted from 1: {', '.join(shown)})" if shown else ""


def image_flow(counts) -> str | None:
    """run.json's "images" (medrec.data.reading.ReadCounts.to_dict) as one line, or None."""
    if not isinstance(counts, dict) or "listed" not in counts:
        return None
    from medrec.data.reading import ReadCounts

    try:
        return ReadCounts(listed=int(counts["listed"]), read=int(counts.get("read", 0)),
                          conversions=dict(counts.get("converted") or {}),
                          alpha_not_opaque=int(counts.get("alpha_not_opaque", 0)),
                          refused=dict(counts.get("refused") or {})).summary()
    except (TypeError, ValueError):
        return None


def _count_row(data: dict) -> tuple[str, str]:
    """Images / patients / rows; for volume data slices (or volumes) / volumes / patients / rows."""
    if data.get("unit") == "slice":
        return ("Slices / volumes / patients / rows",
                f"{data['n_images']} / {data['n_volumes']} / {_fmt(data['n_patients'])} / {data['n_rows']}")
    if data.get("unit") == "volume":
        return ("Volumes / patients / rows", f"{data['n_volumes']} / {_fmt(data['n_patients'])} / {data['n_rows']}")
    return ("Images / patients / rows", f"{data['n_images']} / {_fmt(data['n_patients'])} / {data['n_rows']}")


def preprocessing_text(data) -> str:
    """One line saying how images were preprocessed: modality, CT windows (C/W) or MRI intensity
    scaling or the radiograph window, which slice of a volume, input size."""
    parts = [f"modality {data.modality}"]
    if data.modality == "ct" and data.channels:
        from medrec.io.dicom import named_windows

        windows = [f"{name} ({c:g}/{width:g})" for name, c, width in named_windows(data.channels)]
        parts.append(f"CT windows (C/W): {', '.join(windows)}")
    elif data.modality == "mri":
        parts.append(f"intensity {data.intensity}")
    else:
        w = data.window
        parts.append(f"window {'C/W ' + '/'.join(f'{v:g}' for v in w) if isinstance(w, (list, tuple)) else w}")
    parts.append({"middle": "middle slice", "all": "all slices"}.get(data.slice, f"slice {data.slice}"))
    if data.frame is not None:
        parts.append(f"frame {data.frame}")
    parts.append(f"{data.image_size} px")
    return " · ".join(parts)


def _threshold_text(doc: dict) -> str:
    op = doc["operating_point"]
    t = op["threshold"]
    if t is None:
        return f"{op['rule']} (no threshold)"
    if isinstance(t, dict):
        t = ", ".join(f"{k}: {_fmt(v, 4)}{stored_interval(doc, k) or ''}" for k, v in t.items())
    else:
        t = _fmt(t, 4) + (stored_interval(doc, doc["labels"][0]) or "")
    return f"rule {op['rule']}; selection: {op['selection']}; stored threshold (all OOF predictions): {t}"


def stored_interval(doc: dict, label: str) -> str | None:
    """" (bootstrap 95% interval a to b)" of the run's own stored threshold for `label`."""
    section = doc.get("threshold_stability")
    for r in (section or {}).get("rows", []):
        if r["label"] == label and r["rule"] == section["rule"] and r["threshold_interval"]["ci_low"] is not None:
            iv = r["threshold_interval"]
            return f" (bootstrap 95% interval {iv['ci_low']:.4f} to {iv['ci_high']:.4f})"
    return None


def metric_rows(doc: dict) -> list[tuple[str, str, str, str]]:
    """(metric, value, 95% CI, n valid resamples) of the headline metrics."""
    out = []
    for name, m in doc["metrics"].items():
        mark = " †" if "note" in m else ""
        ci = "—" if m["ci_low"] is None else f"{_fmt(m['ci_low'])} – {_fmt(m['ci_high'])}"
        out.append((name + mark, _fmt(m["value"]), ci, str(m["n_valid"])))
    return out


def fold_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-fold table (thresholds from the cross-fitting records)."""
    thr: dict[tuple[int, int], list[str]] = {}
    for rec in doc["operating_point"]["fold_thresholds"]:
        text = "undefined" if rec["threshold"] is None else _fmt(rec["threshold"], 4)
        if len(doc["labels"]) > 1:
            text = f"{rec['label']}: {text}"
        thr.setdefault((rec["repeat"], rec["fold"]), []).append(text)
    names = list(doc["per_fold"][0]["metrics"]) if doc["per_fold"] else []
    head = ["repeat", "fold", "images", "patients", "threshold"] + names
    rows = [[str(f["repeat"]), str(f["fold"]), str(f["n_images"]),
             str(f["n_patients"]) if doc["bootstrap"]["unit"] == "patient" else "—",
             "; ".join(thr.get((f["repeat"], f["fold"]), ["—"]))] + [_fmt(f["metrics"][n]) for n in names]
            for f in doc["per_fold"]]
    return head, rows


def label_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Per-label (or per-class) metrics with CIs."""
    if not doc["per_label"]:
        return [], []
    names = list(next(iter(doc["per_label"].values())))
    marked = {n for ms in doc["per_label"].values() for n, m in ms.items() if "note" in m}
    rows = []
    for label, ms in doc["per_label"].items():
        cells = [label]
        for n in names:
            m = ms[n]
            ci = "" if m["ci_low"] is None else f" ({_fmt(m['ci_low'])}–{_fmt(m['ci_high'])})"
            cells.append(_fmt(m["value"]) + ci)
        rows.append(cells)
    return ["label"] + [n + (" †" if n in marked else "") for n in names], rows


def temperature_title(doc: dict) -> str:
    """Heading of the temperature-scaling table: how the temperatures were fitted."""
    ts = doc["calibration"].get("temperature_scaling") or {}
    return "Temperature scaling (in-sample: fitted on this fold, optimistic †)" if ts.get("in_sample") \
        else "Temperature scaling (cross-fitted)"


def calibration_rows(doc: dict) -> list[list[str]]:
    ts = doc["calibration"].get("temperature_scaling")
    if not ts:
        return []
    mark = " †" if ts.get("in_sample") else ""  # "after" fitted and measured on the same fold
    return [[name, _fmt(ts["stored"].get(name), 3), _fmt(b["ece"]), _fmt(ts["after"][name]["ece"]) + mark,
             _fmt(b["brier"]), _fmt(ts["after"][name]["brier"]) + mark] for name, b in ts["before"].items()]

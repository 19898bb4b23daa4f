"""The review page (medrec/review/app.py) through Streamlit's AppTest: filters, verdicts,
navigation, refused paths, the Agreement tab."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from medrec.review.server import PAGE as APP
from medrec.review.store import VerdictStore

from .conftest import IDENTIFIERS, THRESHOLD

ENTRY = Path(__file__).resolve().parents[2] / "apps" / "review.py"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch):
    def start(run_dir: Path, **query: str) -> AppTest:
        monkeypatch.setenv("MEDREC_REVIEW_RUN", str(run_dir))
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.query_params.update(query)
        at.run()
        assert not at.exception, at.exception
        return at

    return start


def _current_case(at: AppTest) -> str:
    header = next(m.value for m in at.markdown if m.value.startswith("### Case "))
    return header.split("`")[1]


def _tab(at: AppTest, name: str) -> AppTest:
    """Select a tab (tabs are lazy: only the open one runs)."""
    at.session_state["tab"] = name
    return at.run()


def _case_table(at: AppTest) -> pd.DataFrame:
    _tab(at, "Case list")
    table = next(d.value for d in at.dataframe if "image" in d.value.columns and "margin" in d.value.columns)
    _tab(at, "Review")
    return table


def _all_text(at: AppTest) -> str:
    parts = [str(e.value) for kind in ("markdown", "caption", "error", "warning", "info") for e in getattr(at, kind)]
    parts += [d.value.to_csv() for d in [*at.dataframe, *at.table]]
    return "\n".join(parts)


def test_false_negative_filter_selects_label_1_below_threshold(app, run_dir: Path):
    at = app(run_dir)
    oof = pd.read_csv(run_dir / "oof_predictions.csv")
    assert _case_table(at)["image"].tolist() == oof.image_id.tolist()
    at.sidebar.radio(key="filter").set_value("false_negatives").run()
    expected = oof.loc[(oof.label == 1) & (oof.score < THRESHOLD), "image_id"].tolist()
    assert _case_table(at)["image"].tolist() == expected
    assert _current_case(at) == expected[0]
    assert any(m.value.startswith(f"### Case 1 of {len(expected)}") for m in at.markdown)
    at.sidebar.radio(key="filter").set_value("false_positives").run()
    assert (
        _case_table(at)["image"].tolist() == oof.loc[(oof.label == 0) & (oof.score >= THRESHOLD), "image_id"].tolist()
    )


def test_verdict_is_saved_and_the_next_case_follows(app, run_dir: Path):
    at = app(run_dir)
    at.sidebar.radio(key="filter").set_value("false_negatives").run()
    order = _case_table(at)["image"].tolist()
    first = _current_case(at)
    assert first == order[0]
    at.sidebar.text_input(key="reviewer").input("Dr Grey").run()
    at.text_area(key=f"comment_{first}_").input("subtle opacity, model is wrong")
    at.selectbox(key=f"corr_{first}_").set_value("pneumonia (1)")
    at.button(key="v_disagree").click().run()
    assert not at.exception

    saved = VerdictStore(run_dir).history()
    assert len(saved) == 1
    v = saved[0]
    assert (v.image_id, v.reviewer, v.verdict, v.corrected_label) == (first, "Dr Grey", "disagree", "1")
    assert v.comment == "subtle opacity, model is wrong"
    assert (v.model_decision, v.truth) == ("0", "1") and v.model_score == pytest.approx(0.12)
    assert _current_case(at) == order[1]  # advanced on save
    assert any("1 of 7 reviewed by Dr Grey" in m.value for m in at.sidebar.markdown)

    at.button(key="prev").click().run()
    assert _current_case(at) == first
    shown = [m.value for m in at.markdown if m.value.startswith("**Dr Grey**")]
    assert len(shown) == 1 and ":red-badge[disagree]" in shown[0] and "subtle opacity, model is wrong" in shown[0]
    assert "corrected to **pneumonia**" in shown[0]


def test_reviewer_text_cannot_inject_markdown(app, run_dir: Path):
    at = app(run_dir)
    first = _current_case(at)
    at.sidebar.text_input(key="reviewer").input("eve").run()
    at.text_area(key=f"comment_{first}_").input("![x](http://example.invalid/t.png) :red[!]")
    at.button(key="v_unsure").click().run()
    at.button(key="prev").click().run()
    shown = next(m.value for m in at.markdown if m.value.startswith("**eve**"))
    assert "![x](http" not in shown and ":red[!]" not in shown
    assert "\\!\\[x\\]\\(http\\://example\\.invalid/t\\.png\\)" in shown


def test_without_a_reviewer_name_nothing_is_saved(app, run_dir: Path):
    at = app(run_dir)
    first = _current_case(at)
    at.button(key="v_agree").click().run()
    assert VerdictStore(run_dir).count() == 0
    assert _current_case(at) == first
    assert any("reviewer name" in w.value for w in at.warning)


def test_navigation_and_deep_link(app, run_dir: Path):
    at = app(run_dir, case="img3")
    assert _current_case(at) == "img3"
    at.button(key="next").click().run()
    assert _current_case(at) == "img4"
    assert at.query_params["case"] == ["img4"] or at.query_params["case"] == "img4"
    at.number_input(key="jump").set_value(1).run()
    assert _current_case(at) == "img0"
    assert at.button(key="prev").disabled


def test_refused_path_shows_an_error_for_that_case(app, evil_run: Path):
    at = app(evil_run)
    for image_id in ("evil_rel", "evil_abs", "evil_link"):
        at = app(evil_run, case=image_id)
        assert _current_case(at) == image_id
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "refused" in errors[0], errors
        assert not at.image
        assert "root:" not in _all_text(at)  # nothing of /etc/passwd reaches the page
    at = app(evil_run, case="img0")
    assert not at.error and len(at.image) == 1


def test_dicom_case_shows_window_metadata_and_no_identifiers(app, run_dir: Path):
    at = app(run_dir, case="ct6")
    assert not at.error and len(at.image) == 1
    assert at.selectbox(key="preset").options[:2] == ["auto", "file window"]
    assert at.slider(key="wc_ct6_auto").value == 40.0 and at.slider(key="ww_ct6_auto").value == 400.0
    at.selectbox(key="preset").set_value("lung").run()
    assert at.slider(key="wc_ct6_lung").value == -600.0 and at.slider(key="ww_ct6_lung").value == 1500.0
    meta = next(t.value for t in at.table if "modality" in t.value["key"].tolist())
    assert dict(meta.values.tolist())["modality"] == "CT"
    text = _all_text(at)
    for value in IDENTIFIERS.values():
        assert value not in text
    assert "p006" not in text  # pseudonymous patient ids stay out too


def test_cam_overlay_toggle(app, run_dir: Path):
    at = app(run_dir, case="img2")  # no map: plain image, the preference stays on
    assert at.toggle(key="cam_on").value is True and at.slider(key="cam_opacity").disabled
    assert any("no Grad-CAM map" in c.value for c in at.caption)
    plain = at.image[0].proto.imgs[0].url
    at.button(key="prev").click().run()  # img1 has a map
    assert _current_case(at) == "img1" and not at.slider(key="cam_opacity").disabled
    with_cam = at.image[0].proto.imgs[0].url
    at.toggle(key="cam_on").set_value(False).run()
    without = at.image[0].proto.imgs[0].url
    assert len({plain, with_cam, without}) == 3  # three different pictures


def test_multilabel_label_selector_changes_the_cases(app, multilabel_run: Path):
    at = app(multilabel_run)
    oof = pd.read_csv(multilabel_run / "oof_predictions.csv")
    at.sidebar.radio(key="filter").set_value("false_negatives").run()
    for label, thr in (("effusion", THRESHOLD), ("nodule", 0.6)):
        at.sidebar.selectbox(key="target").set_value(label).run()
        expected = oof.loc[(oof[f"label_{label}"] == 1) & (oof[f"score_{label}"] < thr), "image_id"].tolist()
        assert _case_table(at)["image"].tolist() == expected


def test_agreement_tab_reports_cohens_kappa(app, run_dir: Path):
    from sklearn.metrics import cohen_kappa_score

    from medrec.review.store import Verdict

    store = VerdictStore(run_dir)
    decisions = {"img0": "1", "img1": "0", "img2": "0", "img3": "1", "img4": "0"}
    votes = {
        "ann": ["agree", "disagree", "agree", "agree", "agree"],
        "ben": ["agree", "disagree", "disagree", "disagree", "agree"],
    }
    for name, vs in votes.items():
        for (image_id, dec), v in zip(decisions.items(), vs):
            store.add(Verdict(image_id=image_id, reviewer=name, verdict=v, model_decision=dec))
    at = _tab(app(run_dir), "Agreement & export")
    pair = next(d.value for d in at.dataframe if "Cohen's κ" in d.value.columns)
    flip = {"agree": lambda d: d, "disagree": lambda d: "1" if d == "0" else "0"}
    labels = {n: [flip[v](d) for v, d in zip(vs, decisions.values())] for n, vs in votes.items()}
    assert pair["Cohen's κ"].iloc[0] == pytest.approx(cohen_kappa_score(labels["ann"], labels["ben"]))
    assert {b.label for b in at.download_button} == {
        "Download all verdicts (CSV)",
        "Download latest per reviewer (CSV)",
    }


def test_apps_entry_serves_the_same_page(monkeypatch: pytest.MonkeyPatch, run_dir: Path):
    assert ENTRY.read_text().count("\n") <= 4 and "from medrec.review.app import main" in ENTRY.read_text()
    monkeypatch.setenv("MEDREC_REVIEW_RUN", str(run_dir))
    at = AppTest.from_file(str(ENTRY), default_timeout=60).run()
    assert not at.exception and _current_case(at) == "img0" and len(at.image) == 1


def test_ct_volume_run_shows_each_slice_through_the_runs_first_window(app, volume_run: Path, monkeypatch):
    from medrec.review import display as D

    from .conftest import ct_volume

    reads = []
    prepare = D.prepare_display

    def recording(path, max_side=D.DEFAULT_MAX_SIDE, **kw):
        reads.append(kw.get("slice_index"))
        return prepare(path, max_side, **kw)

    monkeypatch.setattr(D, "prepare_display", recording)
    at = app(volume_run, case="head-s1")
    assert not at.error and len(at.image) == 1
    assert reads == [1, 3]  # this case's slice, then the next case's (prefetch)
    preset = at.selectbox(key="preset")
    assert preset.options[:4] == ["brain (40/80)", "subdural (80/200)", "bone (400/1800)", "auto"]
    assert preset.value == "brain (40/80)"
    assert at.slider(key="wc_head-s1_brain (40/80)").value == 40.0
    assert at.slider(key="ww_head-s1_brain (40/80)").value == 80.0
    pictures = {}
    for image_id, k in (("head-s1", 1), ("head-s3", 3)):
        at = app(volume_run, case=image_id)
        caption = next(c.value for c in at.caption if " px" in c.value)
        hu = ct_volume()[:, :, k]
        # The caption's value range is that of slice k: the app read that slice, not the middle one.
        assert caption.startswith(f"slice {k} of volume (0–4) · 32×24 px"), caption
        assert f"values {hu.min():g} to {hu.max():g}" in caption and "window C 40 / W 80" in caption
        pictures[image_id] = at.image[0].proto.imgs[0].url
    assert pictures["head-s1"] != pictures["head-s3"]
    at.selectbox(key="preset").set_value("subdural (80/200)").run()
    assert at.slider(key="wc_head-s3_subdural (80/200)").value == 80.0
    assert at.button(key="prev").disabled is False
    at.button(key="prev").click().run()  # the preset chosen stays for the next case
    assert _current_case(at) == "head-s1" and at.selectbox(key="preset").value == "subdural (80/200)"


def test_agreement_tab_shows_progress_and_opens_each_disagreement(app, run_dir: Path):
    from medrec.review.store import Verdict

    store = VerdictStore(run_dir)
    decisions = {"img0": "1", "img1": "0", "img2": "0", "img3": "1", "img4": "0", "img5": "1"}
    votes = {  # ann and cid disagree with ben on img1 and img3; cid is unsure on img2 (asserts nothing)
        "ann": {"img0": "agree", "img1": "agree", "img2": "agree", "img3": "agree"},
        "ben": {"img0": "agree", "img1": "disagree", "img3": "disagree"},
        "cid": {"img2": "unsure"},
    }
    for name, vs in votes.items():
        for image_id, v in vs.items():
            store.add(Verdict(image_id=image_id, reviewer=name, verdict=v, model_decision=decisions[image_id]))
    at = app(run_dir, filter="false_negatives")  # a filter that hides img3
    at.session_state["tab"] = "Agreement & export"
    at.run()
    progress = next(d.value for d in at.dataframe if "share" in d.value.columns)
    n_cases = len(pd.read_csv(run_dir / "oof_predictions.csv"))
    assert progress.set_index("reviewer")["reviewed"].to_dict() == {n: len(v) for n, v in votes.items()}
    assert progress.set_index("reviewer")["share"].to_dict() == pytest.approx(
        {n: len(v) / n_cases for n, v in votes.items()})
    # By hand: a case is disputed when two reviewers' implied labels differ.
    implied = {"agree": lambda d: d, "disagree": lambda d: "1" if d == "0" else "0"}
    labels: dict[str, set] = {}
    for vs in votes.values():
        for image_id, v in vs.items():
            if v in implied:
                labels.setdefault(image_id, set()).add(implied[v](decisions[image_id]))
    disputed = sorted(i for i, ls in labels.items() if len(ls) > 1)
    assert disputed == ["img1", "img3"]
    opens = [b for b in at.button if b.key.startswith("open_disagreement_")]
    rows = [m.value for m in at.markdown if m.value.startswith("`img")]
    assert len(opens) == len(disputed) and [r.split("`")[1] for r in rows] == disputed
    assert any(h.startswith("##### Cases where reviewers disagree (2)") for h in (m.value for m in at.markdown))
    opens[1].click().run()  # one click: the Review tab with img3, though the filter had hidden it
    assert not at.exception and at.session_state["tab"] == "Review"
    assert _current_case(at) == "img3"

"""Two runs of the same config on CPU give the same metrics.json, apart from the volatile fields."""

import json

from tests.conftest import ROOT, run_finetune


def test_same_config_twice_gives_identical_metrics_json(samples_run, short_run_args, tmp_path):
    first, _ = samples_run
    second = tmp_path / "again"
    res = run_finetune("--config", ROOT / "configs" / "chest_xray.yaml", *short_run_args, "--out", second)
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((first / "metrics.json").read_text())
    b = json.loads((second / "metrics.json").read_text())
    volatile = set(a["volatile_fields"])
    assert {"created", "finished", "wall_time_s", "run_dir"} <= volatile
    assert a["volatile"]["run_dir"] != b["volatile"]["run_dir"]  # the fields that must differ do
    strip = lambda m: json.dumps({k: v for k, v in m.items() if k != "volatile"}, sort_keys=True)  # noqa: E731
    assert strip(a) == strip(b)
    # the raw files too, once the volatile block is removed from the text
    assert (first / "oof_predictions.csv").read_bytes().replace(str(first).encode(), b"") == \
        (second / "oof_predictions.csv").read_bytes().replace(str(second).encode(), b"")
    html = (first / "report.html").read_text()
    for field in ("created", "wall_time_s", "run_dir"):
        assert field in html  # the report names the fields that are allowed to differ

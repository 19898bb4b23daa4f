"""The `medrec` command: each verb runs the same main as `python -m medrec.X`, one error rule."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import medrec
from medrec import cli
from medrec.errors import ConfigError, MedrecError
from medrec.exitcodes import EXIT_ERROR, EXIT_INTERRUPTED, handle_errors

ROOT = Path(__file__).resolve().parents[1]
# verb -> the module `python -m` runs for it (issue 18.3's list, plus tune)
PYTHON_M = {"finetune": "medrec.finetune", "predict": "medrec.predict", "report": "medrec.report",
            "review": "medrec.review.__main__", "index": "medrec.index", "export": "medrec.export",
            "preview": "medrec.preview", "weights": "medrec.weights", "samples": "medrec.samples.__main__",
            "tune": "medrec.tune", "explain": "medrec.explain_run"}  # python -m medrec.explain runs explain_run


def help_text(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("verb", sorted(PYTHON_M))
def test_each_verb_is_its_python_m_main(verb, capsys):
    module_main = importlib.import_module(PYTHON_M[verb]).main
    assert cli.verb_main(verb) is module_main
    expected = help_text(module_main, ["--help"], capsys)
    assert help_text(cli.main, [verb, "--help"], capsys) == expected and "usage:" in expected


def test_every_verb_of_the_issue_is_a_subcommand():
    wanted = {"finetune", "predict", "report", "review", "index", "export", "preview", "weights", "explain",
              "samples", "tune"}
    assert set(cli.COMMANDS) == wanted


def test_python_m_medrec_explain_runs_explain_run(tmp_path):
    """`python -m medrec.explain` (the library module's __main__ block) and `medrec explain` are one main."""
    res = subprocess.run([sys.executable, "-m", "medrec.explain", str(tmp_path / "no-run")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == EXIT_ERROR and res.stderr.startswith("error: ") and "Traceback" not in res.stderr


def test_version_is_the_installed_distribution_and_pyproject(capsys):
    assert help_text(cli.main, ["--version"], capsys).strip() == f"medrec {medrec.__version__}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert medrec.__version__ == project["version"] == importlib.metadata.version("medrec")


def test_no_verb_or_an_unknown_one_is_a_usage_error(capsys):
    for argv in ([], ["trian"], ["--bogus", "finetune"]):
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        assert stop.value.code == EXIT_ERROR
        assert "usage: medrec" in capsys.readouterr().err


def test_handler_prints_one_line_and_returns_2(capsys):
    @handle_errors
    def main(argv=None):
        raise ConfigError("model.arch 'resnet5' unknown; valid: resnet18, resnet34")

    assert main([]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err == "error: ConfigError: model.arch 'resnet5' unknown; valid: resnet18, resnet34\n"


def test_handler_maps_ctrl_c_to_130_and_keeps_bugs_loud(capsys):
    @handle_errors
    def interrupted(argv=None):
        raise KeyboardInterrupt

    @handle_errors
    def buggy(argv=None):
        raise ZeroDivisionError("a bug")

    assert interrupted([]) == EXIT_INTERRUPTED and "interrupted" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):  # not a user error: the traceback stays
        buggy([])


def test_a_real_cli_error_through_medrec_and_python_m_is_the_same(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert cli.main(["finetune", "--config", str(missing)]) == EXIT_ERROR
    via_cli = capsys.readouterr().err
    assert importlib.import_module("medrec.finetune").main(["--config", str(missing)]) == EXIT_ERROR
    via_module = capsys.readouterr().err
    assert via_cli == via_module and via_cli.startswith("error: ") and str(missing) in via_cli
    assert via_cli.count("\n") == 1  # one line, no traceback


def test_the_openmp_wait_policy_is_set_before_the_verb_runs(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("KMP_BLOCKTIME", "7")  # a user's own setting wins
    seen = {}
    monkeypatch.setattr(cli, "verb_main", lambda verb: lambda argv: seen.update(
        omp=os.environ.get("OMP_WAIT_POLICY"), kmp=os.environ["KMP_BLOCKTIME"]) or 0)
    assert cli.main(["finetune"]) == 0
    assert seen == {"omp": "PASSIVE", "kmp": "7"}


def test_missing_optional_module_names_the_extra(monkeypatch):
    def fail(name):
        raise ModuleNotFoundError("No module named 'optuna'")

    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(MedrecError, match=r"medrec\[tune\]"):
        cli.verb_main("tune")

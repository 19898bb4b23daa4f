"""Issue 18 Must-show: the built wheel, installed without -e, works from outside the checkout.

The wheel is built from a copy of the sources (the checkout gets no build/ folder) and installed
with `pip install --no-deps --no-index` into a fresh virtual environment. That environment reuses
the pinned stack already installed in this one, without a download: a .pth file points at a
folder of links to this environment's site-packages, minus medrec itself (so only the wheel's
medrec can be imported). Every command then runs from a temporary folder outside the checkout:
--version, the --help of review and predict, `medrec samples`, a 1-epoch `medrec finetune` on them, and
`medrec review` of that run serving its page on loopback (stopped by its PID).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

import medrec

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "train.epochs=1", "--set", "cv.folds=2", "--set", "data.image_size=64",
        "--set", "eval.bootstrap=20", "--quiet"]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    return env


def run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "medrec", src / "medrec", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("medrec-*.whl")
    return wheel


def fresh_venv(tmp: Path) -> Path:
    """A venv whose own site-packages is empty and that sees this environment's packages but medrec."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # Named site-packages like any installed stack: streamlit treats a copy of itself elsewhere as a
    # development checkout (global.developmentMode), which refuses server.port.
    stack = tmp / "stack" / "site-packages"
    stack.mkdir(parents=True)
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("medrec", "__editable__")) and entry.suffix != ".pth":
            (stack / entry.name).symlink_to(entry)
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
    Path(purelib.stdout.strip(), "zz_pinned_stack.pth").write_text(f"{stack}\n")
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(venv, wheel): the wheel installed into a fresh venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    venv = fresh_venv(tmp)
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)], cwd=tmp)
    return venv, wheel


def test_wheel_carries_the_app_the_samples_and_their_configs(installed):
    names = set(zipfile.ZipFile(installed[1]).namelist())
    for needed in ("medrec/review/app.py", "medrec/samples/chest_xray.py", "medrec/samples/configs/chest_xray.yaml",
                   "medrec/samples/configs/ct_head.yaml", "medrec/samples/configs/mri_brain.yaml", "medrec/cli.py"):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "medrec = medrec.cli:main" in zipfile.ZipFile(installed[1]).read(entry_points).decode()


def test_installed_commands_work_outside_the_checkout(installed, tmp_path):
    venv, _ = installed
    bin_ = venv / "bin"
    where = run([str(bin_ / "python"), "-c", "import medrec; print(medrec.__file__)"], cwd=tmp_path).stdout
    assert Path(where.strip()).is_relative_to(venv) and not Path(where.strip()).is_relative_to(ROOT)
    assert run([str(bin_ / "medrec"), "--version"], cwd=tmp_path).stdout.strip() == f"medrec {medrec.__version__}"
    for cmd in ([str(bin_ / "medrec"), "review", "--help"], [str(bin_ / "python"), "-m", "medrec.review", "--help"],
                [str(bin_ / "python"), "-m", "medrec.predict", "--help"]):
        assert "usage:" in run(cmd, cwd=tmp_path).stdout


def test_quickstart_samples_then_finetune(installed, tmp_path):
    """`medrec samples demo && medrec finetune --config demo/chest_xray.yaml`, shortened."""
    medrec_bin = str(installed[0] / "bin" / "medrec")
    run([medrec_bin, "samples", "demo", "--set", "chest_xray", "--patients", "12"], cwd=tmp_path)
    assert (tmp_path / "demo" / "chest_xray.yaml").is_file()
    res = run([medrec_bin, "finetune", "--config", "demo/chest_xray.yaml", *TINY, "--out", "runs/demo"], cwd=tmp_path)
    run_dir = tmp_path / "runs" / "demo"
    for name in ("run.json", "metrics.json", "oof_predictions.csv", "report.html"):
        assert (run_dir / name).is_file(), name
    assert res.stderr.count("RANDOM INITIALISATION") == 1  # issue 18.4: said once
    assert_review_serves(medrec_bin, run_dir, tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_review_serves(medrec_bin: str, run_dir: Path, cwd: Path) -> None:
    """`medrec review RUN` from the wheel starts the app on loopback and serves its page."""
    port = free_port()
    server = subprocess.Popen([medrec_bin, "review", str(run_dir), "--port", str(port)], cwd=cwd, env=clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, health = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as r:
                    health = r.read().decode()
                break
            except OSError:
                time.sleep(1)
        if health != "ok":
            server.terminate()
            pytest.fail(f"review server did not come up (exit {server.poll()}):\n{server.communicate(timeout=30)[0][-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200 and "<html" in r.read().decode().lower()
    finally:
        server.terminate()
        server.wait(timeout=30)

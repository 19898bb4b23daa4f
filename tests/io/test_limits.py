"""medrec.io.limits: crafted bombs refused from their headers by every reader, in bounded memory.

Each consumer (read_image, the indexer, predict's preprocessing chain) runs in a child process that
reads the whole crafted corpus (`crafted.py`) and reports, per file, the error and the CPU time of
the call; the child's peak RSS comes from `resource.getrusage`. The real `python -m medrec.predict` is
measured whole, per file: it checks the headers (`medrec.io.preflight`) before it imports torch. Truths: the sizes the files declare,
pydicom's own decode of a genuine deflated file, and Pillow's MAX_IMAGE_PIXELS before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import uid

from medrec.errors import ImageTooLargeError
from medrec.io import limits
from medrec.io.dicom import read_dicom
from medrec.io.images import read_image
from medrec.io.limits import Limits, check_size, use_limits

sys.path.insert(0, str(Path(__file__).parent))
import crafted  # noqa: E402

PSEUDONYM_KEY = "0123456789abcdef0123456789abcdef"  # predict's DICOM pseudonyms, fixed for the tests
MAX_RSS_MB = 500
MAX_CPU_S = 2.0
DICOM_FILES = ("deflate.dcm", "rle.dcm", "jpeg.dcm", "lying.dcm")

CHILD = r"""
import json, resource, sys, time
from pathlib import Path

def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024

def rss_now():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20

consumer, folder = sys.argv[1], Path(sys.argv[2])
import pydicom, PIL.Image, nibabel  # noqa: F401 - imports are not what is measured
if consumer == "read_image":
    from medrec.io.images import read_image
    def consume(path):
        read_image(path)
        return None
elif consumer == "indexer":
    from medrec.io.index import index_tree
    from medrec.privacy import PseudonymKey
    key = PseudonymKey(b"test-key-0123456789abcdef", "test")
    def consume(path):
        result = index_tree(path.parent, key=key)
        assert result.manifest.empty, "indexed as a normal row"
        return result.errors["reason"].tolist() or ["skipped: not DICOM"]
else:  # predict: the preprocessing chain predict's ImageDataset runs on every input
    from medrec.config import DataConfig
    from medrec.data.transforms import ERROR_KEY, preprocess_transforms
    pre = preprocess_transforms(DataConfig(skip_bad_images=True))
    def consume(path):
        return [pre({"image": str(path), "slice": -1}).get(ERROR_KEY, "read")]
baseline = rss_now()
for path in sorted(folder.glob("*/*")):
    cpu0, wall0 = usage()[0], time.perf_counter()
    try:
        out, error = consume(path), None
    except Exception as exc:
        out, error = None, f"{type(exc).__name__}: {exc}"
    cpu1, peak = usage()
    print(json.dumps({"file": path.name, "error": error, "out": out, "cpu_s": cpu1 - cpu0,
                      "wall_s": time.perf_counter() - wall0, "peak_mb": peak, "baseline_mb": baseline}))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One sub-folder per crafted file (the indexer walks a folder)."""
    root = tmp_path_factory.mktemp("crafted")
    for name, write in crafted.WRITERS.items():
        (root / name.split(".")[0]).mkdir()
        write(root / name.split(".")[0] / name)
    return root


def run_child(consumer: str, corpus: Path) -> dict[str, dict]:
    # Linux carries a process's peak RSS across fork + exec (ru_maxrss keeps the pre-exec high-water
    # mark), so a child of this pytest process (torch loaded by other tests) would report pytest's peak.
    # A small launcher in between makes the measured child start from a fresh, small high-water mark.
    launcher = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", launcher, sys.executable, "-c", CHILD, consumer, str(corpus)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]  # the child exits normally: no abort, no OOM kill
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == len(crafted.WRITERS), proc.stdout
    return {r["file"]: r for r in rows}


def test_read_image_refuses_every_crafted_file(corpus):
    rows = run_child("read_image", corpus)
    for name, r in rows.items():
        assert r["error"] and r["error"].startswith("ImageTooLargeError: "), (name, r)
        assert name in r["error"] and ("io.max_pixels" in r["error"] or "io.max_bytes" in r["error"])
        assert r["cpu_s"] <= MAX_CPU_S and r["peak_mb"] <= MAX_RSS_MB, (name, r)
    assert "inflates to more than" in rows["deflate.dcm"]["error"]
    assert "46000 x 46000" in rows["rle.dcm"]["error"] and "46000 x 46000" in rows["jpeg.dcm"]["error"]
    assert "30000 x 30000" in rows["huge.nii.gz"]["error"] and "12000 x 12000" in rows["big.png"]["error"]
    assert "codestream) declares 40000 x 40000" in rows["lying.dcm"]["error"]  # header said 64 x 64


def test_indexer_flags_crafted_dicoms_in_its_errors(corpus):
    rows = run_child("indexer", corpus)
    for name, r in rows.items():
        assert r["error"] is None and r["cpu_s"] <= MAX_CPU_S and r["peak_mb"] <= MAX_RSS_MB, (name, r)
        if name in DICOM_FILES:
            assert "io.max_" in r["out"][0], (name, r)  # an error row naming the limit, not a manifest row
        else:
            assert r["out"] == ["skipped: not DICOM"]  # the indexer indexes DICOM only


@pytest.mark.slow  # imports torch and MONAI in the child (20 s on a loaded 2-core machine)
def test_predict_chain_refuses_every_crafted_file(corpus):
    rows = run_child("predict", corpus)
    for name, r in rows.items():
        assert r["error"] is None and "ImageTooLargeError" not in r["out"][0]  # message, not the class
        assert "io.max_pixels" in r["out"][0] or "io.max_bytes" in r["out"][0], (name, r)
        # torch's import sets the high-water mark; what the refusals add on top is what is bounded
        assert r["cpu_s"] <= MAX_CPU_S and r["peak_mb"] - r["baseline_mb"] <= MAX_RSS_MB, (name, r)


# Runs `python -m medrec.predict ...` (argv[1:]) and prints, on stdout, the CLI process's own exit code,
# CPU time and peak RSS (getrusage of its waited-for child: this small launcher is its only parent, so
# the high-water mark it starts from is the launcher's ~10 MB, not pytest's).
CLI_LAUNCHER = r"""
import json, resource, subprocess, sys
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "cpu_s": r.ru_utime + r.ru_stime, "peak_mb": r.ru_maxrss / 1024}))
"""


@pytest.fixture(scope="module")
def config_only_run(tmp_path_factory) -> Path:
    """A run folder with just its config.yaml (configs/chest_xray.yaml resolved): predict reads it and
    refuses the inputs before it would look for a fold checkpoint."""
    from medrec.config import load_config, save_config

    run = tmp_path_factory.mktemp("config_only_run")
    with use_limits(None):  # load_config sets the process's io limits; keep this process's as they were
        save_config(load_config(Path(__file__).parents[2] / "configs" / "chest_xray.yaml"), run / "config.yaml")
    return run


def predict_cli(run: Path, input_path: Path, out: Path) -> tuple[dict, str]:
    cli = [sys.executable, "-m", "medrec.predict", "--run", str(run), "--input", str(input_path), "--out", str(out)]
    env = {**os.environ, "MEDREC_PSEUDONYM_KEY": PSEUDONYM_KEY}  # never the account's own key file
    proc = subprocess.run([sys.executable, "-c", CLI_LAUNCHER, *cli], capture_output=True, text=True, timeout=300,
                          env=env)
    return json.loads(proc.stdout.splitlines()[-1]), proc.stderr


def test_predict_cli_refuses_each_crafted_file_before_loading_a_model(corpus, config_only_run, tmp_path):
    """The real CLI on each bomb, and on the folder of all of them: exit 2 (nothing left to predict), every
    file named with the limit it breaks, no output file, <= 2 s CPU and <= 500 MB peak RSS per process
    (it never imports torch: ~200 MB and ~1.5 s CPU, nearly all of it pandas/pydicom imports)."""
    files = sorted(corpus.glob("*/*"))
    for path in [*files, corpus]:
        out = tmp_path / path.name / "preds.csv"
        usage, stderr = predict_cli(config_only_run, path, out)
        print(f"predict --input {path.name}: exit {usage['rc']}, CPU {usage['cpu_s']:.2f} s, "
              f"peak RSS {usage['peak_mb']:.0f} MB")
        assert usage["rc"] == 2, stderr[-2000:]
        assert "DataError: nothing to predict" in stderr and "checked before loading any model" in stderr, stderr
        for f in files if path == corpus else [path]:
            line = next((ln for ln in stderr.splitlines() if str(f) in ln), "")
            assert "io.max_pixels" in line or "io.max_bytes" in line, (f.name, stderr[-2000:])
        assert f"all {len(files) if path == corpus else 1} input(s) refused" in stderr
        assert not out.parent.exists()  # refused before anything is written
        assert usage["cpu_s"] <= MAX_CPU_S and usage["peak_mb"] <= MAX_RSS_MB, (path.name, usage)


def test_predict_lists_a_bomb_in_its_errors_and_predicts_the_rest(samples_run, corpus, tmp_path, monkeypatch):
    """A folder of two genuine DICOMs and a PNG bomb, with the suite's trained run: the bomb is in
    preds.errors.csv with its limit, the two others are predicted, exit 0."""
    from medrec.predict import main as predict_main

    monkeypatch.setenv("MEDREC_PSEUDONYM_KEY", PSEUDONYM_KEY)
    folder = tmp_path / "scans"
    folder.mkdir()
    images = Path(__file__).parents[2] / "data_samples" / "chest_xray" / "images"
    for name in ("P001_1.dcm", "P002_1.dcm"):
        (folder / name).write_bytes((images / name).read_bytes())
    (folder / "big.png").write_bytes((corpus / "big" / "big.png").read_bytes())
    out = tmp_path / "out" / "preds.csv"
    with use_limits(None):
        assert predict_main(["--run", str(samples_run[0]), "--input", str(folder), "--out", str(out), "--quiet"]) == 0
    import pandas as pd

    preds, errors = pd.read_csv(out), pd.read_csv(out.parent / "preds.errors.csv")
    assert sorted(Path(p).name for p in preds["path"]) == ["P001_1.dcm", "P002_1.dcm"]
    assert preds["score"].between(0, 1).all()
    assert [Path(p).name for p in errors["path"]] == ["big.png"]
    assert "12000 x 12000" in errors["reason"][0] and "io.max_pixels" in errors["reason"][0]


def test_limits_can_be_raised_and_lowered(tmp_path):
    arr = np.arange(400, dtype=np.uint8).reshape(20, 20)
    Image.fromarray(arr).save(tmp_path / "a.png")
    with use_limits(Limits(max_pixels=399)), pytest.raises(ImageTooLargeError, match="20 x 20 = 400 pixels"):
        read_image(tmp_path / "a.png")
    with use_limits(Limits(max_bytes=399)), pytest.raises(ImageTooLargeError, match="io.max_bytes = 399"):
        read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png")[0], arr)
    assert limits.current_limits() == limits.DEFAULT_LIMITS


def test_raised_limit_reads_past_pillow_without_leaking_its_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow would raise above 200 pixels
    arr = np.zeros((30, 30), np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    with use_limits(Limits(max_pixels=1000)):
        np.testing.assert_array_equal(read_image(tmp_path / "a.png")[0], arr)
    assert Image.MAX_IMAGE_PIXELS == 100
    with pytest.raises(ImageTooLargeError, match="900 pixels"):
        with use_limits(Limits(max_pixels=500)):
            read_image(tmp_path / "a.png")


def test_genuine_deflated_dicom_reads_like_pydicom(tmp_path, write_dicom):
    pixels = np.random.default_rng(0).integers(0, 4096, (48, 40)).astype(np.uint16)
    source = write_dicom("x.dcm", pixels)
    import pydicom

    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "d.dcm", enforce_file_format=True)
    assert pydicom.dcmread(tmp_path / "d.dcm").file_meta.TransferSyntaxUID.is_deflated
    np.testing.assert_array_equal(read_dicom(tmp_path / "d.dcm")[0], read_dicom(source)[0])
    with use_limits(Limits(max_pixels=48 * 40 - 1)), pytest.raises(ImageTooLargeError, match="40 x 48"):
        read_dicom(tmp_path / "d.dcm")


def test_check_size_message_names_file_size_and_fix():
    with pytest.raises(ImageTooLargeError) as e:
        check_size("f.dcm", "DICOM header", 20000, 10000, limits=Limits(max_pixels=10**8))
    assert str(e.value).startswith("f.dcm: DICOM header declares 10000 x 20000 = 200,000,000 pixels")
    assert "raise io.max_pixels" in str(e.value)
    check_size("f.dcm", "DICOM header", 10000, 10000, limits=Limits(max_pixels=10**8))  # at the limit: allowed


def test_a_loaded_config_sets_the_limits_of_the_process(tmp_path):
    from medrec.config import load_config

    (tmp_path / "c.yaml").write_text("io: {max_pixels: 399, max_bytes: 5000}\n")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "a.png")
    with use_limits(None):  # restores the limits in force before, whatever load_config sets
        load_config(tmp_path / "c.yaml")
        assert limits.current_limits() == Limits(399, 5000)
        with pytest.raises(ImageTooLargeError, match="io.max_pixels = 399"):
            read_image(tmp_path / "a.png")
    assert limits.current_limits() == limits.DEFAULT_LIMITS

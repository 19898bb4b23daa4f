"""medrec.io.limits: crafted bombs refused from their headers by every reader, in bounded memory.

Each consumer (read_image, the indexer, predict's preprocessing chain) runs in a child process that
reads the whole crafted corpus (`crafted.py`) and reports, per file, the error and the CPU time of
the call; the child's peak RSS comes from `resource.getrusage`. Truths: the sizes the files declare,
pydicom's own decode of a genuine deflated file, and Pillow's MAX_IMAGE_PIXELS before and after.
"""

from __future__ import annotations

import json
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

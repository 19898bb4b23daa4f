"""Cache fill on real-size radiographs: medrec against a plain decode + resize, in the same run.

Generates radiograph-like files of 2-16 megapixels as public collections ship them: JPEG (grey, and
grey saved as RGB), 8- and 16-bit PNG, 16-bit DICOM (12 bits stored, no window: percentile scaling).
Then, in alternating rounds (so that load from other processes hits all pipelines alike), images/s of
  plain        Pillow / pydicom decode + float32 + box resize to the longest side + pad, one process
  plain draft  the same with Pillow's JPEG draft mode (the decoder's own 1/2..1/8 scaling)
  medrec full  medrec's preprocessing without early reduction (what the cache fill did before), 1 process
  medrec       medrec's cache fill (`medrec.data.cachefill.fill_cache`, early reduction) with
               data.num_workers = 0 (this process), 1 and 2 worker processes
Goal: medrec (0 workers) >= 0.8x plain; 2 workers near 2x 1 worker on 2 free cores. The load average
is printed: other processes on the machine slow every column, the ratios are what to read.

    python benchmarks/data_speed.py --real-size               # delegates here
    python benchmarks/data_speed_real.py --files 24 --size 224 --rounds 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = ((1500, 1400), (2500, 2000), (3000, 3000), (4000, 4000))  # 2.1, 5, 9, 16 megapixels
KINDS = ("jpeg_rgb", "jpeg", "png8", "png16", "dicom")


def radiograph(rows: int, columns: int, seed: int) -> np.ndarray:
    """A grey radiograph-like uint8 image (smooth body, lungs, ribs, noise), float32 maths."""
    rng = np.random.default_rng(seed)
    y = (np.arange(rows, dtype=np.float32) / rows)[:, None]
    x = (np.arange(columns, dtype=np.float32) / columns)[None, :]
    img = 60 + 120 * np.exp(-((x - 0.5) ** 2 / 0.12 + (y - 0.55) ** 2 / 0.2))
    img -= 70 * (np.exp(-((x - 0.32) ** 2 / 0.01 + (y - 0.5) ** 2 / 0.05))
                 + np.exp(-((x - 0.68) ** 2 / 0.01 + (y - 0.5) ** 2 / 0.05)))
    img += 25 * (np.sin(2 * np.pi * (y * 9 + 0.3 * np.abs(x - 0.5))) > 0.7)
    img += rng.normal(0, 4, (rows, columns)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_dicom(path: Path, pixels: np.ndarray) -> None:
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "CR", "MONOCHROME2", 1
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def generate(folder: Path, n: int) -> list[str]:
    """n files, cycling through formats and sizes (each size drawn once, saved in every format)."""
    from PIL import Image

    files = []
    for size in SIZES:
        grey = radiograph(*size, seed=size[0])
        for kind in KINDS:
            path = folder / f"{kind}_{size[0]}x{size[1]}" f"{'.dcm' if kind == 'dicom' else '.jpg' if 'jpeg' in kind else '.png'}"
            if kind == "jpeg_rgb":
                Image.fromarray(grey).convert("RGB").save(path, quality=90)
            elif kind == "jpeg":
                Image.fromarray(grey).save(path, quality=90)
            elif kind == "png8":
                Image.fromarray(grey).save(path, compress_level=6)
            elif kind == "png16":
                Image.fromarray(grey.astype(np.uint16) * 257).save(path, compress_level=6)
            else:
                write_dicom(path, grey.astype(np.uint16) * 16)
            files.append(str(path))
    return [files[i % len(files)] for i in range(n)]


def plain_one(path: str, size: int, draft: bool) -> np.ndarray:
    """Decode, float32, box resize of the longest side to `size`, pad to a square."""
    from PIL import Image

    if path.endswith(".dcm"):
        import pydicom

        arr = pydicom.dcmread(path).pixel_array.astype(np.float32)
        im = Image.fromarray(arr / 4095.0, "F")
    else:
        with Image.open(path) as im0:
            if draft and im0.format == "JPEG":
                im0.draft("L", (size, size))
            im0 = im0.convert("L") if im0.mode in ("RGB", "P") else im0
            arr = np.asarray(im0, dtype=np.float32)
        im = Image.fromarray(arr / (65535.0 if arr.max() > 255 else 255.0), "F")
    scale = size / max(im.size)
    im = im.resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))), Image.BOX)
    out = np.zeros((size, size), np.float32)
    a = np.asarray(im)
    out[: a.shape[0], : a.shape[1]] = a
    return out


def run_plain(files: list[str], size: int, draft: bool) -> float:
    start = time.perf_counter()
    for f in files:
        plain_one(f, size, draft)
    return len(files) / (time.perf_counter() - start)


def run_medrec(files: list[str], size: int, workers: int, reduce: bool) -> float:
    from medrec.config import DataConfig
    from medrec.data.cachefill import fill_cache
    from medrec.data.transforms import ERROR_KEY, preprocess_transforms

    pre = preprocess_transforms(DataConfig(image_size=size), reduce=reduce)
    items = [{"image": f, "index": i, "label": np.zeros(1), "slice": -1} for i, f in enumerate(files)]
    cpu0, start = cpu_seconds(), time.perf_counter()
    out = fill_cache(items, pre, workers)
    seconds = time.perf_counter() - start
    CPU_PER_IMAGE.setdefault(f"medrec {workers} workers" if reduce else "medrec full", []).append(
        (cpu_seconds() - cpu0) / len(files))
    bad = [d[ERROR_KEY] for d in out if ERROR_KEY in d]
    assert not bad, bad[:3]
    return len(files) / seconds


CPU_PER_IMAGE: dict[str, list[float]] = {}


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers, once joined)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(files: list[str], size: int, rounds: int) -> dict[str, list[float]]:
    runners = {
        "plain": lambda: run_plain(files, size, False),
        "plain draft": lambda: run_plain(files, size, True),
        "medrec full": lambda: run_medrec(files, size, 0, False),
        "medrec 0 workers": lambda: run_medrec(files, size, 0, True),  # in this process
        "medrec 1 worker": lambda: run_medrec(files, size, 1, True),
        "medrec 2 workers": lambda: run_medrec(files, size, 2, True),
    }
    run_medrec(files[:4], size, 0, True)  # imports and first-call costs out of the timings
    results: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        for name in (list(runners) if r % 2 == 0 else list(reversed(runners))):
            results[name].append(runners[name]())
            print(f"  round {r + 1} {name:<17} {results[name][-1]:6.1f} images/s  (load {load_avg()})", flush=True)
    return results


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(results: dict[str, list[float]], n: int, size: int) -> dict:
    best = {name: max(v) for name, v in results.items()}
    out = {"files": n, "size": size, "load_average_end": load_avg(), "images_per_s_best": best,
           "images_per_s_all": results,
           "medrec_0_vs_plain": best["medrec 0 workers"] / best["plain"],
           "medrec_0_vs_full": best["medrec 0 workers"] / best["medrec full"],
           "workers_2_vs_1": best["medrec 2 workers"] / best["medrec 1 worker"],
           "cpu_s_per_image_min": {k: min(v) for k, v in CPU_PER_IMAGE.items()}}
    print(f"\nbest of rounds, images/s ({n} files, 2-16 MP, target {size} px; load average {load_avg()}):")
    for name, v in best.items():
        print(f"  {name:<17} {v:6.1f}")
    print(f"medrec (0 workers) / plain: {out['medrec_0_vs_plain']:.2f}x;  / medrec full-resolution: "
          f"{out['medrec_0_vs_full']:.2f}x;  2 workers / 1 worker: {out['workers_2_vs_1']:.2f}x")
    # On a machine whose cores are busy, wall-clock scaling cannot show; CPU seconds per image can:
    # if two workers spend what one does per image, two free cores give twice the rate.
    print("CPU seconds per image (this process + its workers): " + ", ".join(
        f"{k} {v:.3f}" for k, v in out["cpu_s_per_image_min"].items()))
    out["sched_autogroup"] = _autogroup()
    if out["sched_autogroup"] == "1":
        print("note: sched_autogroup_enabled=1 — the kernel shares CPU between sessions, so while other sessions "
              "keep the cores busy, more worker processes of this one get no more CPU in total")
    return out


def _autogroup() -> str | None:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"writing {args.files} radiograph-sized files (load {load_avg()}) ...", flush=True)
        files = generate(Path(tmp), args.files)
        out = report(measure(files, args.size, args.rounds), args.files, args.size)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

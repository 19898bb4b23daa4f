"""Data speed: medrec's DICOM pipeline against plain pydicom + numpy, and against the model.

On the same DICOM files, in one process, images/s of
  plain      pydicom read + modality LUT + window + MONOCHROME1 flip + area resize (PIL) +
             random affine (PIL, bilinear), one file after another: what a hand-written loop costs
  uncached   medrec: `cache: none`, every item read, windowed, resized and augmented each epoch
  cache fill medrec: building the in-memory CacheDataset (read + window + resize, once per run)
  cached     medrec: one training epoch from the filled cache (augment + normalise + collate)
  model      ResNet-18 training steps at the same image size on in-memory tensors (bare loop)
each through MONAI's DataLoader with 0 and 2 workers where medrec's loader is involved, and the
cache's memory per 1,000 images (filled with --cache-items links to the files: nbytes of the
cached tensors, growth of resident memory, tracemalloc's peak). Goal: cached images/s >= 3x the
model's images/s. All images/s figures except the cache fill are taken in alternating rounds (one
epoch of each pipeline, a few model steps; order flipped each round) so that load from other
processes hits them alike. Torch's thread count matters on a loaded machine: compare --threads 1.

    python benchmarks/data_speed.py                                  # data_samples/chest_xray
    python benchmarks/data_speed.py --data DIR_OF_DICOMS --size 128 --json out.json
    python benchmarks/data_speed.py --real-size [--files 20 --size 224]   # benchmarks/data_speed_real.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def list_files(data: Path) -> tuple[list[str], list[int]]:
    """DICOM paths (and labels, from manifest.csv when there is one, else 0)."""
    man = data / "manifest.csv"
    if man.exists():
        import pandas as pd

        t = pd.read_csv(man)
        labels = t["label"].astype(int).tolist() if "label" in t.columns else [0] * len(t)
        return [str((data / p).resolve()) for p in t["path"]], labels
    files = sorted(str(p.resolve()) for p in data.rglob("*.dcm"))
    return files, [0] * len(files)


# ----------------------------------------------------------------------------- plain baseline

def plain_read(path: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """What a hand-written loop does: pydicom, LUTs, window, resize, random affine, in numpy/PIL."""
    import pydicom
    from PIL import Image
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    x = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        c = float(np.atleast_1d(ds.WindowCenter)[0])
        w = float(np.atleast_1d(ds.WindowWidth)[0])
        x = np.clip((x - (c - 0.5)) / max(w - 1, 1) + 0.5, 0, 1)
    else:
        lo, hi = np.percentile(x, (0.5, 99.5))
        x = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        x = 1.0 - x
    img = Image.fromarray(x.astype(np.float32), mode="F")
    scale = size / max(img.size)
    img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BOX)
    # random rotation / scale / shift about the centre: the ranges medrec's "light" preset had when measured
    # (issue 9; since issue 10 light is rotate +-7 deg, zoom 0.9-1.1, shift 6%, each with p 0.5)
    a, s = rng.uniform(-0.12, 0.12), 1 + rng.uniform(-0.1, 0.1)
    tx, ty = rng.uniform(-0.06, 0.06, 2) * size
    cx, cy = img.size[0] / 2, img.size[1] / 2
    ca, sa = np.cos(a) / s, np.sin(a) / s
    coeffs = (ca, sa, cx - ca * cx - sa * cy - tx, -sa, ca, cy + sa * cx - ca * cy - ty)
    img = img.transform(img.size, Image.AFFINE, coeffs, Image.BILINEAR)
    out = np.zeros((size, size), np.float32)
    arr = np.asarray(img)
    out[: arr.shape[0], : arr.shape[1]] = arr
    return out


def time_plain(files: list[str], size: int, epochs: int) -> float:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for f in files:
            plain_read(f, size, rng)
            n += 1
    return n / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- medrec pipeline

def medrec_cfg(data: Path, size: int, cache: str, workers: int, augment: str):
    from medrec.config import load_config

    return load_config(ROOT / "configs/chest_xray.yaml", [
        f"data.manifest={data / 'manifest.csv'}", f"data.image_size={size}", f"data.cache={cache}",
        f"data.num_workers={workers}", f"data.augment={augment}", "model.weights=none",
        "model.allow_random_init=false"])


def medrec_base(cfg, cache_root: Path):
    from medrec.data.datasets import build_base_dataset
    from medrec.data.sources import load_source

    manifest = load_source(cfg.data, ROOT)
    base, errors = build_base_dataset(manifest, cfg.data, cache_root, progress=False)
    if errors:
        print(f"  note: {len(errors)} file(s) unreadable: {errors[:2]}")
    return manifest, base


def medrec_loader(cfg, base, n: int, seed: int):
    """The loader a fold trains with (FoldDataset + random chain + MONAI DataLoader)."""
    from monai.data import DataLoader

    from medrec.data.datasets import FoldDataset
    from medrec.data.transforms import train_transforms
    from medrec.models.adapt import normalization
    from medrec.models.specs import get_spec

    mean, std = normalization(get_spec("resnet18"), 1)
    ds = FoldDataset(base, np.arange(n), train_transforms(cfg.data, mean, std, 1))
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, generator=gen,
                      num_workers=cfg.data.num_workers, persistent_workers=False)


_EPOCH = [0]


def epoch_run(cfg, base) -> tuple[int, float]:
    """One epoch over `base`; the loader is built inside the timing, as a fold does every epoch."""
    _EPOCH[0] += 1
    t0 = time.perf_counter()
    seen = sum(len(batch["image"]) for batch in medrec_loader(cfg, base, len(base), _EPOCH[0]))
    return seen, time.perf_counter() - t0


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def linked_copy(data: Path, n: int) -> Path:
    """A folder of `n` distinct hard links (copies across file systems) to the DICOMs of `data`,
    cycled, with its manifest: a cache of exactly n items. Symbolic links would not do: the
    manifest resolves them and rejects the repeated file."""
    import pandas as pd

    t = pd.read_csv(data / "manifest.csv")
    out = Path(tempfile.mkdtemp(prefix="medrec_ds_links_"))
    rows = []
    for i in range(n):
        r = t.iloc[i % len(t)]
        link = out / f"img{i:05d}.dcm"
        src = (data / r["path"]).resolve()
        try:
            os.link(src, link)
        except OSError:
            shutil.copyfile(src, link)
        rows.append({"path": link.name, "patient_id": f"{r['patient_id']}_{i // len(t)}", "label": r["label"]})
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    return out


def cache_fill(data: Path, size: int, workers: int, trace: bool = True) -> dict:
    """Time and memory of filling the in-memory cache (read + window + resize, float16).

    The cached items are MONAI MetaTensors (torch storage, which tracemalloc does not see), so
    memory is stated three ways: nbytes of the cached pixel tensors, growth of the process's
    resident memory while filling, and tracemalloc's peak (Python-side allocations only). The
    fill is timed without tracemalloc (it slows Python allocations several-fold); with `trace`,
    a second fill of the same items measures tracemalloc's peak.
    """
    import gc

    cfg = medrec_cfg(data, size, "memory", workers, "light")
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    manifest, base = medrec_base(cfg, Path(tempfile.mkdtemp(prefix="medrec_ds_")))
    seconds = time.perf_counter() - t0
    gc.collect()
    rss = rss_bytes() - rss0
    n = len(base)
    first = base[0]["image"]
    nbytes = sum(base[i]["image"].numel() * base[i]["image"].element_size() for i in range(n))
    peak = None
    if trace:
        tracemalloc.start()
        medrec_base(cfg, Path(tempfile.mkdtemp(prefix="medrec_ds_")))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"cfg": cfg, "base": base, "n": n, "images_per_s": n / seconds,
            "cache_nbytes_per_1000": nbytes / n * 1000, "rss_growth_per_1000": rss / n * 1000,
            "tracemalloc_peak_per_1000": peak / n * 1000 if peak is not None else None,
            "type": type(first).__name__, "dtype": str(first.dtype), "shape": list(first.shape)}


class ModelSteps:
    """ResNet-18 (1-channel stem, 1 output) training steps on in-memory tensors: the model's appetite."""

    def __init__(self, size: int, batch: int):
        import torchvision
        from torch import nn

        self.nn = nn
        self.net = torchvision.models.resnet18(weights=None, num_classes=1)
        self.net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3)
        self.x, self.y = torch.randn(batch, 1, size, size), torch.randint(0, 2, (batch, 1)).float()
        self.run(1)  # warm-up: allocator, oneDNN kernel choice

    def run(self, steps: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.opt.zero_grad(set_to_none=True)
            self.nn.functional.binary_cross_entropy_with_logits(self.net(self.x), self.y).backward()
            self.opt.step()
        return steps * len(self.x), time.perf_counter() - t0


PLAIN = "plain pydicom+numpy (read+window+resize+augment)"


def interleaved(runners: dict, rounds: int) -> dict[str, float]:
    """images/s of each runner (a callable returning (images, seconds)), measured once per round
    with the order flipped every round so that load from other processes lands on all alike."""
    totals = {k: [0, 0.0] for k in runners}
    names = list(runners)
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            n, sec = runners[k]()
            totals[k][0] += n
            totals[k][1] += sec
    return {k: n / sec for k, (n, sec) in totals.items()}


def measure(args, data: Path, files: list[str]) -> dict:
    res: dict = {"data": str(data), "n_files": len(files), "image_size": args.size, "batch_size": args.batch,
                 "rounds": args.epochs, "threads": torch.get_num_threads(), "load_before": load_avg()}
    time_plain(files[:4], args.size, 1)  # imports, decoder plugins
    uncached = {}
    for w in args.workers:
        cfg = medrec_cfg(data, args.size, "none", w, "light")
        uncached[w] = (cfg, medrec_base(cfg, Path(tempfile.mkdtemp(prefix="medrec_ds_")))[1])
    epoch_run(*uncached[min(args.workers)])  # medrec's and MONAI's lazy imports, before measuring memory
    links = linked_copy(data, args.cache_items)
    big = cache_fill(links, args.size, max(args.workers))
    shutil.rmtree(links, ignore_errors=True)
    fill_key = f"medrec cache fill, {big['n']} items ({max(max(args.workers), 1)} threads)"
    res["cache"] = {k: big[k] for k in ("n", "type", "dtype", "shape", "cache_nbytes_per_1000", "rss_growth_per_1000",
                                        "tracemalloc_peak_per_1000")}
    fill = cache_fill(data, args.size, max(args.workers), trace=False)
    model = ModelSteps(args.size, args.batch)
    runners = {PLAIN: lambda: (len(files), len(files) / time_plain(files, args.size, 1))}
    for w, (cfg, base) in uncached.items():
        runners[f"medrec uncached epoch, {w} workers"] = lambda cfg=cfg, base=base: epoch_run(cfg, base)
    for w in args.workers:
        cfg = fill["cfg"].model_copy(update={"data": fill["cfg"].data.model_copy(update={"num_workers": w})})
        runners[f"medrec cached epoch, {w} workers"] = lambda cfg=cfg: epoch_run(cfg, fill["base"])
    res["model_key"] = f"model: ResNet-18 training @ {args.size} px"
    runners[res["model_key"]] = lambda: model.run(args.model_steps)
    res["images_per_s"] = {fill_key: big["images_per_s"]} | interleaved(runners, args.epochs)
    res["load_after"] = load_avg()
    ips, appetite = res["images_per_s"], res["images_per_s"][res["model_key"]]
    res["ratio_cached_to_model"] = {k: v / appetite for k, v in ips.items() if k.startswith("medrec cached")}
    if 0 in args.workers:
        res["ratio_medrec_uncached0_to_plain"] = ips["medrec uncached epoch, 0 workers"] / ips[PLAIN]
    return res


def print_report(res: dict) -> None:
    ips, appetite = res["images_per_s"], res["images_per_s"][res["model_key"]]
    print()
    for k, v in ips.items():
        print(f"  {k:<56}{v:9.1f} images/s   ({v / appetite:5.2f}x the model)")
    print(f"\n  cached / model (best): {max(res['ratio_cached_to_model'].values()):.2f}x   (goal >= 3x)")
    c = res["cache"]
    print(f"  cache of {c['n']} items: {c['type']} {c['shape']} {c['dtype']} each; per 1,000 images: "
          f"{c['cache_nbytes_per_1000'] / 2**20:.1f} MiB of pixel tensors, resident memory grew "
          f"{c['rss_growth_per_1000'] / 2**20:.1f} MiB, tracemalloc peak (Python objects only) "
          f"{c['tracemalloc_peak_per_1000'] / 2**20:.1f} MiB")
    print(f"  load average before {res['load_before']}, after {res['load_after']}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--real-size" in argv:  # radiograph-sized JPEG/PNG/DICOM, cache fill vs plain decode (issue 18.6)
        from data_speed_real import main as real_size

        return real_size([a for a in argv if a != "--real-size"])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT / "data_samples/chest_xray",
                   help="folder of DICOMs (with manifest.csv: path,patient_id,label)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3, help="rounds: one epoch of each pipeline and the model's steps")
    p.add_argument("--model-steps", type=int, default=2, help="training steps of the model per round")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--threads", type=int, help="torch.set_num_threads in this process (default: torch's)")
    p.add_argument("--cache-items", type=int, default=1000,
                   help="fill a cache of this many items (hard links to the files, cycled) for the memory figure")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data.resolve()
    if not (data / "manifest.csv").exists():
        sys.exit(f"{data}: needs a manifest.csv (path,patient_id,label) for medrec's pipeline")
    files, _ = list_files(data)
    print(f"{len(files)} DICOM files in {data}; {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()} "
          f"(DataLoader workers run 1 each); load average {load_avg()}")
    res = measure(args, data, files)
    print_report(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

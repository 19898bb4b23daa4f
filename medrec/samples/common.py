"""What the sample generators share: noise, soft masks, DICOM file meta, the output folder and
manifest, and the command line of each generator."""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """White noise low-pass filtered with a Gaussian of `sigma` pixels, scaled to unit std."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    out = np.fft.ifft2(np.fft.fft2(white) * kernel).real
    return out / (out.std() + 1e-12)


def soft(signed: np.ndarray, edge: float) -> np.ndarray:
    """A soft mask: 1 inside (signed < 0), 0 outside, with a logistic edge of width `edge`."""
    return 1.0 / (1.0 + np.exp(np.clip(signed / edge, -60, 60)))


def file_meta(sop_class: str, sop_uid: str, syntax: str, implementation: tuple[str, str]) -> FileMetaDataset:
    """DICOM file meta with fixed implementation identifiers (bytes independent of pydicom's version)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID, meta.ImplementationVersionName = implementation
    return meta


def add_patient(ds: Dataset, p: dict) -> None:
    """The (invented) patient module and the phantom's maker: what the tests prove medrec never outputs."""
    ds.Manufacturer = "medrec synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.PatientName = p["name"]
    ds.PatientID = p["patient_id"]
    ds.PatientBirthDate = p["birth"].strftime("%Y%m%d")
    ds.PatientSex = p["sex"]


def prepare_folder(folder: Path, pattern: re.Pattern) -> None:
    """Create `folder`; remove generated files a smaller rerun would otherwise leave behind."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if pattern.fullmatch(old.name):
            old.unlink()


def write_manifest(out: Path, rows: list[dict], fields: list[str]) -> None:
    """`out/manifest.csv` with `fields` as columns, LF line ends (byte-identical on every OS)."""
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def generator_main(argv: list[str] | None, *, doc: str, generate: Callable[[Path, int], list[dict]],
                   default_out: Path, default_patients: int, what: str) -> None:
    """The command line of a generator: --out and --patients, then a one-line summary."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=default_out, help="output folder (default: %(default)s)")
    parser.add_argument("--patients", type=int, default=default_patients, help="number of pseudo-patients")
    args = parser.parse_args(argv)
    if args.patients < 1:
        parser.error("--patients must be at least 1")
    rows = generate(args.out, args.patients)
    positives = sum(r["label"] for r in rows)
    print(f"wrote {len(rows)} {what[0]} of {args.patients} patients ({positives} {what[1]}) to {args.out}")


def generator_cli(doc: str, generate: Callable[[Path, int], list[dict]], default_out: Path, default_patients: int,
                  what: tuple[str, str]) -> Callable[..., None]:
    """A generator module's `main(argv=None, default_out=...)`, the command line of generator_main."""
    def main(argv: list[str] | None = None, default_out: Path = default_out) -> None:
        generator_main(argv, doc=doc, generate=generate, default_out=default_out,
                       default_patients=default_patients, what=what)

    return main

"""How fast `medrec.io.index.index_tree` reads a DICOM tree, in files per second.

    python benchmarks/index_speed.py --files 2000 --size 64 --workers 1

Writes N uncompressed 16-bit DICOM files (four per patient, two per study, 5% truncated)
into a temporary folder, indexes them once, prints the rate. The first read of a file
comes from the page cache here, as it would right after copying a tree; a cold network
share is slower.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom import uid
from pydicom.dataset import FileDataset, FileMetaDataset

from medrec.io.index import index_tree
from medrec.privacy import PseudonymKey


def write_tree(root: Path, n: int, size: int, corrupt_every: int = 20) -> None:
    pixels = (np.arange(size * size) % 4096).astype("<u2").tobytes()
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        meta.MediaStorageSOPInstanceUID = uid.generate_uid()
        meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
        ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = "Bench^Patient", f"BENCH{i // 4:06d}"
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.9.7.{i // 2}"
        ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = [0.143, 0.143]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels
        folder = root / f"p{i // 4:05d}"
        folder.mkdir(exist_ok=True)
        path = folder / f"{i:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if i % corrupt_every == corrupt_every - 1:
            path.write_bytes(path.read_bytes()[: -size])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--size", type=int, default=64, help="rows = columns of each image")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    key = PseudonymKey(b"benchmark-key-0123456789", "benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_tree(Path(tmp), args.files, args.size)
        print(f"wrote {args.files} files of {args.size}x{args.size} in {time.perf_counter() - t0:.1f} s")
        result = index_tree(tmp, key=key, workers=args.workers)
    print(f"indexed {len(result.manifest)} images + {len(result.errors)} errors in {result.seconds:.2f} s: "
          f"{result.files_per_second:.0f} files/s (workers={args.workers})")


if __name__ == "__main__":
    main()

"""medrec.io.formats: one registry, so that every consumer lists the same files of a mixed folder.

Truth: what `read_image` does with each file (reads it, or refuses it for a reason other than
"not an image file"), compared with predict's folder scan, the indexer and the folder adapter.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medrec.config import DataConfig
from medrec.errors import DicomError, ImageError
from medrec.io.formats import DICOM, NIFTI, PILLOW, image_reader, scan_folder
from medrec.io.images import read_image
from medrec.io.index import index_tree
from medrec.privacy import PseudonymKey

KEY = PseudonymKey(b"test-key-0123456789abcdef", "test")


def predict_scan(root: Path) -> list[Path]:
    try:
        from medrec.infer.inputs import _scan_folder
    except ImportError:  # before predict became a package
        from medrec.predict import _scan_folder
    return _scan_folder(root)[0]


def mixed_class(folder: Path, dicom: Path, seed: int) -> None:
    """Every kind of file a real export folder holds, images and not."""
    folder.mkdir(parents=True)
    grey = np.random.default_rng(seed).integers(0, 256, (16, 12), dtype=np.uint8)
    Image.fromarray(grey).save(folder / "a.png")
    Image.fromarray(grey).convert("RGB").save(folder / "b.JPG")
    Image.fromarray(grey).save(folder / "c.tif")
    Image.fromarray(grey).convert("RGB").save(folder / "d.bmp")
    Image.fromarray(grey).save(folder / "export.dat", format="PNG")  # a PNG by signature only
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.int16), np.eye(4)), folder / "e.nii.gz")
    for name in ("f.dcm", "IM0001", "1.2.840.99.5", "scan.img"):  # suffix, none, UID-like, marker only
        shutil.copy(dicom, folder / name)
    (folder / "broken.png").write_bytes(b"not a png")  # listed by all, then refused when read
    (folder / "README.txt").write_text("scans from the ward\n")
    (folder / "labels.csv").write_text("path,label\n")
    (folder / ".hidden.png").write_bytes((folder / "a.png").read_bytes())
    (folder / "notes.gz").write_bytes(gzip.compress(b"x"))


@pytest.fixture()
def mixed(tmp_path, write_dicom) -> Path:
    dicom = write_dicom("src.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8))
    root = tmp_path / "data"
    mixed_class(root / "NORMAL", dicom, 0)
    mixed_class(root / "PNEUMONIA", dicom, 1)
    return root


def read_image_set(root: Path) -> tuple[set[Path], set[Path]]:
    """(files read_image takes as images, of which DICOM), by what it does with each file."""
    images, dicoms = set(), set()
    for path in root.rglob("*"):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            meta = read_image(path)[1]
            is_dicom = meta["format"] == "dicom"
        except DicomError:
            is_dicom = True
        except ImageError as exc:
            if "not an image file" in str(exc):
                continue
            is_dicom = False
        images.add(path.resolve())
        if is_dicom:
            dicoms.add(path.resolve())
    return images, dicoms


def test_every_consumer_lists_the_same_files(mixed):
    images, dicoms = read_image_set(mixed)
    names = {p.name for p in images}
    assert names == {"a.png", "b.JPG", "c.tif", "d.bmp", "export.dat", "e.nii.gz", "f.dcm", "IM0001",
                     "1.2.840.99.5", "scan.img", "broken.png"}
    assert {p.resolve() for p in predict_scan(mixed)} == images
    assert {p.resolve() for p in scan_folder(mixed).images} == images
    from medrec.data.public import class_folders

    table = class_folders(DataConfig(source="folder", manifest=str(mixed)), mixed)
    assert {Path(p).resolve() for p in table["path"]} == images
    result = index_tree(mixed, key=KEY)  # the indexer indexes the DICOM among them
    indexed = {(mixed / p).resolve() for p in [*result.manifest["path"], *result.errors["path"]]}
    assert indexed == dicoms and len(dicoms) == 8


@pytest.mark.parametrize(("name", "head", "reader"), [
    ("x.PNG", b"", PILLOW), ("x.jpeg", b"", PILLOW), ("x.tiff", b"", PILLOW), ("x.nii", b"", NIFTI),
    ("x.nii.gz", b"", NIFTI), ("x.dcm", b"", DICOM), ("x.IMA", b"", DICOM), ("1.3.6.1.4", b"", DICOM),
    ("IM0001", b"", DICOM), ("x.bin", b"\0" * 128 + b"DICM", DICOM), ("x.dat", b"\xff\xd8\xff\xe0", PILLOW),
    ("x.dat", b"MM\0*", PILLOW), ("x.txt", b"hello", None), ("x.csv", b"a,b", None),
])
def test_image_reader_rules(tmp_path, name, head, reader):
    (tmp_path / name).write_bytes(head)
    assert image_reader(tmp_path / name) == reader

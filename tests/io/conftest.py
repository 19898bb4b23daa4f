"""Fixtures that write tiny DICOM files (a few pixels each) into tmp_path.

Every file carries made-up identifying attributes (`PHI`) so that tests can check they
never reach metadata, logs or error messages. Tests use the fixtures, not imports from
this module (a `conftest` import is ambiguous when several test folders have one).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import uid
from pydicom.dataset import FileDataset, FileMetaDataset

PHI = {
    "PatientName": "Doe^Jane^Secret",
    "PatientID": "MRN-4711-SECRET",
    "PatientBirthDate": "19450102",
    "AccessionNumber": "ACC-98765",
}
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"


def build_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool | None = None,
    sop_class: str = CT_IMAGE,
    modality: str = "CT",
    raw_bytes: bytes | None = None,
    **elements: Any,
) -> FileDataset:
    """A minimal valid single- or multi-frame image dataset holding `pixels` verbatim.

    `pixels` is (H, W), (F, H, W) or, with an RGB photometric, (H, W, 3). The stored bytes
    are `pixels` in little endian unless `raw_bytes` is given (to write exact bit
    patterns, e.g. 12-bit two's complement with zero high bits).
    """
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid.generate_uid(), uid.generate_uid()
    ds.Modality = modality
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    frames = pixels.shape[0] if pixels.ndim == 3 and not colour else 1
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i" if signed is None else signed)
    ds.PixelData = raw_bytes if raw_bytes is not None else pixels.astype(
        pixels.dtype.newbyteorder("<")
    ).tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture
def write_dicom(tmp_path: Path) -> Callable[..., Path]:
    """write_dicom(name, pixels, *, compress=None, **build_dataset kwargs) -> path."""

    def write(name: str, pixels: np.ndarray, *, compress: str | None = None, **kw: Any) -> Path:
        ds = build_dataset(pixels, **kw)
        if compress is not None:
            ds.compress(compress)
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        return path

    return write


@pytest.fixture
def build_dicom() -> Callable[..., FileDataset]:
    """The `build_dataset` function, for tests that edit a dataset before saving it."""
    return build_dataset


@pytest.fixture
def phi() -> dict[str, str]:
    """The identifying values written into every fixture file."""
    return dict(PHI)


@pytest.fixture
def ramp() -> np.ndarray:
    """A 12-bit unsigned 16 x 16 ramp covering 0..4095 (both ends included)."""
    return np.linspace(0, 4095, 256).round().astype(np.uint16).reshape(16, 16)


def jpeg_lossless(arr: np.ndarray, precision: int = 12) -> bytes:
    """Encode `arr` (unsigned, < 2**precision) as JPEG Lossless, predictor 1 (ITU T.81 H).

    Written here from the standard, so that decoding it through pydicom's plugins is
    checked against the array itself rather than against another library's encoder.
    Huffman table: categories 0..16 each a 5-bit code equal to the category.
    """
    x = arr.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]  # first row: left neighbour
    pred[1:, 0] = x[:-1, 0]  # first column: the pixel above
    pred[1:, 1:] = x[1:, :-1]  # predictor 1: left neighbour
    bits = []
    for diff in (x - pred).ravel():
        size = int(abs(diff)).bit_length()
        bits.append(format(size, "05b"))
        if size:
            value = diff if diff > 0 else diff - 1 + (1 << size)  # one's complement
            bits.append(format(int(value), f"0{size}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)  # pad with 1-bits
    data = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i : i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)  # byte stuffing
    height, width = arr.shape
    sof3 = b"\xff\xc3" + struct.pack(">HBHHB", 11, precision, height, width, 1) + b"\x01\x11\x00"
    counts = [0] * 16
    counts[4] = 17  # 17 codes of length 5
    dht = b"\xff\xc4" + struct.pack(">HB", 2 + 1 + 16 + 17, 0) + bytes(counts) + bytes(range(17))
    sos = b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, 1, 0x00, 1, 0, 0)
    return b"\xff\xd8" + sof3 + dht + sos + bytes(data) + b"\xff\xd9"


@pytest.fixture
def encode_jpeg_lossless() -> Callable[..., bytes]:
    """The `jpeg_lossless` encoder."""
    return jpeg_lossless

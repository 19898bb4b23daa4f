"""Crafted files whose headers declare far more than they hold: decompression bombs and size lies.

Each writer makes a small file (well under a megabyte) that a naive reader would decode into
gigabytes. Written by hand from the format specifications (zlib, struct, pydicom for the DICOM
header), so that nothing here allocates what the files declare.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

DEFLATE_INFLATED = 512 << 20  # the deflated DICOM's pixel data inflates to 512 MiB
HUGE = 46000  # rows and columns the RLE and JPEG DICOMs declare


def _dicom_header(rows: int, columns: int, bits: int = 16) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR
    ds.SOPInstanceUID = uid.generate_uid()
    ds.Modality = "CR"
    ds.PatientID = "CRAFTED-1"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    return ds


def _part10(ds: Dataset, syntax: str, body: bytes) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    fp = DicomBytesIO()
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    return fp.getvalue() + body


def _explicit_le(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def deflate_dicom(path: Path) -> Path:
    """Deflated Explicit VR LE; declares 1024 x 1024 x 16 bit but its pixel data inflates to 512 MiB."""
    ds = _dicom_header(1024, 1024)
    comp = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)  # level 1: fast to write, still ~2 MB
    pixel_tag = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, DEFLATE_INFLATED)
    parts = [comp.compress(_explicit_le(ds) + pixel_tag)]
    zeros = bytes(16 << 20)
    parts += [comp.compress(zeros) for _ in range(DEFLATE_INFLATED // len(zeros))]
    parts.append(comp.flush())
    path.write_bytes(_part10(ds, uid.DeflatedExplicitVRLittleEndian, b"".join(parts)))
    return path


def _encapsulated(path: Path, syntax: str, fragment: bytes, bits: int) -> Path:
    ds = _dicom_header(HUGE, HUGE, bits)
    data = encapsulate([fragment]) + b"\xfe\xff\xdd\xe0\0\0\0\0"  # + sequence delimiter
    tag = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    path.write_bytes(_part10(ds, syntax, _explicit_le(ds) + tag + data))
    return path


def rle_dicom(path: Path) -> Path:
    """RLE Lossless, 46000 x 46000 x 8 bit declared, one 80-byte segment."""
    header = struct.pack("<16I", 1, 64, *([0] * 14))  # one segment at offset 64
    return _encapsulated(path, uid.RLELossless, header + bytes([0x81, 0]) * 8, 8)


def jpeg_dicom(path: Path) -> Path:
    """JPEG Baseline, 46000 x 46000 x 8 bit declared; the fragment is a real 8 x 8 JPEG."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "JPEG")
    return _encapsulated(path, uid.JPEGBaseline8Bit, buf.getvalue(), 8)


def jpeg_dicom_lying(path: Path) -> Path:
    """JPEG Baseline DICOM whose header says 64 x 64 but whose codestream (SOF) says 40000 x 40000."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "JPEG")
    jpeg = bytearray(buf.getvalue())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 40000, 40000)  # height, width
    ds = _dicom_header(64, 64, 8)
    data = encapsulate([bytes(jpeg)]) + b"\xfe\xff\xdd\xe0\0\0\0\0"
    tag = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    path.write_bytes(_part10(ds, uid.JPEGBaseline8Bit, _explicit_le(ds) + tag + data))
    return path


def nifti_huge(path: Path) -> Path:
    """A .nii.gz whose header declares 30000 x 30000 x 4 int16 voxels (7.2 GB); holds a few bytes."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((30000, 30000, 4))
    raw = header.binaryblock + b"\0" * 4 + bytes(4096)  # 348-byte header, extension flag, some data
    path.write_bytes(gzip.compress(raw))
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_144mp(path: Path, side: int = 12000) -> Path:
    """An 8-bit grey PNG of 12000 x 12000 = 144 megapixels, all zeros (about 140 KB)."""
    comp = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0 + zeros
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


def tiff_bomb(path: Path, side: int = 11000) -> Path:
    """A little-endian TIFF declaring side x side 8-bit grey in one deflate strip of zeros.

    11000^2 = 1.21e8 pixels: above medrec's default limit, below the size at which Pillow itself
    raises (2 x MAX_IMAGE_PIXELS), so medrec's own check is what refuses it.
    """
    strip = zlib.compress(bytes(side) * 64)  # a few rows; the decoder would allocate the whole image
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, len(strip))]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = data_offset if tag == 273 else value
        fmt = "<HHIHH" if kind == 3 else "<HHII"
        ifd += struct.pack(fmt, tag, kind, count, value, 0) if kind == 3 else struct.pack(fmt, tag, kind, count, value)
    path.write_bytes(b"II*\0" + struct.pack("<I", ifd_offset) + ifd + struct.pack("<I", 0) + strip)
    return path


WRITERS = {
    "deflate.dcm": deflate_dicom,
    "rle.dcm": rle_dicom,
    "jpeg.dcm": jpeg_dicom,
    "lying.dcm": jpeg_dicom_lying,
    "huge.nii.gz": nifti_huge,
    "big.png": png_144mp,
    "bomb.tif": tiff_bomb,
}


def write_all(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write(folder / name) for name, write in WRITERS.items()}

"""Decoded-size limits, checked from the header before any pixel is decoded.

A 758-byte RLE DICOM can declare 46000 x 46000 pixels, a 140 KB PNG 144 megapixels, a 500 KB
deflated DICOM can inflate to gigabytes: decoders allocate what the header says (a native one may
abort the process). Every reader checks the header's size here first and refuses with
`ImageTooLargeError`, naming the file, the size and the setting that raises the limit.

`Limits` holds `io.max_pixels` (per frame) and `io.max_bytes` (decoded bytes of what is
decoded: one frame, or one NIfTI slice). The active limits are process-wide (`set_limits`,
`use_limits`); entry points set them from the config's `io:` section.
"""

from __future__ import annotations

import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from medrec.errors import ImageTooLargeError

__all__ = [
    "Limits", "DEFAULT_LIMITS", "current_limits", "set_limits", "use_limits", "check_size",
    "pillow_limits", "inflate_bounded",
]


@dataclass(frozen=True)
class Limits:
    """Largest image medrec decodes.

    max_pixels: per frame. The default, 10^8, is about four times the largest digital
        mammograms (4096 x 5625 = 2.3e7) and full-field radiographs (4300 x 4300 = 1.8e7).
    max_bytes: decoded bytes of one frame (pixels x samples x bytes per sample). 1 GiB by default:
        10^8 16-bit pixels with three samples is 600 MB.
    """

    max_pixels: int = 100_000_000
    max_bytes: int = 1 << 30


DEFAULT_LIMITS = Limits()
_active = DEFAULT_LIMITS
_pillow_lock = threading.Lock()


def current_limits() -> Limits:
    """The limits readers use when they are not given any."""
    return _active


def set_limits(limits: Limits | Any | None) -> None:
    """Make `limits` (a Limits or an object with max_pixels/max_bytes, e.g. the `io:` config
    section) the process-wide default; None restores the defaults."""
    global _active
    _active = DEFAULT_LIMITS if limits is None else Limits(int(limits.max_pixels), int(limits.max_bytes))


@contextmanager
def use_limits(limits: Limits | Any | None) -> Iterator[None]:
    """Use `limits` inside the block (tests, one-off reads), then restore the previous ones."""
    previous = _active
    set_limits(limits)
    try:
        yield
    finally:
        set_limits(previous)


def check_size(
    path: Any, what: str, rows: int, columns: int, *, samples: int = 1, bytes_per_sample: float = 1,
    frames: int = 1, limits: Limits | None = None,
) -> None:
    """Refuse an image whose declared size is above the limits, before it is decoded.

    Args:
        what: the format and where the size comes from, e.g. "DICOM header", "PNG".
        frames: how many frames will be decoded (medrec decodes one).

    Raises:
        ImageTooLargeError: pixels per frame above max_pixels, or decoded bytes above max_bytes.
    """
    lim = limits or _active
    rows, columns = int(rows), int(columns)
    if rows < 0 or columns < 0:
        raise ImageTooLargeError(f"{path}: {what} declares a negative size ({columns} x {rows})")
    pixels = rows * columns
    if pixels > lim.max_pixels:
        raise ImageTooLargeError(
            f"{path}: {what} declares {columns} x {rows} = {pixels:,} pixels per frame, above "
            f"io.max_pixels = {lim.max_pixels:,}; refused before decoding. If the image is genuine, "
            "raise io.max_pixels in the config"
        )
    nbytes = int(pixels * max(1, int(samples)) * bytes_per_sample * max(1, int(frames)))
    if nbytes > lim.max_bytes:
        raise ImageTooLargeError(
            f"{path}: {what} declares {columns} x {rows} x {samples} sample(s) x {frames} frame(s) x "
            f"{bytes_per_sample:g} byte(s) = {nbytes:,} decoded bytes, above io.max_bytes = "
            f"{lim.max_bytes:,}; refused before decoding. If the image is genuine, raise io.max_bytes"
        )


@contextmanager
def pillow_limits(limits: Limits | None = None) -> Iterator[None]:
    """Pillow's decompression-bomb check at medrec's limit, for the `Image.open` inside the block.

    medrec checks the size itself (`check_size`) before `load()`, so Pillow's warning above
    MAX_IMAGE_PIXELS is silenced here. Pillow's own error (at twice MAX_IMAGE_PIXELS) would refuse
    images a raised io.max_pixels allows: only then is MAX_IMAGE_PIXELS raised, for the duration of
    the block and under a lock, and put back afterwards, so no process-wide change leaks out.
    """
    from PIL import Image

    lim = limits or _active
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        current = Image.MAX_IMAGE_PIXELS
        if current is None or lim.max_pixels <= 2 * current:
            yield
            return
        with _pillow_lock:
            Image.MAX_IMAGE_PIXELS = lim.max_pixels
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = current


def inflate_bounded(
    src: BinaryIO, limit: int, *, path: Any = "", prefix: bool = False, chunk: int = 1 << 20
) -> bytes:
    """Inflate a raw deflate stream (DICOM Deflated Explicit VR Little Endian) of at most `limit` bytes.

    Streamed: at most one chunk beyond the limit is ever held, never the unbounded result.
    With `prefix`, return the first `limit` bytes instead of refusing a longer stream (for reading
    the header before the size of the rest is known).

    Raises:
        ImageTooLargeError: the stream inflates to more than `limit` bytes.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    while True:
        data = inflater.unconsumed_tail or src.read(chunk)
        if not data:
            break
        out += inflater.decompress(data, chunk)
        if prefix and len(out) >= limit:
            return bytes(out[:limit])
        if len(out) > limit:
            raise ImageTooLargeError(
                f"{path}: the deflated DICOM data inflates to more than {limit:,} bytes, more than its "
                "header declares or than io.max_bytes allows; refused (a decompression bomb, or raise "
                "io.max_bytes if the file is genuine)"
            )
        if inflater.eof:
            break
    out += inflater.flush()
    return bytes(out)


# --------------------------------------------------------------------------- per-format headers

_FLOAT_BITS = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}


def check_dicom_header(ds: Any, path: Any, *, frames: int = 1, limits: Limits | None = None) -> None:
    """Rows x Columns x SamplesPerPixel x `frames` x BitsAllocated/8 of a header-only dataset.

    A header without Rows/Columns is left to the reader (it is not an image).
    """
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if rows is None or columns is None:
        return
    keyword = next((k for k in _FLOAT_BITS if k in ds), "PixelData")
    bits = _int(ds, "BitsAllocated") or _FLOAT_BITS.get(keyword, 8)
    samples = _int(ds, "SamplesPerPixel") or 1
    check_size(path, "DICOM header", rows, columns, samples=samples, bytes_per_sample=max(bits, 8) / 8,
               frames=frames, limits=limits)


def check_pillow_image(im: Any, path: Any, *, limits: Limits | None = None) -> None:
    """The size of an opened, not yet loaded Pillow image (Pillow reads only the header on open)."""
    width, height = im.size
    # Pillow holds multi-band images in 4 bytes per pixel, I and F in 4, I;16 in 2, L/P/1 in 1.
    bands = len(im.getbands())
    per_pixel = 4 if bands > 1 or im.mode in ("I", "F") else 2 if im.mode.startswith("I;16") else 1
    check_size(path, im.format or "image", height, width, bytes_per_sample=per_pixel, limits=limits)


def check_nifti_header(shape: tuple[int, ...], itemsize: int, path: Any, *, limits: Limits | None = None) -> None:
    """One 2-D slice (first two axes) of a NIfTI volume of `shape`; medrec decodes one slice."""
    rows = shape[0] if len(shape) > 0 else 1
    columns = shape[1] if len(shape) > 1 else 1
    check_size(path, "NIfTI header", rows, columns, bytes_per_sample=max(int(itemsize), 1), limits=limits)


def _int(ds: Any, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- deflated DICOM

_DEFLATED = "1.2.840.10008.1.2.1.99"
# Elements before the pixel data (and after it) of a deflated file: read within this many bytes.
HEADER_BYTES = 16 << 20


def dcmread_bounded(path: Any, fp: BinaryIO | None = None, *, force: bool = False, **kwargs: Any) -> Any:
    """`pydicom.dcmread`, except that a deflated file is inflated within the limits.

    pydicom inflates a Deflated Explicit VR Little Endian file whole, unbounded, before it reads a
    single element. Here the first HEADER_BYTES are inflated, the header's declared size is checked
    (`check_dicom_header`, all frames: a deflated file cannot be decoded frame by frame), and the rest
    is inflated with a limit of what the header declares. Other files go to pydicom unchanged.

    Raises:
        ImageTooLargeError: the header declares, or the stream inflates to, more than allowed.
    """
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_preamble

    owned = fp is None
    fp = open(path, "rb") if fp is None else fp
    try:
        start = fp.tell()
        try:
            preamble = read_preamble(fp, force)
            meta = _read_file_meta_info(fp)
        except Exception:  # noqa: BLE001 - pydicom reports it properly below
            meta = {}
        if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED:
            fp.seek(start)
            return pydicom.dcmread(fp if not owned else path, force=force, **kwargs)
        return _read_deflated(fp, path, preamble, meta, kwargs)
    finally:
        if owned:
            fp.close()


def _read_deflated(fp: BinaryIO, path: Any, preamble: Any, meta: Any, kwargs: dict[str, Any]) -> Any:
    from pydicom.dataset import FileDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    body = fp.tell()
    head = inflate_bounded(fp, HEADER_BYTES, path=path, prefix=True)
    header = read_dataset(DicomBytesIO(head), False, True, stop_when=_at_pixels)
    frames = _int(header, "NumberOfFrames") or 1
    check_dicom_header(header, path, frames=frames)
    rows, columns = _int(header, "Rows") or 0, _int(header, "Columns") or 0
    bits = _int(header, "BitsAllocated") or 8
    declared = rows * columns * (_int(header, "SamplesPerPixel") or 1) * frames * max(bits, 8) // 8
    fp.seek(body)
    data = inflate_bounded(fp, declared + HEADER_BYTES, path=path)
    buffer = DicomBytesIO(data)
    buffer.name = str(path)
    stop = _at_pixels if kwargs.get("stop_before_pixels") else None
    dataset = read_dataset(buffer, False, True, stop_when=stop, specific_tags=kwargs.get("specific_tags"))
    ds = FileDataset(buffer, dataset, preamble, meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


def _at_pixels(tag: Any, vr: Any, length: Any) -> bool:
    return int(tag) >= 0x7FE00008  # FloatPixelData, DoubleFloatPixelData, PixelData


# --------------------------------------------------------------------------- compressed DICOM frames

_JPEG_SYNTAX_PREFIXES = ("1.2.840.10008.1.2.4.",)  # JPEG, JPEG-LS, JPEG 2000, HTJ2K
_CODESTREAM_HEAD = 64 << 10


def check_dicom_frame(ds: Any, path: Any, name: Any = None) -> None:
    """The one frame medrec decodes, from a header-only dataset: Rows x Columns x ... (check_dicom_header)
    and, for the JPEG family of transfer syntaxes, the codestream's own size (check_dicom_codestream).
    `name`: how messages name the file (default `path`)."""
    check_dicom_header(ds, name or path)
    meta = getattr(ds, "file_meta", None)
    check_dicom_codestream(ds, path, meta.get("TransferSyntaxUID", "") if meta is not None else "", name)


def check_dicom_codestream(ds: Any, path: Any, syntax: Any, name: Any = None) -> None:
    """The first frame's JPEG / JPEG 2000 codestream size, which the decoder allocates by, whatever
    Rows and Columns say. Reads at most 64 KB at the pixel data's offset; a file whose codestream
    cannot be parsed here is left to the decoder (which then fails on its own terms). `name`: how the
    message names the file (default `path`).
    """
    if not str(syntax).startswith(_JPEG_SYNTAX_PREFIXES) or "PixelData" not in ds:
        return
    head = _first_fragment_head(ds, path)
    size = _codestream_size(head) if head else None
    if size is not None:
        rows, columns, samples, nbytes = size
        check_size(name or path, "compressed pixel data (codestream)", rows, columns, samples=samples,
                   bytes_per_sample=nbytes)


def _first_fragment_head(ds: Any, path: Any) -> bytes | None:
    """First bytes of the first fragment after the Basic Offset Table, from the file or memory."""
    import struct

    from pydicom.dataelem import RawDataElement

    elem = ds.get_item("PixelData", keep_deferred=True)
    if isinstance(elem, RawDataElement) and elem.value is None and getattr(elem, "value_tell", None) is not None:
        with open(path, "rb") as f:
            f.seek(elem.value_tell)
            data = f.read(_CODESTREAM_HEAD)
    else:
        value = elem.value if isinstance(elem, RawDataElement) else ds.PixelData
        data = bytes(value[:_CODESTREAM_HEAD]) if isinstance(value, (bytes, bytearray)) else b""
    offset = 0
    for _ in range(2):  # the Basic Offset Table item, then the first fragment's item
        if len(data) < offset + 8 or data[offset:offset + 4] != b"\xfe\xff\x00\xe0":
            return None
        length = struct.unpack("<I", data[offset + 4:offset + 8])[0]
        if _ == 0:
            offset += 8 + length
        else:
            return data[offset + 8:offset + 8 + min(length, _CODESTREAM_HEAD)]
    return None


def _codestream_size(head: bytes) -> tuple[int, int, int, float] | None:
    """(rows, columns, components, bytes per sample) of a JPEG (SOF) or JPEG 2000 (SIZ) codestream."""
    import struct

    if head[:4] == b"\xff\x4f\xff\x51" and len(head) >= 42:  # J2K: SOC, then SIZ
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", head[8:24])
        components = struct.unpack(">H", head[40:42])[0]
        return max(ysiz - yo, 0), max(xsiz - xo, 0), components, 2.0
    if head[:2] == b"\xff\xd8":
        from pydicom.pixels.utils import _get_jpg_parameters

        info = _get_jpg_parameters(head)
        if "height" in info and "width" in info:
            return info["height"], info["width"], info.get("components", 1), 2.0 if info.get("precision", 8) > 8 else 1.0
    return None

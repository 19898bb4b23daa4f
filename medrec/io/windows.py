"""Windows: map image values onto [0, 1] for the network and for display. Array in, array out.

`apply_window` is the DICOM VOI window (PS3.3 C.11.2.1.2-3); presets are the CT windows of
`medrec.names.WINDOW_PRESETS` in Hounsfield units; `scale_minmax` / `scale_percentile` scale by
the image's own values. `scale_window` picks one of these from a `data.window` value;
`check_window` validates one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medrec.errors import ConfigError
from medrec.names import WINDOW_NAMES, WINDOW_PRESETS

__all__ = [
    "WINDOW_PRESETS", "WINDOW_NAMES", "PERCENTILES", "apply_window", "named_windows", "scale_minmax",
    "scale_percentile", "scale_window", "check_window", "has_voi_lut", "apply_voi_lut",
]

PERCENTILES = (0.5, 99.5)


def apply_window(
    arr: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """Map `arr` through a DICOM VOI window (PS3.3 C.11.2.1.2-3) onto [0, 1].

    Args:
        arr: values in the units of the window (HU for CT presets).
        center, width: the window; LINEAR needs width >= 1, the others width > 0.
        function: VOI LUT Function: LINEAR (DICOM default), LINEAR_EXACT or SIGMOID.

    Returns:
        float32 array in [0, 1].

    Raises:
        ValueError: invalid width or unknown function.
    """
    x = np.asarray(arr, dtype=np.float64)
    center, width, function = float(center), float(width), function.upper()
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"window width {width} must be >= 1 for LINEAR")
        if width == 1:  # the linear ramp degenerates into a threshold at center - 0.5
            return (x > center - 0.5).astype(np.float32)
        out = (x - (center - 0.5)) / (width - 1) + 0.5
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"window width {width} must be > 0 for LINEAR_EXACT")
        out = (x - center) / width + 0.5
    elif function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"window width {width} must be > 0 for SIGMOID")
        # clip the exponent: exp overflows (harmlessly, but with a warning) beyond ~709
        out = 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - center) / width, -700.0, 700.0)))
    else:
        raise ValueError(
            f"VOI LUT function '{function}' unknown; valid: LINEAR, LINEAR_EXACT, SIGMOID"
        )
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def named_windows(windows: Sequence[Any]) -> list[tuple[str, float, float]]:
    """(name, center, width) of each entry of a window list such as `data.channels`: preset names
    keep their name, [center, width] pairs are called 'window <i>' (1-based)."""
    out = []
    for i, w in enumerate(windows, 1):
        name, (c, width) = (w, WINDOW_PRESETS[w]) if isinstance(w, str) else (f"window {i}", w)
        out.append((name, float(c), float(width)))
    return out


def scale_minmax(arr: np.ndarray, stats_from: np.ndarray | None = None) -> np.ndarray:
    """Scale to [0, 1] by the image's own minimum and maximum (a constant image -> 0).

    `stats_from`: take the minimum and maximum from this array instead (a strided sample of the
    full-resolution image when `arr` is a reduced one, whose averaging would pull them inwards).
    """
    x = np.asarray(arr, dtype=np.float64)
    ref = x if stats_from is None else np.asarray(stats_from, dtype=np.float64)
    lo, hi = float(np.min(ref)), float(np.max(ref))
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def scale_percentile(
    arr: np.ndarray, low: float = PERCENTILES[0], high: float = PERCENTILES[1],
    stats_from: np.ndarray | None = None,
) -> np.ndarray:
    """Clip to the [low, high] percentiles and scale to [0, 1].

    Robust to a few extreme pixels (burnt-in text, metal, padding) that would squash a
    min-max scaling. Falls back to min-max when the two percentiles coincide (images that
    are mostly one value). `stats_from`: the percentiles of this array instead (see scale_minmax).
    """
    x = np.asarray(arr, dtype=np.float64)
    ref = x if stats_from is None else np.asarray(stats_from, dtype=np.float64)
    lo, hi = np.percentile(ref, [low, high])
    if hi <= lo:
        return scale_minmax(x, stats_from)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def scale_window(arr: np.ndarray, window: Any, stats_from: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """Apply a window that needs nothing from the file: minmax, percentile, preset, (c, w).

    `stats_from` is passed to scale_minmax / scale_percentile.

    Returns the [0, 1] array and a short description of what was applied.

    Raises:
        ConfigError: `window` is not one of those.
    """
    if isinstance(window, str):
        if window == "minmax":
            return scale_minmax(arr, stats_from), "minmax"
        if window == "percentile":
            return scale_percentile(arr, stats_from=stats_from), f"percentile {PERCENTILES[0]}-{PERCENTILES[1]}"
        if window in WINDOW_PRESETS:
            center, width = WINDOW_PRESETS[window]
            return apply_window(arr, center, width), f"{window} ({center:g}, {width:g})"
    elif _is_center_width(window):
        center, width = (float(v) for v in window)
        try:
            return apply_window(arr, center, width), f"({center:g}, {width:g})"
        except ValueError as exc:
            raise ConfigError(f"window {tuple(window)!r}: {exc}") from exc
    check_window(window)  # raises for anything unknown
    raise ConfigError(f"window {window!r} needs the file (use it with read_dicom)")


def check_window(window: Any) -> None:
    """Raise ConfigError unless `window` is None, a window name or (center, width)."""
    if window is None or (isinstance(window, str) and window in WINDOW_NAMES):
        return
    if _is_center_width(window):
        return
    raise ConfigError(
        f"window {window!r} unknown; valid: None, {', '.join(WINDOW_NAMES)} "
        "or [center, width]"
    )


def _is_center_width(window: Any) -> bool:
    return (
        isinstance(window, Sequence)
        and not isinstance(window, str)
        and len(window) == 2
        and all(isinstance(v, (int, float, np.number)) for v in window)
    )


def has_voi_lut(ds: Any) -> bool:
    """True when the dataset carries a usable VOI LUT (LUT Descriptor and LUT Data)."""
    sequence = ds.get("VOILUTSequence")
    return bool(sequence) and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]


def apply_voi_lut(modality: np.ndarray, ds: Any) -> np.ndarray:
    """First VOI LUT of the file, normalised by its output range 0 .. 2**bits - 1.

    Not pydicom's `apply_voi`: pydicom 3.0 holds LUT indices in the LUT's output dtype,
    so an 8-bit LUT with more than 256 entries wraps its indices around (index 500 reads
    entry 244). Inputs below the first mapped value take the first entry, above the last
    the last entry (PS3.3 C.11.2.1.1).
    """
    item = ds.VOILUTSequence[0]
    n_entries, first, bits = (int(v) for v in item.LUTDescriptor)
    n_entries = n_entries or 65536  # 0 means 2**16 entries
    table = _lut_data(item, n_entries, bits, little_endian=ds.original_encoding[1] is not False)
    # LUT inputs are integers; floor keeps fractional modality values in their entry.
    index = np.clip(np.floor(modality).astype(np.int64) - first, 0, len(table) - 1)
    return np.clip(table[index] / (2**bits - 1), 0.0, 1.0)


def _lut_data(item: Any, n_entries: int, bits: int, little_endian: bool) -> np.ndarray:
    """LUT Data as float64, from US values or OW bytes (8-bit entries may be packed)."""
    value = item.LUTData
    if isinstance(value, bytes):
        if bits <= 8 and len(value) in (n_entries, n_entries + 1):
            table = np.frombuffer(value, dtype=np.uint8)  # packed 8-bit entries
        else:
            table = np.frombuffer(value, dtype=("<" if little_endian else ">") + "u2")
    else:
        table = np.atleast_1d(np.asarray(value, dtype=np.float64))
    return table[:n_entries].astype(np.float64)

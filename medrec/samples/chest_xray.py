"""Generate medrec's bundled sample data: synthetic chest-radiograph phantoms as DICOM.

Each pseudo-patient gets a body outline, two dark lung fields, a bright mediastinum,
heart and spine, faint rib arcs and clavicles, lung markings and noise; patients differ in
size, position, rotation, exposure and contrast. Label 1 ("opacity present") adds a
soft-edged bright blob or a patchy consolidation inside one lung field.

The files exercise the DICOM paths a real archive has: MONOCHROME1 and MONOCHROME2,
RescaleSlope/Intercept other than 1/0, 12 bits stored in 16 allocated, RLE Lossless and
uncompressed explicit-VR little endian, files with and without a VOI window, CR and DX.
Patient names, birth dates and IDs in the files are invented; the manifest carries only a
pseudonymous patient id (P001, ...).

Every patient is drawn from its own random stream seeded by (SEED, patient number), so
`--patients 3` writes byte-identical copies of the first three patients of the full set.

    medrec samples DIR                                     # every bundled set, with its config
    python -m medrec.samples.chest_xray --out /tmp/x --patients 3
    python data_samples/make_chest_xray.py                 # the committed copy in a checkout
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from medrec.samples.common import (add_patient, file_meta, generator_cli, prepare_folder, smooth_noise, soft,
                                  write_manifest)

SEED = 20240611
DEFAULT_PATIENTS = 30

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
# Fixed implementation identifiers, so the bytes do not change with the installed pydicom version.
IMPLEMENTATION_UID = generate_uid(entropy_srcs=["medrec", "synthetic-chest-xray", "implementation"])
IMPLEMENTATION_NAME = "MEDREC_SYNTH_1"
# (slope, intercept) pairs: stored * slope + intercept = modality value.
RESCALES = ((1.0, 0.0), (0.5, -1024.0), (2.0, -100.0), (1.0, -1024.0), (0.5, 0.0), (2.0, 0.0))
GIVEN = ("Alice", "Boris", "Celeste", "Dmitri", "Esme", "Florian", "Greta", "Hamish", "Ingrid", "Jasper",
         "Katya", "Lorcan", "Mirela", "Nestor", "Ottilie", "Piotr", "Quintana", "Rasmus", "Saoirse", "Tobiah")
GREEK = ("Zeta", "Theta", "Kappa", "Omicron", "Upsilon", "Lambda", "Sigma", "Epsilon", "Omega", "Iota")
FILE_RE = re.compile(r"P\d{3}_\d+\.dcm")
MANIFEST_COLUMNS = ["path", "patient_id", "label", "view", "sex", "age_band"]
# Age at the first study -> band, for subgroup results (eval.subgroups); wide, so each band has patients.
AGE_BANDS = ((50, "18-49"), (70, "50-69"), (200, "70+"))


@dataclass(frozen=True)
class Anatomy:
    """Per-patient geometry in normalised coordinates (x, y in [-1, 1], y downwards)."""

    cx: float
    cy: float
    scale: float
    lung_w: float
    lung_h: float
    heart: float
    rib_phase: float
    rib_curve: float


@dataclass(frozen=True)
class Opacity:
    """A lesion: side (-1 image-left lung, +1 image-right lung), centre in lung-relative units."""

    side: int
    u: float  # across the lung, -1..1
    v: float  # down the lung, -1..1
    radius: float  # normalised image units
    amplitude: float
    patchy: bool
    seed: int


def grid(rows: int, cols: int, shift: tuple[float, float], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates, shifted and rotated about the image centre (a per-image pose)."""
    y, x = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij")
    c, s = np.cos(angle), np.sin(angle)
    xr, yr = c * x + s * y, -s * x + c * y
    return xr - shift[0], yr - shift[1]


def lung_fields(a: Anatomy, x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, tuple[float, float]]]:
    """The two lung masks (soft), each with its centre, image-left lung first."""
    out = []
    for side in (-1, 1):
        lx = a.cx + side * 0.37 * a.scale
        ly = a.cy - 0.08 * a.scale
        w = a.lung_w * a.scale * (0.92 if side > 0 else 1.0)  # the heart takes room on the patient's left
        h = a.lung_h * a.scale
        v = (y - ly) / h
        u = (x - lx) / (w * (0.86 + 0.14 * np.clip(v, -1, 1)))  # narrow apex, wide base
        r = (np.abs(u) ** 2.4 + np.abs(v) ** 2.2) ** (1 / 2.3)
        mask = soft(r - 1, 0.05)
        out.append((mask, (lx, ly)))
    return out


def render(a: Anatomy, opacity: Opacity | None, shape: tuple[int, int], rng: np.random.Generator,
           shift: tuple[float, float], angle: float, ap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one radiograph in display units (0 = black air, 1 = bone white).

    Returns:
        (image, lung mask, opacity map): float arrays of `shape`; the lung mask is soft in [0, 1].
    """
    x, y = grid(*shape, shift, angle)
    s = a.scale
    img = np.full(shape, 0.04)
    # Body: a wide super-ellipse filling the frame vertically, narrowing to the neck at the top.
    neck = 0.45 + 0.55 * soft(-(y - a.cy + 0.72 * s), 0.04)
    body = soft((np.abs((x - a.cx) / (0.86 * s * neck)) ** 4 + np.abs((y - a.cy - 0.15) / (1.35 * s)) ** 4) ** 0.25 - 1, 0.03)
    img += 0.40 * body
    img += 0.06 * body * soft(-(y - a.cy - 0.55 * s), 0.1)  # abdomen below the diaphragm is denser
    # The heart (larger on AP: magnification) hides the medial base of the left lung.
    hs = a.heart * s * (1.12 if ap else 1.0)
    hx, hy = a.cx + 0.07 * s, a.cy + 0.36 * s
    heart = soft(np.hypot((x - hx) / (1.15 * hs), (y - hy) / hs) - 1, 0.04)
    lungs = [(m * (1 - heart), c) for m, c in lung_fields(a, x, y)]
    lung = np.clip(lungs[0][0] + lungs[1][0], 0, 1)
    img -= 0.26 * lung
    # Mediastinum and spine with vertebrae.
    img += 0.14 * body * soft(np.abs(x - a.cx) - 0.12 * s, 0.03)
    vert = 0.5 + 0.5 * np.cos((y - a.cy) * 26 / s)
    img += (0.10 + 0.05 * vert) * body * soft(np.abs(x - a.cx) - 0.07 * s, 0.015)
    img += 0.04 * heart
    # Posterior ribs: faint arcs across each hemithorax; clavicles across the apices.
    thorax = body * soft(np.abs(x - a.cx) - 0.78 * s, 0.05) * soft(y - a.cy - 0.5 * s, 0.06)
    for side in (-1, 1):
        dx = (x - a.cx) * side
        for k in range(9):
            y0 = a.cy + (-0.62 + 0.155 * k + a.rib_phase) * s
            arc = y - (y0 - a.rib_curve * dx + 0.9 * (dx - 0.35 * s) ** 2)
            img += 0.055 * thorax * (dx > 0.05 * s) * np.exp(-(arc / (0.018 * s)) ** 2)
        clav = y - (a.cy - 0.64 * s + 0.12 * dx - 0.25 * dx**2)
        img += 0.08 * body * (dx > 0.06 * s) * (dx < 0.6 * s) * np.exp(-(clav / (0.022 * s)) ** 2)
    img += lung * (0.018 * smooth_noise(rng, shape, 1.0) + 0.02 * smooth_noise(rng, shape, 4.0))  # vascular markings
    opac = np.zeros(shape) if opacity is None else draw_opacity(opacity, a, x, y, lungs, shape)
    img += opac
    return img, lung, opac


def draw_opacity(o: Opacity, a: Anatomy, x: np.ndarray, y: np.ndarray,
                 lungs: list[tuple[np.ndarray, tuple[float, float]]], shape: tuple[int, int]) -> np.ndarray:
    """A soft-edged bright blob, or a cluster of small ones (patchy consolidation), in one lung."""
    mask, (lx, ly) = lungs[0] if o.side < 0 else lungs[1]
    px = lx + o.u * 0.6 * a.lung_w * a.scale
    py = ly + o.v * 0.6 * a.lung_h * a.scale
    rng = np.random.default_rng(o.seed)  # same lesion shape on every image of the patient
    if not o.patchy:
        e = rng.uniform(0.7, 1.3)
        blob = np.exp(-(((x - px) / (o.radius * e)) ** 2 + ((y - py) * e / o.radius) ** 2) ** 1.3)
    else:
        blob = np.zeros(shape)
        for _ in range(int(rng.integers(4, 8))):
            qx, qy = px + rng.normal(0, 0.7 * o.radius), py + rng.normal(0, 0.9 * o.radius)
            r = o.radius * rng.uniform(0.35, 0.65)
            blob = np.maximum(blob, np.exp(-(((x - qx) ** 2 + (y - qy) ** 2) / r**2) ** 1.3))
        tex = smooth_noise(rng, shape, 2.0)
        blob *= np.clip(0.75 + 0.25 * tex, 0.3, 1.0)
    return o.amplitude * blob * mask


def draw_patient(index: int) -> dict:
    """All random choices for patient `index` (1-based), from its own stream."""
    rng = np.random.default_rng([SEED, index])
    pair = np.random.default_rng([SEED, 0, (index - 1) // 2])  # one positive per consecutive pair
    label = int((index - 1) % 2 == int(pair.integers(0, 2)))
    n_images = int(rng.choice([2, 3, 3, 4]))
    anatomy = Anatomy(
        cx=rng.uniform(-0.07, 0.07), cy=rng.uniform(-0.05, 0.05), scale=rng.uniform(0.84, 1.06),
        lung_w=rng.uniform(0.24, 0.28), lung_h=rng.uniform(0.54, 0.62), heart=rng.uniform(0.17, 0.21),
        rib_phase=rng.uniform(-0.04, 0.04), rib_curve=rng.uniform(0.05, 0.2),
    )
    lesion = Opacity(
        side=int(rng.choice([-1, 1])), u=rng.uniform(-0.6, 0.6), v=rng.uniform(-0.45, 0.75),
        radius=rng.uniform(0.13, 0.22), amplitude=rng.uniform(0.26, 0.38), patchy=bool(rng.random() < 0.35),
        seed=int(rng.integers(2**31)),
    )
    labels = [label] * n_images
    if index % 10 == 7:  # a follow-up whose finding differs: resolved, or newly appeared
        labels[-1] = 1 - label
    size = 160 if rng.random() < 0.25 else 128
    modality = "CR" if rng.random() < 0.5 else "DX"
    age = int(rng.integers(24, 88))
    first_study = dt.date(2021, 1, 4) + dt.timedelta(days=int(rng.integers(0, 900)))
    birth = first_study - dt.timedelta(days=365 * age + int(rng.integers(0, 365)))
    return {
        "index": index, "rng": rng, "labels": labels, "anatomy": anatomy, "lesion": lesion, "size": size,
        "modality": modality, "sex": str(rng.choice(["F", "M"])), "birth": birth, "first_study": first_study,
        "age": age,
        "name": f"Phantom^{GIVEN[(index - 1) % len(GIVEN)]} {GREEK[(index - 1) // len(GIVEN) % len(GREEK)]}",
        "patient_id": f"SYN-{int(rng.integers(10**5, 10**6)):06d}-{index:02d}",
    }


def draw_image(p: dict, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Image `k` (0-based) of patient `p`: pose, exposure and encoding for this study."""
    rng = p["rng"]
    ap = k > 0 and rng.random() < 0.5  # follow-ups are often portable AP films
    shift = (rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04))
    angle = np.deg2rad(rng.uniform(-4, 4))
    lesion = None
    if p["labels"][k]:
        g = p["lesion"]
        lesion = Opacity(g.side, g.u, g.v, g.radius * rng.uniform(0.85, 1.15),
                         g.amplitude * rng.uniform(0.85, 1.1), g.patchy, g.seed)
    shape = (p["size"], p["size"])
    img, lung, opac = render(p["anatomy"], lesion, shape, rng, shift, angle, ap)
    gamma = rng.uniform(0.8, 1.25)
    img = np.clip(img, 0, 1) ** gamma + rng.normal(0, rng.uniform(0.008, 0.02), shape)
    enc = {
        "ap": ap, "monochrome1": bool(rng.random() < 0.4), "rescale": RESCALES[int(rng.integers(len(RESCALES)))],
        "rle": bool(rng.random() < 0.35), "window": bool(rng.random() < 0.6),
        "offset": rng.uniform(120, 420), "span": rng.uniform(2700, 3500), "days": int(rng.integers(20, 200)),
    }
    return np.clip(img, 0, 1), lung, opac, enc


def to_stored(img: np.ndarray, enc: dict) -> np.ndarray:
    """Display picture -> 12-bit stored values; MONOCHROME1 stores it inverted so it displays the same."""
    shown = 1 - img if enc["monochrome1"] else img
    return np.clip(np.rint(enc["offset"] + enc["span"] * shown), 0, 4095).astype(np.uint16)


def make_dataset(p: dict, k: int, stored: np.ndarray, enc: dict, study_date: dt.date) -> Dataset:
    """A single-frame CR/DX dataset with file meta, deterministic UIDs and fake identifiers."""
    uid = lambda *parts: generate_uid(entropy_srcs=["medrec-synthetic", str(SEED), *map(str, parts)])  # noqa: E731
    sop_class = CR_STORAGE if p["modality"] == "CR" else DX_STORAGE
    sop_uid = uid(p["index"], k, "sop")
    ds = Dataset()
    ds.file_meta = file_meta(sop_class, sop_uid, ExplicitVRLittleEndian, (IMPLEMENTATION_UID, IMPLEMENTATION_NAME))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = f"{9 + k:02d}3000"
    ds.AccessionNumber = f"SYNACC{p['index']:03d}{k + 1}"
    ds.Modality = p["modality"]
    if p["modality"] == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.StudyDescription = "CHEST"
    ds.SeriesDescription = f"CHEST {'AP' if enc['ap'] else 'PA'}"
    add_patient(ds, p)
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "AP" if enc["ap"] else "PA"
    ds.StudyInstanceUID = uid(p["index"], k, "study")
    ds.SeriesInstanceUID = uid(p["index"], k, "series")
    ds.StudyID = f"{k + 1}"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    add_pixels(ds, stored, enc)
    return ds


def add_pixels(ds: Dataset, stored: np.ndarray, enc: dict) -> None:
    """The image pixel module: 12 bits in 16, rescale, an optional VOI window, RLE or uncompressed."""
    rows, cols = stored.shape
    spacing = f"{360.0 / rows:.4f}"  # a ~36 cm field of view
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if enc["monochrome1"] else "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = ds.ImagerPixelSpacing = [spacing, spacing]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    slope, intercept = enc["rescale"]
    if enc["window"]:
        # A display window on modality values, as a modality would set it from the histogram.
        modality_values = stored.astype(np.float64) * slope + intercept
        lo, hi = np.percentile(modality_values, [1, 99])
        ds.WindowCenter = f"{(lo + hi) / 2:.1f}"
        ds.WindowWidth = f"{hi - lo:.1f}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.tobytes()  # uint16 in native little-endian order
    if enc["rle"]:
        # The pure-Python encoder, so the bytes do not depend on which RLE plugin is installed.
        ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)



def age_band(age: int) -> str:
    """The manifest's age band of an age in years."""
    return next(band for upper, band in AGE_BANDS if age < upper)


def generate(out: Path, patients: int) -> list[dict]:
    """Write `patients` pseudo-patients under `out`; return the manifest rows."""
    prepare_folder(out / "images", FILE_RE)
    rows, seen_ids = [], set()
    for index in range(1, patients + 1):
        p = draw_patient(index)
        assert p["patient_id"] not in seen_ids, "raw patient ids must be unique"
        seen_ids.add(p["patient_id"])
        date = p["first_study"]
        for k in range(len(p["labels"])):
            img, _, _, enc = draw_image(p, k)
            stored = to_stored(img, enc)
            date = date + dt.timedelta(days=enc["days"] if k else 0)
            ds = make_dataset(p, k, stored, enc, date)
            rel = f"images/P{index:03d}_{k + 1}.dcm"
            ds.save_as(out / rel, enforce_file_format=True)
            rows.append({"path": rel, "patient_id": f"P{index:03d}", "label": p["labels"][k],
                         "view": ds.ViewPosition, "sex": p["sex"], "age_band": age_band(p["age"])})
    write_manifest(out, rows, MANIFEST_COLUMNS)
    return rows


main = generator_cli(__doc__, generate, Path("chest_xray"), DEFAULT_PATIENTS, ("images", "with opacity"))


if __name__ == "__main__":
    main()

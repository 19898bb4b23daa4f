"""The head CT phantom of the sample generator (medrec.samples.ct_head): anatomy, bleeds and
one slice in Hounsfield units; every random choice from streams seeded by (SEED, patient, slice).
The DICOM encoding of the slices is in medrec.samples.ct_head."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from medrec.samples.common import smooth_noise, soft

SEED = 20240917
SIZE = 128  # pixels per side of every slice
SUPERSAMPLE = 2  # geometry is drawn at 2x and averaged down: partial-volume edges, as in CT
AIR = -1000.0
HU_RANGE = (-1024.0, 2047.0)  # scanners clip air at -1024; 2047 fits every encoding below

# (PixelRepresentation, BitsStored, RescaleIntercept) as CT vendors write them, with weights:
# mostly unsigned with stored = HU + 1024, some signed with stored = HU.
ENCODINGS = ((0, 12, -1024.0), (0, 16, -1024.0), (1, 16, 0.0), (1, 12, 0.0))
ENCODING_WEIGHTS = (0.45, 0.2, 0.2, 0.15)
SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless)
SYNTAX_WEIGHTS = (0.35, 0.2, 0.45)  # RLE also keeps the folder small
GIVEN = ("Amara", "Bastian", "Cosima", "Desmond", "Elodie", "Fergus", "Giselle", "Horatio", "Isolde", "Joaquin",
         "Kalinda", "Leopold", "Marisol", "Nikolai", "Oriane", "Percival", "Rosalind", "Severin", "Thessaly", "Ulrich")
STARS = ("Vega", "Rigel", "Deneb", "Altair", "Mirach", "Alcor", "Mizar", "Shaula", "Adhara", "Nunki")


@dataclass(frozen=True)
class Head:
    """Per-patient anatomy and pose; lengths in mm, angles in radians, densities in HU."""

    a: float  # half-width (left-right) of the head where it is widest
    b: float  # half-length (front-back)
    outline: tuple[tuple[float, float], ...]  # (amplitude, phase) of outline harmonics 2, 3, 4
    scalp: float
    skull: float  # skull thickness at the temples
    skull_extra: float  # extra skull thickness, as a fraction, at the front and back
    table: float  # inner and outer tables
    diploe: float  # marrow space between them
    soft: float  # scalp
    grey: float
    white: float
    csf: float
    falx: float
    sinus: float  # superior sagittal sinus: size (mm) and density; a dense sinus mimics blood
    sinus_hu: float
    calcified: float  # HU of choroid-plexus and pineal calcifications; 0 = none
    cortex: float  # grey-matter ribbon depth
    gyri: tuple[tuple[int, float, float], ...]  # (harmonic, amplitude, phase) of the ribbon depth
    sulci: tuple[tuple[float, float], ...]  # (angle, depth) of each sulcus
    sulcus_width: float
    ventricles: float  # ventricle size factor; grows with age, like the sulci
    cx: float  # head centre relative to the reconstruction centre
    cy: float
    angle: float  # in-plane rotation (head tilted in the holder)
    cradle: float  # HU of the head holder


@dataclass(frozen=True)
class Bleed:
    """An acute haemorrhage: where it is, how big, how dense, and on which slices."""

    kind: str  # "subdural" (crescent on the inner table) or "intraparenchymal" (blob)
    side: int  # +1 image right (the patient's left), -1 image left
    first: int  # first and last slice (0-based, inclusive) that show it
    last: int
    angle: float  # subdural: centre of the crescent, about the head centre
    span: float  # subdural: half its angular extent
    size: float  # subdural thickness / intraparenchymal radius, in pixels
    u: float  # intraparenchymal centre, as fractions of the brain half-axes
    v: float
    hu: float
    seed: int


class Slice(NamedTuple):
    """One drawn slice: HU picture and boolean masks, all SIZE x SIZE."""

    hu: np.ndarray  # float HU, before rounding to stored integers
    bleed: np.ndarray  # haemorrhage pixels (mostly blood, clear of bone); empty exactly when the label is 0
    brain: np.ndarray  # intracranial space (inside the inner table)
    skull: np.ndarray


def mix(base: np.ndarray, value, weight: np.ndarray) -> np.ndarray:
    """Paint `value` over `base` with opacity `weight` (partial volume)."""
    return base + (value - base) * weight


def wrap(angle: np.ndarray) -> np.ndarray:
    """Angles to [-pi, pi)."""
    return np.mod(angle + np.pi, 2 * np.pi) - np.pi


def level_scale(h: float) -> float:
    """Head size at `h` mm above the third-ventricle level, relative to its widest (10 mm lower)."""
    return float(np.sqrt(1 - ((h + 10) / 105) ** 2))


def outer_radius(hd: Head, h: float, theta: np.ndarray) -> np.ndarray:
    """Distance from the head centre to the skin along direction `theta` at level `h` (mm)."""
    r = hd.a * hd.b / np.sqrt((hd.b * np.cos(theta)) ** 2 + (hd.a * np.sin(theta)) ** 2)
    for n, (amp, phase) in enumerate(hd.outline, start=2):
        r = r * (1 + amp * np.cos(n * theta - phase))
    return r * level_scale(h)


def skull_thickness(hd: Head, theta: np.ndarray) -> np.ndarray:
    """Thicker frontal and occipital bone (theta = -pi/2, pi/2) than temporal bone."""
    return hd.skull * (1 + hd.skull_extra * np.sin(theta) ** 2)


def inner_radius(hd: Head, h: float, theta) -> np.ndarray:
    """Distance from the head centre to the inner table (the edge of the brain), in mm."""
    theta = np.asarray(theta, dtype=float)
    return outer_radius(hd, h, theta) - hd.scalp - skull_thickness(hd, theta)


def ventricle_parts(h: float, size: float) -> list[tuple[float, float, float, float, float, float]]:
    """CSF spaces at level `h` as ellipses (u, v, half-width, half-length, rotation, weight).

    Reference-brain millimetres (u to image right, v posterior); a weight of 0 removes a part.
    Low levels show the butterfly of the frontal horns, the third ventricle and the atria;
    higher ones the two bodies of the lateral ventricles; the highest none.
    """
    w_front = np.clip((16 - h) / 12, 0, 1)
    w_atria = np.clip((14 - h) / 12, 0, 1)
    w_third = np.clip((6 - h) / 8, 0, 1)
    w_body = float(np.exp(-(((h - 22) / 9) ** 2)))
    parts = [(0.0, 5.0, 1.1 * size, 7.0, 0.0, w_third)]
    for s in (-1, 1):
        parts.append((s * 5.5, -19.0, 4.0 * size, 11.0, s * 0.45, w_front))  # anterior ends diverge
        parts.append((s * 15.0, 24.0, 4.5 * size, 8.0, -s * 0.5, w_atria))  # posterior ends diverge
        parts.append((s * (5.0 + 2.0 * size), 2.0, 3.2 * size, 24.0, -s * 0.12, w_body))
    return parts


def deep_grey_parts(h: float) -> list[tuple[float, float, float, float, float, float]]:
    """Caudate heads, lentiform nuclei and thalami at the lowest levels (same format)."""
    w = np.clip((14 - h) / 10, 0, 1)
    parts = []
    for s in (-1, 1):
        parts.append((s * 10.5, -16.0, 3.5, 6.0, s * 0.3, w))
        parts.append((s * 21.0, -2.0, 5.5, 11.0, -s * 0.2, w))
        parts.append((s * 8.0, 10.0, 6.0, 8.0, 0.0, w))
    return parts


def ellipses(parts, u: np.ndarray, v: np.ndarray, scale: tuple[float, float], edge: float,
             squeeze: tuple[int, float] = (0, 0.0)) -> np.ndarray:
    """Union (max) of soft ellipses; `squeeze` = (side, fraction) narrows one side's parts."""
    out = np.zeros(u.shape)
    for cu, cv, au, av, rot, weight in parts:
        if weight <= 0.02:
            continue
        if squeeze[0] and np.sign(cu) == squeeze[0]:
            au = au * (1 - squeeze[1])
        grow = np.sqrt(weight)  # parts fade in and out with the level by shrinking
        du, dv = u / scale[0] - cu, v / scale[1] - cv
        c, s = np.cos(rot), np.sin(rot)
        pu, pv = c * du + s * dv, -s * du + c * dv
        r = np.hypot(pu / (au * grow), pv / (av * grow))
        out = np.maximum(out, soft((r - 1) * min(au, av) * grow, edge))
    return out


def midline_shift(v: np.ndarray, bleed: Bleed | None, b_brain: float, push: float) -> np.ndarray:
    """Subfalcine shift away from a bleed: largest mid-brain, none where the falx is anchored."""
    if bleed is None:
        return np.zeros_like(v)
    return -bleed.side * push * np.exp(-((v / (0.6 * b_brain)) ** 2))


def bleed_weight(bl: Bleed, size: float, u, v, rho, theta, d, h, hd: Head, spacing: float, edge: float):
    """Soft haemorrhage map, the local subdural thickness that pushes the brain in, oedema map."""
    brng = np.random.default_rng(bl.seed)  # the same shape on every slice of the patient
    psi = brng.uniform(0, 2 * np.pi, 3)
    if bl.kind == "subdural":
        delta = wrap(theta - bl.angle) / bl.span
        # Near-constant thickness that tapers only at the ends: the inner edge follows the brain (a crescent).
        thick = size * spacing * np.cos(np.pi / 2 * np.clip(delta, -1, 1)) ** 0.35
        thick = thick * (1 + 0.08 * np.cos(3 * theta + psi[0]))
        return soft(d - thick, edge), thick, np.zeros_like(d)
    a_in, b_in = inner_radius(hd, h, 0.0), inner_radius(hd, h, np.pi / 2)
    uc, vc = bl.u * a_in, bl.v * b_in
    rho_c = float(np.hypot(uc, vc))
    room = 0.85 * (float(inner_radius(hd, h, np.arctan2(vc, uc))) - rho_c)
    radius = min(size * spacing, room)  # a haematoma stays inside the brain on every slice
    dr, phi = np.hypot(u - uc, v - vc), np.arctan2(v - vc, u - uc)
    rim = radius * (1 + 0.14 * np.cos(2 * phi + psi[1]) + 0.07 * np.cos(3 * phi + psi[2]))
    clot = soft(dr - rim, 0.35 * spacing)
    return clot, np.zeros_like(d), soft(dr - rim - 0.45 * radius, 0.8 * spacing) * (1 - clot)


def surface(hd: Head, h: float, rho, theta, d, edge: float) -> np.ndarray:
    """The outer brain: a thin CSF rim, a gyral grey-matter ribbon over white matter, sulci."""
    val = mix(np.full(d.shape, hd.csf), hd.grey, soft(1.0 - d, edge))  # ~1 mm subarachnoid CSF
    ribbon = hd.cortex * (1 + sum(a * np.cos(n * theta + p) for n, a, p in hd.gyri))
    val = mix(val, hd.white, soft(1.0 + ribbon - d, 1.5 * edge))
    deep = np.clip((14 - h) / 10, 0, 1)
    a_in = float(inner_radius(hd, h, 0.0))
    syl = [(np.arctan2(-5.0, s * a_in), 12.0 * deep, 1.5) for s in (-1, 1)] if deep > 0 else []  # Sylvian fissures
    sulci = np.zeros(d.shape)
    for angle, depth, width in [(angle, depth, hd.sulcus_width) for angle, depth in hd.sulci] + syl:
        across = rho * wrap(theta - angle)
        sulci = np.maximum(sulci, np.exp(-((across / width) ** 2)) * soft(d - 1.0 - depth, 2 * edge))
    return mix(val, hd.csf, sulci)


def deep_structures(hd: Head, h: float, val, u, v, scale, edge: float, squeeze: tuple[int, float]) -> np.ndarray:
    """Deep grey nuclei, ventricles and (in some patients) calcifications painted over `val`."""
    val = mix(val, hd.grey - 2.0, ellipses(deep_grey_parts(h), u, v, scale, edge))
    val = mix(val, hd.csf, ellipses(ventricle_parts(h, hd.ventricles), u, v, scale, edge, squeeze))
    if hd.calcified:  # calcified choroid plexus in the atria and pineal gland, at the lowest levels
        atria, pineal = float(h < 10), float(h < 8)
        dots = [(s * 15.0, 24.0, 2.0, 2.0, 0.0, atria) for s in (-1, 1)] + [(0.0, 14.0, 1.8, 1.8, 0.0, pineal)]
        val = mix(val, hd.calcified, ellipses(dots, u, v, scale, edge))
    return val


def brain_tissue(hd: Head, h: float, u, v, rho, theta, d, shift, edge: float, bleed: Bleed | None, push: float):
    """HU inside the skull without the bleed: surface layers and sulci, white matter, deep
    structures, falx and superior sagittal sinus. Each part is drawn only where it can be."""
    val = np.full(u.shape, hd.white)
    band = (d > -3.0) & (d < 20.0)  # sulci and fissures reach at most ~14 mm below the inner table
    val[band] = surface(hd, h, rho[band], theta[band], d[band], edge)
    scale = (float(inner_radius(hd, h, 0.0)) / 62.0, float(inner_radius(hd, 0.0, np.pi / 2)) / 78.0)
    us = u - shift  # reference brain 124 x 156 mm, shifted by the mass effect
    core = (np.abs(us) < 38 * scale[0]) & (np.abs(v) < 42 * scale[1])  # every deep structure lies in here
    squeeze = (bleed.side, min(0.5, push / 8.0)) if bleed is not None else (0, 0.0)
    val[core] = deep_structures(hd, h, val[core], us[core], v[core], scale, edge, squeeze)
    mid = np.abs(u) < 10.0
    um, usm, vm, dm = u[mid], us[mid], v[mid], d[mid]
    # The falx: a thin line in the midline, interrupted around the ventricles at low levels.
    gap = np.clip((30 - h) / 8, 0, 1) * soft(vm - 30 * scale[1], 2.0) * soft(-24 * scale[1] - vm, 2.0)
    vmid = mix(val[mid], hd.falx, 0.8 * np.exp(-((usm / 0.7) ** 2)) * (1 - gap))
    # The superior sagittal sinus: a triangle on the inner table at the back, in front too higher up.
    size = hd.sinus * np.where(vm > 0, 1.0, np.clip((h - 20) / 15, 0, 0.7))
    val[mid] = mix(vmid, hd.sinus_hu, soft(np.abs(um) - 0.45 * (size - dm), edge) * soft(dm - size, edge))
    return val


def render(p: dict, k: int, rng: np.random.Generator, factor: float) -> Slice:
    """Draw slice `k` of patient `p` in HU with its masks (`factor` scales the bleed size)."""
    hd, h, spacing = p["head"], p["levels"][k], p["spacing"]
    n, step = SIZE * SUPERSAMPLE, spacing / SUPERSAMPLE
    edge = 0.15 * step  # sharp boundaries; the averaging down makes the partial volume
    c = (np.arange(n) + 0.5) * step - SIZE * spacing / 2
    y, x = np.meshgrid(c, c, indexing="ij")
    x, y = x - hd.cx, y - hd.cy
    ca, sa = np.cos(hd.angle), np.sin(hd.angle)
    u, v = ca * x + sa * y, -sa * x + ca * y  # head frame: u to image right, v posterior
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    r_out = outer_radius(hd, h, theta)
    r_table = r_out - hd.scalp
    r_in = r_table - skull_thickness(hd, theta)
    d = r_in - rho  # depth below the inner table
    bleed = p["bleed"] if p["labels"][k] else None
    weight, thick, oedema = np.zeros(u.shape), np.zeros(u.shape), np.zeros(u.shape)
    push = 0.0
    if bleed is not None:
        weight, thick, oedema = bleed_weight(bleed, bleed.size * factor, u, v, rho, theta, d, h, hd, spacing, edge)
        push = (0.3 if bleed.kind == "subdural" else 0.2) * bleed.size * factor * spacing
    shift = midline_shift(v, bleed, float(inner_radius(hd, h, np.pi / 2)), push)
    brain = soft(-d, edge)
    tissue = brain_tissue(hd, h, u, v, rho, theta, d - thick, shift, edge, bleed, push)
    tissue += 1.0 * smooth_noise(rng, (n, n), 4.0)  # parenchymal texture
    if bleed is not None:
        bleed_hu = bleed.hu + 3.0 * smooth_noise(np.random.default_rng(bleed.seed + k), (n, n), 3.0)
        tissue = mix(tissue - 6.0 * oedema, bleed_hu, weight)  # oedema: a darker rim around a clot
    ub = np.clip((rho - r_in) / (r_table - r_in), 0, 1)  # 0 at the inner table, 1 at the outer
    tables = np.maximum(np.exp(-((ub / 0.3) ** 2)), np.exp(-(((1 - ub) / 0.3) ** 2)))
    bone_hu = hd.diploe + (hd.table - hd.diploe) * tables
    bone = soft(rho - r_table, edge) * soft(r_in - rho, edge)
    hu = mix(np.full((n, n), AIR), hd.soft, soft(rho - r_out, edge))
    hu = mix(hu, hd.cradle, cradle(p, x + hd.cx, y + hd.cy, edge))
    hu = mix(mix(hu, bone_hu, bone), tissue, brain)
    down = lambda a: a.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(axis=(1, 3))  # noqa: E731
    picture = down(hu) + p["noise"] * smooth_noise(rng, (SIZE, SIZE), 0.6)
    bone_share = down(bone)
    blood = (down(weight * brain) > 0.5) & (bone_share < 0.01)  # mostly blood, no partial volume with bone
    return Slice(np.clip(picture, *HU_RANGE), blood, down(brain) > 0.5, bone_share > 0.5)


def cradle(p: dict, x: np.ndarray, y: np.ndarray, edge: float) -> np.ndarray:
    """The head holder: a fixed arc under the occiput in scanner coordinates, not the head's."""
    hd = p["head"]
    radius = hd.b + 10.0 + p["cradle_gap"]
    dx, dy = x - hd.cx, y - (hd.cy - 10.0)
    shell = soft(np.abs(np.hypot(dx, dy) - radius) - 1.3, edge)
    return shell * soft(np.abs(np.arctan2(dx, dy)) - 0.95, 0.05)  # within ~55 degrees of straight down


def draw_bleed(rng: np.random.Generator, n_slices: int) -> Bleed:
    """A random haemorrhage for a patient with `n_slices` slices."""
    kind = str(rng.choice(["subdural", "intraparenchymal"]))
    side = int(rng.choice([-1, 1]))
    length = int(rng.choice([2, 3, n_slices] if kind == "subdural" else [1, 2, 2, 3]))
    length = min(length, n_slices)
    first = int(rng.integers(0, n_slices - length + 1))
    u, v = side * rng.uniform(0.15, 0.5), rng.uniform(-0.4, 0.4)
    norm = max(1.0, float(np.hypot(u, v)) / 0.55)  # keep the centre in the inner half of the brain
    return Bleed(
        kind=kind, side=side, first=first, last=first + length - 1,
        # A subdural stays on its side of the falx: centre within 0.4 rad of lateral, half-span <= 1 rad.
        angle=(0.0 if side > 0 else np.pi) + rng.uniform(-0.4, 0.4), span=rng.uniform(0.6, 1.0),
        size=rng.uniform(5.0, 10.0) if kind == "subdural" else rng.uniform(7.5, 13.0),
        u=u / norm, v=v / norm,
        hu=rng.uniform(58, 82) if kind == "subdural" else rng.uniform(62, 88),
        seed=int(rng.integers(2**31)),
    )


def draw_head(rng: np.random.Generator, age: int) -> Head:
    """Random anatomy and pose; ventricles and sulci widen with age."""
    atrophy = (age - 20) / 70
    white = rng.uniform(25, 31)
    return Head(
        a=rng.uniform(68, 78), b=rng.uniform(86, 98),
        outline=tuple((rng.uniform(0, 0.025), rng.uniform(0, 2 * np.pi)) for _ in range(3)),
        scalp=rng.uniform(3.0, 6.0), skull=rng.uniform(4.0, 6.5), skull_extra=rng.uniform(0.1, 0.4),
        table=rng.uniform(1250, 1550), diploe=rng.uniform(650, 900), soft=rng.uniform(28, 48),
        grey=white + rng.uniform(6, 11), white=white, csf=rng.uniform(3, 12), falx=white + rng.uniform(8, 14),
        sinus=rng.uniform(5.0, 8.0), sinus_hu=white + rng.uniform(18, 30),
        calcified=rng.uniform(150, 400) if rng.random() < 0.5 else 0.0, cortex=rng.uniform(3.0, 4.5),
        gyri=tuple((int(rng.integers(9, 19)), rng.uniform(0.05, 0.15), rng.uniform(0, 2 * np.pi)) for _ in range(4)),
        sulci=tuple((float(t), rng.uniform(3, 7)) for t in np.sort(rng.uniform(-np.pi, np.pi, 26))),
        sulcus_width=0.5 + 0.6 * atrophy + rng.uniform(0, 0.2),
        ventricles=float(np.clip(0.8 + 0.5 * atrophy + rng.normal(0, 0.08), 0.7, 1.45)),
        cx=rng.uniform(-8, 8), cy=rng.uniform(-6, 6), angle=np.deg2rad(rng.uniform(-8, 8)),
        cradle=rng.uniform(60, 200),
    )


def draw_patient(index: int) -> dict:
    """All random choices for patient `index` (1-based), from its own stream."""
    rng = np.random.default_rng([SEED, index])
    pair = np.random.default_rng([SEED, 0, (index - 1) // 2])  # one bleed per consecutive pair
    has_bleed = (index - 1) % 2 == int(pair.integers(0, 2))
    n = int(rng.choice([3, 4, 4]))
    age = int(rng.integers(22, 90))
    head = draw_head(rng, age)
    bleed = draw_bleed(rng, n)
    lowest, step = rng.uniform(-4, 3), rng.uniform(10, 14) if n == 4 else rng.uniform(13, 18)
    levels = [round(float(lowest + step * k), 2) for k in range(n)]  # mm above the third ventricle
    labels = [int(has_bleed and bleed.first <= k <= bleed.last) for k in range(n)]
    first_study = dt.date(2021, 3, 1) + dt.timedelta(days=int(rng.integers(0, 900)))
    birth = first_study - dt.timedelta(days=365 * age + int(rng.integers(0, 365)))
    return {
        "index": index, "labels": labels, "levels": levels, "head": head, "bleed": bleed if has_bleed else None,
        # a head fills most of a 215-255 mm display field of view
        "spacing": round(float((head.b + 14) / rng.uniform(56, 61)), 4),
        "noise": rng.uniform(3.0, 6.0), "cradle_gap": rng.uniform(6, 12),
        "encoding": ENCODINGS[int(rng.choice(len(ENCODINGS), p=ENCODING_WEIGHTS))],
        "syntax": SYNTAXES[int(rng.choice(len(SYNTAXES), p=SYNTAX_WEIGHTS))],
        "bone_window": bool(rng.random() < 0.4), "thickness": float(rng.choice([2.5, 3.0, 5.0])),
        "kvp": int(rng.choice([100, 120, 120])), "ma": int(rng.integers(180, 320)),
        "z0": round(float(rng.uniform(-180, -100)), 1), "table_height": round(float(rng.uniform(120, 180)), 1),
        "sex": str(rng.choice(["F", "M"])), "age": age, "birth": birth, "study_date": first_study,
        "name": f"Phantom^{GIVEN[(index - 1) % len(GIVEN)]} {STARS[(index - 1) // len(GIVEN) % len(STARS)]}",
        "patient_id": f"SYNH-{int(rng.integers(10**5, 10**6)):06d}-{index:02d}",
    }


def draw_slice(p: dict, k: int) -> Slice:
    """Slice `k` (0-based, lowest first) of patient `p`, from its own stream: HU picture and masks."""
    rng = np.random.default_rng([SEED, p["index"], k + 1])
    factor = rng.uniform(0.8, 1.0)  # the bleed's size on this slice, relative to its largest
    out = render(p, k, rng, factor)
    assert out.bleed.any() == bool(p["labels"][k]), "a labelled bleed must show, an unlabelled one must not"
    return out

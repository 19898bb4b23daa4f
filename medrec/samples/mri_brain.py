"""Generate medrec's bundled MRI sample data: synthetic FLAIR-like brain slabs as NIfTI.

Each pseudo-patient gets an axial slab of 6 slices (64 x 64, 3.5 x 3.5 x 5 mm) through a
head phantom: scalp, dark skull, a thin CSF rim, a folded grey-matter ribbon over white
matter, sulci, the interhemispheric fissure and the lateral ventricles, with Rician noise
in the background. Patients differ in head size, shape, position, rotation, slab height,
ventricle size and tissue contrast. Label 1 ("lesion present") adds a soft-edged
hyperintense ellipsoid in one hemisphere; the slab is centred on it, so it shows on all 6
slices and every slice can inherit the volume's label.

Intensities are arbitrary, as on a real scanner: every volume has its own global scale
(50 to 5000), an offset and a smooth multiplicative bias field (+-20 to 35%), so only
per-image scaling (z-score or percentiles) makes volumes comparable. About half the files
are int16 with scl_slope/scl_inter, the others float32. Headers carry no identifiers.

Every patient is drawn from its own random streams seeded by (SEED, patient number), and
the gzip streams carry no time stamp, so a rerun is byte-identical and `--patients 3`
writes byte-identical copies of the first three patients of the full set.

    medrec samples DIR                                    # every bundled set, with its config
    python -m medrec.samples.mri_brain --out /tmp/x --patients 3
    python data_samples/make_mri_brain.py                 # the committed copy in a checkout
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medrec.samples.common import generator_cli, prepare_folder, soft, write_manifest

SEED = 20240917
DEFAULT_PATIENTS = 38

SHAPE = (64, 64, 6)  # (left-right, anterior-posterior, slices)
VOXEL = (3.5, 3.5, 5.0)  # mm
# Sub-samples per voxel along each axis, so that edges get partial-volume grey levels in-plane;
# through-plane sub-samples would double the drawing time (and the tests') for little visible change.
SUPER = (2, 2, 1)
SKULL, CSF_LEVEL = 0.05, 0.16  # FLAIR: cortical bone and (suppressed) fluid are dark
DESCRIP = b"synthetic medrec phantom"
FILE_RE = re.compile(r"M\d{3}_\d+\.nii\.gz")


@dataclass(frozen=True)
class Anatomy:
    """Per-patient head geometry (mm, head frame: u to the patient's left, v posterior,
    w superior from the centre of the lateral ventricles) and tissue levels (grey matter = 1)."""

    a: float  # left-right semi-axis of the skin outline
    b: float  # anterior-posterior semi-axis
    egg: float  # the back of the head is wider than the front
    lobes: tuple[float, float, float, float]  # amplitudes and phases of 2- and 3-fold bumps
    top: float  # height above the widest level at which the outline closes
    scalp: float  # thicknesses of the layers under the skin
    skull: float
    rim: float
    cortex: float
    gyri: int
    gyral_phase: float
    sulci: tuple[tuple[float, float, float], ...]  # (angle, depth mm, twist per mm of height)
    ventricles: float  # size factor: larger in atrophy
    wm: float
    deep: float  # basal ganglia and thalami, between grey and white matter
    scalp_level: float
    slab_z: float  # slab centre above the ventricle centre


@dataclass(frozen=True)
class Lesion:
    """A hyperintense ellipsoid: centre in the head frame (mm), semi-axes (mm), in-plane angle."""

    u: float
    v: float
    w: float
    ru: float
    rv: float
    rw: float
    angle: float
    amplitude: float  # times mean parenchyma (grey and white matter)


@dataclass(frozen=True)
class Pose:
    cx: float  # head centre in the slab, mm from the field-of-view centre
    cy: float
    angle: float  # in-plane rotation, radians
    slab_z: float


@dataclass(frozen=True)
class Drawn:
    """One volume before storage, with the generator's masks (all shaped SHAPE)."""

    volume: np.ndarray  # float64, in the volume's own arbitrary units
    lesion: np.ndarray  # bool: lesion weight > 0.5
    brain: np.ndarray  # bool: intracranial tissue (parenchyma, sulci, ventricles)
    parenchyma: np.ndarray  # bool: brain minus fluid and lesion
    head: np.ndarray  # bool: inside the skin
    pose: Pose
    storage: dict  # dtype, slope, inter, step (largest rounding error is step / 2)


def mix(img: np.ndarray, level: float | np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Paint `level` over `img` where `weight` is 1 (a tissue in front of the ones below)."""
    return img + weight * (level - img)


def downsample(a: np.ndarray) -> np.ndarray:
    """Average each voxel's sub-samples."""
    (nx, ny, nz), (sx, sy, sz) = SHAPE, SUPER
    return a.reshape(nx, sx, ny, sy, nz, sz).mean(axis=(1, 3, 5))


def head_frame(pose: Pose) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-sample coordinates in the head frame (u, v, w in mm)."""
    offsets = [(np.arange(n * k) + 0.5) / k - 0.5 - (n - 1) / 2 for n, k in zip(SHAPE, SUPER)]  # in voxels
    x, y, z = np.meshgrid(*(o * s for o, s in zip(offsets, VOXEL)), indexing="ij")
    c, s = np.cos(pose.angle), np.sin(pose.angle)
    dx, dy = x - pose.cx, y - pose.cy
    return c * dx + s * dy, -s * dx + c * dy, z + pose.slab_z


def outline(a: Anatomy, theta: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Radius (mm) of the skin outline at angle `theta` and height `w`."""
    ellipse = a.a * a.b / np.hypot(a.b * np.cos(theta), a.a * np.sin(theta))
    a2, p2, a3, p3 = a.lobes
    shape = (1 + a.egg * np.sin(theta)) * (1 + a2 * np.cos(2 * theta + p2) + a3 * np.cos(3 * theta + p3))
    taper = np.sqrt(np.clip(1 - ((w + 15.0) / a.top) ** 2, 0.05, 1))  # widest 15 mm below the ventricles
    return ellipse * shape * taper


def fluid(a: Anatomy, u: np.ndarray, v: np.ndarray, w: np.ndarray, r: np.ndarray, theta: np.ndarray,
          depth: np.ndarray) -> np.ndarray:
    """Weight (0..1) of CSF inside the brain: sulci, interhemispheric fissure, lateral ventricles."""
    out = np.zeros_like(u)
    near = (depth > -3) & (depth < 16)  # sulci only reach this deep; skip the rest (speed)
    th, wn, rn, dn = theta[near], w[near], r[near], depth[near]
    sulci = np.zeros_like(th)
    for angle, sulcus_depth, twist in a.sulci:
        arc = rn * ((th - angle - twist * wn + np.pi) % (2 * np.pi) - np.pi)  # along the surface, mm
        sulci = np.maximum(sulci, np.exp(-((arc / 1.2) ** 2)) * soft(dn - sulcus_depth, 1.0))
    out[near] = sulci
    # The fissure splits the hemispheres except where the corpus callosum joins them.
    callosum = soft(np.abs(v + 4) - 30, 3.0) * soft(w - 16, 3.0)
    out = np.maximum(out, np.exp(-((u / 1.1) ** 2)) * (1 - callosum))
    s = a.ventricles
    for side in (-1, 1):
        vv = (v + 4) / (30 * s)  # along the ventricle, -1 (frontal horn) .. 1 (atrium)
        u0 = side * s * (8 + 7 * np.clip(vv, 0, None) ** 2 + 9 * np.clip(-vv, 0, None) ** 2)  # horns diverge
        width = 4.5 * s * (1 + 0.5 * np.clip(vv, 0, None))  # the atrium is wider than the body
        rho = np.sqrt(((u - u0) / width) ** 2 + vv**2 + (w / (13 * s)) ** 2)
        out = np.maximum(out, soft(rho - 1, 0.08))
    return out


def deep_grey(a: Anatomy, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weight of the basal ganglia and thalami, which show on the slices below the ventricle bodies."""
    out = np.zeros_like(u)
    s = a.ventricles
    for side in (-1, 1):
        for cu, cv, su, sv in ((20, -4, 6, 15), (11 * s, 12, 8, 11)):  # lentiform nucleus, thalamus
            rho = np.sqrt(((u - side * cu) / su) ** 2 + ((v - cv) / sv) ** 2 + ((w + 9) / 9) ** 2)
            out = np.maximum(out, soft(rho - 1, 0.1))
    return out


def lesion_weight(o: Lesion, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(soft lesion weight 0..1, normalised radius) of the ellipsoid."""
    c, s = np.cos(o.angle), np.sin(o.angle)
    du, dv = u - o.u, v - o.v
    rho = np.sqrt(((c * du + s * dv) / o.ru) ** 2 + ((-s * du + c * dv) / o.rv) ** 2 + ((w - o.w) / o.rw) ** 2)
    return soft(rho - 1, 0.08), rho


def render(a: Anatomy, lesion: Lesion | None, pose: Pose) -> dict[str, np.ndarray]:
    """Noise-free tissue signal (grey matter = 1) and soft masks, averaged to voxels."""
    u, v, w = head_frame(pose)
    r, theta = np.hypot(u, v), np.arctan2(v, u)
    t = outline(a, theta, w) - r  # depth below the skin, mm
    inner = a.scalp + a.skull + a.rim
    head = soft(-t, 0.8)
    img = a.scalp_level * head
    img = mix(img, SKULL, soft(a.scalp - t, 0.8))
    img = mix(img, CSF_LEVEL, soft(a.scalp + a.skull - t, 0.8))
    brain = soft(inner - t, 0.8)
    depth = t - inner  # below the brain surface
    img = mix(img, 1.0, brain)
    ribbon = a.cortex + 2.5 * np.sin(a.gyri * theta + a.gyral_phase + 0.05 * w)  # the cortex folds: thicker and thinner
    img = mix(img, a.wm, brain * soft(ribbon - depth, 1.0))
    img = mix(img, a.deep, brain * deep_grey(a, u, v, w))
    csf = brain * fluid(a, u, v, w, r, theta, depth)
    img = mix(img, CSF_LEVEL, csf)
    spot = np.zeros_like(img)
    if lesion is not None:
        weight, rho = lesion_weight(lesion, u, v, w)
        spot = brain * weight
        level = lesion.amplitude * (1 + a.wm) / 2 * (1.08 - 0.16 * np.minimum(rho, 1) ** 2)  # brighter core
        img = mix(img, level, spot)
    return {"signal": downsample(img), "head": downsample(head), "brain": downsample(brain),
            "csf": downsample(csf), "lesion": downsample(spot)}


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    n_sulci = int(rng.integers(18, 26))
    return Anatomy(
        a=rng.uniform(64, 74), b=rng.uniform(80, 92), egg=rng.uniform(0.02, 0.06),
        lobes=(rng.uniform(0, 0.02), rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.015), rng.uniform(0, 2 * np.pi)),
        top=rng.uniform(85, 105), scalp=rng.uniform(4, 7), skull=rng.uniform(5, 8), rim=rng.uniform(1.5, 3),
        cortex=rng.uniform(4.5, 7), gyri=int(rng.integers(14, 22)), gyral_phase=rng.uniform(0, 2 * np.pi),
        sulci=tuple((rng.uniform(-np.pi, np.pi), rng.uniform(6, 12), rng.normal(0, 0.004)) for _ in range(n_sulci)),
        ventricles=rng.uniform(0.8, 1.3), wm=rng.uniform(0.66, 0.78), deep=rng.uniform(0.85, 0.92),
        scalp_level=rng.uniform(0.45, 0.7), slab_z=rng.uniform(-4, 22),
    )


def draw_lesion(rng: np.random.Generator, a: Anatomy) -> Lesion:
    """A lesion centred in one hemisphere, wholly inside the brain at the slab's height."""
    w = a.slab_z + rng.uniform(-2, 2)
    radius = rng.uniform(5, 8) * VOXEL[0]  # in-plane, mm
    ecc, angle = rng.uniform(0.85, 1.2), rng.uniform(0, np.pi)
    taper = np.sqrt(1 - ((w + 15.0) / a.top) ** 2)
    inner = a.scalp + a.skull + a.rim + 3  # keep 3 mm from the cortex surface
    squeeze = 1 - a.egg - a.lobes[0] - a.lobes[2]  # the outline's bumps, at worst
    bu, bv = a.a * taper * squeeze - inner, a.b * taper * squeeze - inner  # brain semi-axes here
    phi = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    for attempt in range(400):
        ru, rv = radius * ecc, radius / ecc
        side = 1 if rng.random() < 0.5 else -1
        u, v = side * rng.uniform(0.6 * ru, bu), rng.uniform(-bv, bv)
        pu = u + ru * np.cos(phi) * np.cos(angle) - rv * np.sin(phi) * np.sin(angle)
        pv = v + ru * np.cos(phi) * np.sin(angle) + rv * np.sin(phi) * np.cos(angle)
        if ((pu / bu) ** 2 + (pv / bv) ** 2).max() <= 1:
            break
        if attempt >= 100:  # rarely: no room at this height, try a slightly smaller one
            radius *= 0.99
    else:  # pragma: no cover - the geometry ranges make this unreachable
        raise AssertionError("no room for a lesion")
    return Lesion(u=u, v=v, w=w, ru=ru, rv=rv, rw=rng.uniform(22, 32), angle=angle,
                  amplitude=rng.uniform(1.45, 1.95))


def draw_patient(index: int) -> dict:
    """All random choices for patient `index` (1-based), from its own stream."""
    rng = np.random.default_rng([SEED, index])
    pair = np.random.default_rng([SEED, 0, (index - 1) // 2])  # one positive per consecutive pair
    label = int((index - 1) % 2 == int(pair.integers(0, 2)))
    anatomy = draw_anatomy(rng)
    lesion = draw_lesion(rng, anatomy)  # drawn for everyone, so the streams do not depend on the label
    labels = [label]
    if index % 8 == 3:  # a follow-up scan; for some the finding differs (resolved or new)
        labels.append(1 - label if (index // 8) % 3 == 0 else label)
    pose = Pose(cx=rng.uniform(-8, 8), cy=rng.uniform(-6, 6), angle=np.deg2rad(rng.uniform(-12, 12)),
                slab_z=anatomy.slab_z)
    return {"index": index, "patient_id": f"M{index:03d}", "labels": labels, "anatomy": anatomy,
            "lesion": lesion, "pose": pose}


def bias_field(rng: np.random.Generator, head: np.ndarray) -> np.ndarray:
    """A smooth multiplicative field, 1 +- 20..35% over the head (quadratic polynomial)."""
    half = SHAPE[0] * VOXEL[0] / 2  # mm: the field of view spans -1..1 in-plane
    axes = [(np.arange(n) - (n - 1) / 2) * size / half for n, size in zip(SHAPE, VOXEL)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    terms = [x, y, z, x * y, x * z, y * z, x**2 - 0.33, y**2 - 0.33]
    poly = sum(rng.normal() * t for t in terms)
    poly = poly / np.abs(poly[head > 0.5]).max()
    return 1 + rng.uniform(0.2, 0.35) * poly


def draw_storage(rng: np.random.Generator, values: np.ndarray, scale: float) -> dict:
    """int16 with scl_slope/scl_inter (a scanner export), or float32 (a processed volume)."""
    if rng.random() < 0.5:
        lo, hi = values.min(), values.max()
        slope = float(np.float32(f"{(hi - lo) / rng.uniform(3000, 30000):.4g}"))  # as the header stores it
        inter = float(np.float32(np.floor(lo)))
        return {"dtype": "int16", "slope": slope, "inter": inter, "step": slope}
    # Values are rounded to a power-of-two grid far below the noise, so the float32 mantissas
    # end in zero bits and gzip can shrink them (otherwise noise makes floats incompressible).
    step = float(2.0 ** (np.floor(np.log2(scale)) - 11))
    return {"dtype": "float32", "slope": None, "inter": None, "step": step}


def draw_volume(p: dict, k: int) -> Drawn:
    """Volume `k` (0-based) of patient `p`: pose, intensity scale, bias, noise and storage."""
    rng = np.random.default_rng([SEED, p["index"], k + 1])  # own stream: volumes in any order
    base = p["pose"]
    jitter = (k > 0) * np.array([rng.uniform(-3, 3), rng.uniform(-3, 3), np.deg2rad(rng.uniform(-5, 5)),
                                 rng.uniform(-1.5, 1.5)])
    pose = Pose(base.cx + jitter[0], base.cy + jitter[1], base.angle + jitter[2], base.slab_z + jitter[3])
    lesion = None
    if p["labels"][k]:
        g = p["lesion"]
        f = 1.0 if k == 0 else rng.uniform(0.85, 1.1)  # follow-up: slightly changed size
        lesion = Lesion(g.u, g.v, g.w, g.ru * f, g.rv * f, g.rw * f, g.angle, g.amplitude)
    m = render(p["anatomy"], lesion, pose)
    signal = m["signal"] * bias_field(rng, m["head"])
    sigma = rng.uniform(0.02, 0.04)
    magnitude = np.hypot(signal + rng.normal(0, sigma, SHAPE), rng.normal(0, sigma, SHAPE))  # Rician
    scale = float(np.exp(rng.uniform(np.log(50), np.log(5000))))
    values = scale * magnitude + scale * rng.uniform(-0.03, 0.1)
    storage = draw_storage(rng, values, scale)
    if storage["dtype"] == "float32":
        values = np.round(values / storage["step"]) * storage["step"]
    lesion_mask = m["lesion"] > 0.5
    assert lesion_mask.any(axis=(0, 1)).all() == bool(p["labels"][k]), "lesion must show on every slice"
    brain = m["brain"] > 0.5
    return Drawn(volume=values, lesion=lesion_mask, brain=brain,
                 parenchyma=brain & (m["csf"] < 0.3) & (m["lesion"] < 0.1), head=m["head"] > 0.5,
                 pose=pose, storage=storage)


def affine(slab_z: float) -> np.ndarray:
    """Voxel -> scanner mm (RAS+). Voxel axes run to the patient's left, posterior and superior
    (LPS order, as a DICOM axial series converts), centred on the field of view."""
    centre = (np.array(SHAPE) - 1) / 2
    out = np.diag([-VOXEL[0], -VOXEL[1], VOXEL[2], 1.0])
    out[:3, 3] = -out[:3, :3] @ centre + [0.0, 0.0, round(slab_z, 1)]
    return out


def nifti_bytes(d: Drawn) -> bytes:
    """The gzipped NIfTI-1 file: header scaling for int16, no time stamp in the gzip header."""
    st = d.storage
    if st["dtype"] == "int16":
        data = np.rint((d.volume - st["inter"]) / st["slope"])
        assert data.min() >= -32768 and data.max() <= 32767
        data = data.astype(np.int16)
    else:
        data = d.volume.astype(np.float32)
    img = nib.Nifti1Image(data, affine(d.pose.slab_z))
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    hdr["descrip"] = DESCRIP
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    if st["dtype"] == "int16":
        hdr.set_slope_inter(st["slope"], st["inter"])
    return gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)


def generate(out: Path, patients: int) -> list[dict]:
    """Write `patients` pseudo-patients under `out`; return the manifest rows."""
    prepare_folder(out / "volumes", FILE_RE)
    rows = []
    for index in range(1, patients + 1):
        p = draw_patient(index)
        for k, label in enumerate(p["labels"]):
            d = draw_volume(p, k)
            rel = f"volumes/{p['patient_id']}_{k + 1}.nii.gz"
            (out / rel).write_bytes(nifti_bytes(d))
            rows.append({"path": rel, "patient_id": p["patient_id"], "label": label})
    write_manifest(out, rows, ["path", "patient_id", "label"])
    return rows


main = generator_cli(__doc__, generate, Path("mri_brain"), DEFAULT_PATIENTS, ("volumes", "with a lesion"))


if __name__ == "__main__":
    main()

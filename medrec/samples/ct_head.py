"""Generate medrec's bundled CT sample data: synthetic head CT slices as DICOM, in Hounsfield units.

Each pseudo-patient gets a head phantom: scalp, a skull ring with dense inner and outer tables
around the diploe, a thin subarachnoid CSF layer, a gyral grey-matter ribbon over white matter,
sulci and Sylvian fissures, deep grey nuclei, the falx, the superior sagittal sinus, CSF
ventricles that change with the slice level (butterfly frontal horns and atria low down, the
ventricular bodies higher up, none at the centrum semiovale), calcified choroid plexus and pineal
in half the patients, a head holder under the occiput and CT noise. Patients differ in head size
and shape, position, rotation, skull thickness, tissue densities, noise and ventricle size.
Each patient has 3 or 4 axial slices at increasing levels. Label 1 ("acute haemorrhage on this
slice") adds a hyperdense subdural crescent along the inner table or an intraparenchymal
haematoma with a rim of oedema, with mild mass effect; a bleed spans contiguous slices of a
patient, not necessarily all of them, so labels are per slice.

The files exercise the DICOM paths a CT archive has: CT Image Storage, RescaleIntercept -1024
on unsigned pixels and 0 on signed ones, 12 or 16 bits stored, explicit and implicit VR little
endian and RLE Lossless, a brain window (alone or with a bone window) in the header, and
consistent ImagePositionPatient / SliceLocation / SliceThickness / PixelSpacing per series.
Patient names, birth dates and IDs in the files are invented; the manifest carries only a
pseudonymous patient id (H001, ...).

Every patient is drawn from its own random stream seeded by (SEED, patient number), and every
slice from (SEED, patient number, slice number), so `--patients 3` writes byte-identical copies
of the first three patients of the full set.

    medrec samples DIR                                  # every bundled set, with its config
    python -m medrec.samples.ct_head --out /tmp/x --patients 3
    python data_samples/make_ct_head.py                 # the committed copy in a checkout
"""


from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from medrec.samples.common import add_patient, file_meta, generator_cli, prepare_folder, write_manifest
from medrec.samples.ct_head_phantom import SEED, SIZE, Slice, draw_patient, draw_slice  # noqa: F401 (API)

DEFAULT_PATIENTS = 30
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
# Fixed implementation identifiers, so the bytes do not change with the installed pydicom version.
IMPLEMENTATION_UID = generate_uid(entropy_srcs=["medrec", "synthetic-ct-head", "implementation"])
IMPLEMENTATION_NAME = "MEDREC_SYNTH_1"
FILE_RE = re.compile(r"H\d{3}_s\d+\.dcm")


def to_stored(hu: np.ndarray, encoding: tuple[int, int, float]) -> np.ndarray:
    """HU -> stored integers: stored = HU - intercept (slope 1), signed or unsigned."""
    signed, bits, intercept = encoding
    stored = np.rint(hu - intercept)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    assert lo <= stored.min() and stored.max() <= hi, "HU_RANGE must fit every encoding"
    return stored.astype(np.int16 if signed else np.uint16)


def make_dataset(p: dict, k: int, stored: np.ndarray) -> Dataset:
    """A single-frame CT Image Storage dataset with file meta, deterministic UIDs, fake identifiers."""
    def uid(*parts) -> str:
        return generate_uid(entropy_srcs=["medrec-synthetic-ct-head", str(SEED), *map(str, parts)])

    index = p["index"]
    sop_uid = uid(index, k, "sop")
    syntax = ExplicitVRLittleEndian if p["syntax"] == RLELossless else p["syntax"]
    ds = Dataset()
    ds.file_meta = file_meta(CT_STORAGE, sop_uid, syntax, (IMPLEMENTATION_UID, IMPLEMENTATION_NAME))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID, ds.SOPInstanceUID = CT_STORAGE, sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = p["study_date"].strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = "141500"
    ds.AcquisitionTime = ds.ContentTime = f"1416{k:02d}"
    ds.AccessionNumber = f"SYNCT{index:04d}"
    ds.Modality = "CT"
    ds.ManufacturerModelName = "head phantom"
    ds.StudyDescription = "CT HEAD WO CONTRAST"
    ds.SeriesDescription = f"HEAD {p['thickness']:g}mm"
    add_patient(ds, p)
    ds.PatientAge = f"{p['age']:03d}Y"
    ds.BodyPartExamined = "HEAD"
    add_acquisition(ds, p)
    add_geometry(ds, p, k, uid)
    add_pixels(ds, p, stored)
    return ds


def add_acquisition(ds: Dataset, p: dict) -> None:
    """Scanner settings of the series."""
    ds.ScanOptions = "AXIAL MODE"
    ds.SliceThickness = f"{p['thickness']:g}"
    ds.KVP = str(p["kvp"])
    ds.DataCollectionDiameter = "250"
    ds.ReconstructionDiameter = f"{SIZE * p['spacing']:.1f}"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = f"{p['table_height']:.1f}"
    ds.RotationDirection = "CW"
    ds.XRayTubeCurrent = p["ma"]
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"


def add_geometry(ds: Dataset, p: dict, k: int, uid) -> None:
    """Study/series identity and the slice's place in patient space."""
    index, h = p["index"], p["levels"][k]
    ds.StudyInstanceUID = uid(index, "study")
    ds.SeriesInstanceUID = uid(index, "series")
    ds.StudyID = "1"
    ds.SeriesNumber = 2  # series 1 is the scout, as on a scanner
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1 + int(round((h + 30) / p["thickness"]))  # the slice's place in the full series
    z = p["z0"] + h  # head first supine: +z is superior
    corner = -(SIZE - 1) / 2 * p["spacing"]
    ds.ImagePositionPatient = [f"{corner:.3f}", f"{corner:.3f}", f"{z:.2f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = uid(index, "frame")
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{z:.2f}"


def add_pixels(ds: Dataset, p: dict, stored: np.ndarray) -> None:
    """The image pixel module in HU (slope 1), the brain (and bone) window, RLE or uncompressed."""
    signed, bits, intercept = p["encoding"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [f"{p['spacing']:.4f}", f"{p['spacing']:.4f}"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, signed
    if p["bone_window"]:  # some scanners store a second, bone, window
        ds.WindowCenter, ds.WindowWidth = ["40", "600"], ["80", "2800"]
        ds.WindowCenterWidthExplanation = ["BRAIN", "BONE"]
    else:
        ds.WindowCenter, ds.WindowWidth = "40", "80"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.tobytes()  # 16-bit in native little-endian order
    if p["syntax"] == RLELossless:
        # The pure-Python encoder, so the bytes do not depend on which RLE plugin is installed.
        ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)


def generate(out: Path, patients: int) -> list[dict]:
    """Write `patients` pseudo-patients under `out`; return the manifest rows."""
    prepare_folder(out / "images", FILE_RE)
    rows, seen_ids = [], set()
    for index in range(1, patients + 1):
        p = draw_patient(index)
        assert p["patient_id"] not in seen_ids, "raw patient ids must be unique"
        seen_ids.add(p["patient_id"])
        for k in range(len(p["levels"])):
            stored = to_stored(draw_slice(p, k).hu, p["encoding"])
            rel = f"images/H{index:03d}_s{k + 1}.dcm"
            make_dataset(p, k, stored).save_as(out / rel, enforce_file_format=True)
            rows.append({"path": rel, "patient_id": f"H{index:03d}", "label": p["labels"][k], "slice_level": k + 1})
    write_manifest(out, rows, ["path", "patient_id", "label", "slice_level"])
    return rows


main = generator_cli(__doc__, generate, Path("ct_head"), DEFAULT_PATIENTS, ("slices", "with a bleed"))


if __name__ == "__main__":
    main()

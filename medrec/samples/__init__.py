"""The bundled synthetic data sets: deterministic generators and an example config for each.

`write_samples(DIR)` (the `medrec samples DIR` command) writes DIR/<set>/ (images and
manifest.csv) and DIR/<set>.yaml, whose relative paths resolve from DIR, so

    medrec samples demo && medrec finetune --config demo/chest_xray.yaml

works without a source checkout. Every file is byte-identical to the committed copy in the
repository's data_samples/ (same seeds, fixed DICOM implementation identifiers, gzip without
time stamps), so results can be compared with the README's.
"""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path

from medrec.errors import MedrecError

# set name -> what it is (for --help and the summary)
SETS: dict[str, str] = {
    "chest_xray": "synthetic chest radiographs, DICOM CR/DX, binary opacity label, sex and age band",
    "ct_head": "synthetic head CT slices, DICOM in HU, per-slice haemorrhage label",
    "mri_brain": "synthetic FLAIR-like brain slabs, NIfTI, per-volume lesion label",
}


def generator(name: str):
    """The generator module of sample set `name` (has generate(out, patients) and DEFAULT_PATIENTS)."""
    if name not in SETS:
        raise MedrecError(f"sample set {name!r} unknown; valid: {', '.join(SETS)}")
    return importlib.import_module(f"medrec.samples.{name}")


def config_text(name: str) -> str:
    """The example config of sample set `name`, with its manifest path relative to the config."""
    generator(name)  # validates the name
    return resources.files("medrec.samples").joinpath("configs", f"{name}.yaml").read_text(encoding="utf-8")


def write_samples(dest: Path, names: list[str] | None = None, patients: int | None = None) -> list[dict]:
    """Write each set under dest/<name>/ and its config as dest/<name>.yaml; one summary row per set."""
    if patients is not None and patients < 1:
        raise MedrecError(f"--patients {patients}: must be at least 1")
    dest.mkdir(parents=True, exist_ok=True)
    summary = []
    for name in names or list(SETS):
        module = generator(name)
        rows = module.generate(dest / name, patients or module.DEFAULT_PATIENTS)
        config = dest / f"{name}.yaml"
        config.write_text(config_text(name), encoding="utf-8")
        summary.append({"set": name, "files": len(rows), "patients": len({r["patient_id"] for r in rows}),
                        "positives": sum(int(r["label"]) for r in rows), "config": config})
    return summary

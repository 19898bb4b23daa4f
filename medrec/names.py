"""Names that config, readers and models share, as pure data (no torch, no numpy).

`medrec.config` validates against these; `medrec.io.windows` and `medrec.models.specs`
implement them. Adding an architecture or a window preset starts here.
"""

from __future__ import annotations

# torchvision architectures medrec can fine-tune (medrec.models.specs.SPECS has one entry each).
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "googlenet", "inception_v3")

# Standard CT windows in Hounsfield units: name -> (center, width).
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (50.0, 400.0),
}
# Windows computed from the image itself (no preset): `data.window` accepts these too.
IMAGE_WINDOWS = ("auto", "minmax", "percentile")
WINDOW_NAMES = (*IMAGE_WINDOWS, *WINDOW_PRESETS)

MODALITIES = ("cxr", "ct", "mri")

# data.color: how an image stored in colour is read (medrec.io.color).
COLOR_MODES = ("auto", "convert", "strict")

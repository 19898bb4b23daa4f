"""Per-architecture facts, as data: adding an architecture is one `ArchSpec` entry.

Everything else in `medrec.models` (input adaptation, head replacement, freezing, weights
lookup, Grad-CAM) reads module names and numbers from here instead of branching on the name.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from medrec.errors import ConfigError

TORCHVISION_URL = "https://download.pytorch.org/models/"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# GoogLeNet and Inception-v3 weights were ported from TensorFlow and expect pixels scaled to
# [-1, 1]. torchvision hides this behind `transform_input=True`, which converts
# ImageNet-normalised input to (x - 0.5) / 0.5 by indexing channels 0, 1 and 2. medrec turns
# `transform_input` off (it cannot work for one channel) and normalises with 0.5 / 0.5 instead,
# which is the same function (proven in tests/models/test_build.py).
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX


@dataclass(frozen=True)
class ArchSpec:
    """What medrec needs to know about one torchvision architecture.

    Module names are dotted paths as in `model.get_submodule`.
    """

    name: str
    builder: str  # torchvision.models.<builder>(weights=None, **builder_kwargs)
    weights_enum: str  # the torchvision weights this file is, e.g. "ResNet50_Weights.IMAGENET1K_V2"
    weights_file: str  # torchvision's file name: `<stem>-<sha256 prefix>.pth`
    first_conv: str
    classifier: str
    stem: tuple[str, ...]  # top-level modules before the first stage (freeze: stem)
    cam_layer: str  # last spatial block, the Grad-CAM target
    native_size: int
    min_size: int  # smallest input the network accepts (torchvision's meta["min_size"])
    aux_heads: tuple[str, ...] = ()  # auxiliary head modules
    aux_classifiers: tuple[str, ...] = ()  # their final Linear layers (replaced for num_outputs)
    aux_pretrained: bool = False  # True when the weights file holds trained aux heads
    head_dropout: str | None = None  # an existing Dropout right before the classifier
    builder_kwargs: tuple[tuple[str, Any], ...] = ()
    patches: tuple[str, ...] = ()  # names in medrec.models.adapt.PATCHES applied after loading
    num_classes: int = 1000  # classes of the pretrained head
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def weights_url(self) -> str:
        return TORCHVISION_URL + self.weights_file

    @property
    def weights_hash_prefix(self) -> str | None:
        return hash_prefix(self.weights_file)

    @property
    def heads(self) -> tuple[str, ...]:
        """Modules that always train: the classifier and the auxiliary heads."""
        return (self.classifier, *self.aux_heads)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored as a checkpoint's "arch"."""
        d = dataclasses.asdict(self)
        d["builder_kwargs"] = dict(self.builder_kwargs)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def check_size(self, image_size: int) -> None:
        """Raise ConfigError if `image_size` is below what the network accepts."""
        if image_size < self.min_size:
            raise ConfigError(
                f"model.arch {self.name} needs data.image_size >= {self.min_size} (got {image_size}); "
                f"its native input size is {self.native_size}"
            )


def hash_prefix(file_name: str) -> str | None:
    """The sha256 prefix torchvision puts in a weights file name, as torch.hub parses it."""
    match = _HASH_IN_NAME.search(file_name)
    return match.group(1) if match and match.group(1) else None


def _resnet(depth: int, weights: str, file_hash: str) -> ArchSpec:
    return ArchSpec(
        name=f"resnet{depth}",
        builder=f"resnet{depth}",
        weights_enum=f"ResNet{depth}_Weights.{weights}",
        weights_file=f"resnet{depth}-{file_hash}.pth",
        first_conv="conv1",
        classifier="fc",
        stem=("conv1", "bn1"),
        cam_layer="layer4",
        native_size=224,
        min_size=1,
    )


_INCEPTION_KWARGS = (("aux_logits", True), ("transform_input", False), ("init_weights", True))

SPECS: dict[str, ArchSpec] = {
    # torchvision's DEFAULT weights of each builder (V2 recipe where torchvision has one).
    "resnet18": _resnet(18, "IMAGENET1K_V1", "f37072fd"),
    "resnet34": _resnet(34, "IMAGENET1K_V1", "b627a593"),
    "resnet50": _resnet(50, "IMAGENET1K_V2", "11ad3fa6"),
    "resnet101": _resnet(101, "IMAGENET1K_V2", "cd907fc2"),
    "resnet152": _resnet(152, "IMAGENET1K_V2", "f82ba261"),
    "googlenet": ArchSpec(
        name="googlenet",
        builder="googlenet",
        weights_enum="GoogLeNet_Weights.IMAGENET1K_V1",
        weights_file="googlenet-1378be20.pth",
        first_conv="conv1.conv",
        classifier="fc",
        stem=("conv1", "conv2", "conv3"),
        cam_layer="inception5b",
        native_size=224,
        min_size=15,
        aux_heads=("aux1", "aux2"),
        aux_classifiers=("aux1.fc2", "aux2.fc2"),
        aux_pretrained=False,  # present in the file but untrained (torchvision warns the same)
        head_dropout="dropout",
        builder_kwargs=_INCEPTION_KWARGS,
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
    ),
    "inception_v3": ArchSpec(
        name="inception_v3",
        builder="inception_v3",
        weights_enum="Inception_V3_Weights.IMAGENET1K_V1",
        weights_file="inception_v3_google-0cc3c7bd.pth",
        first_conv="Conv2d_1a_3x3.conv",
        classifier="fc",
        stem=("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"),
        cam_layer="Mixed_7c",
        native_size=299,
        min_size=75,
        aux_heads=("AuxLogits",),
        aux_classifiers=("AuxLogits.fc",),
        aux_pretrained=True,
        head_dropout="dropout",
        builder_kwargs=_INCEPTION_KWARGS,
        patches=("inception_aux_any_size",),
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
    ),
}


def get_spec(arch: str) -> ArchSpec:
    """The ArchSpec of `arch`, or ConfigError listing the valid names."""
    try:
        return SPECS[arch]
    except KeyError:
        raise ConfigError(f"model.arch '{arch}' unknown; valid: {', '.join(SPECS)}") from None

"""ArchSpec entries against torchvision's own networks and weights metadata."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import pytest
import torch
import torchvision
from torch import nn

from medrec.config import ARCHS
from medrec.errors import ConfigError
from medrec.models.specs import SPECS, get_spec, hash_prefix


def _tv_weights(spec):
    enum_name, tag = spec.weights_enum.split(".")
    return getattr(getattr(torchvision.models, enum_name), tag)


def _meta_model(spec):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return getattr(torchvision.models, spec.builder)(weights=None, **dict(spec.builder_kwargs))


def test_specs_cover_the_config_archs():
    assert set(SPECS) == set(ARCHS)
    assert all(SPECS[a].name == a for a in SPECS)


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_file_is_torchvisions_default(arch):
    spec = get_spec(arch)
    weights = _tv_weights(spec)
    assert PurePosixPath(weights.url).name == spec.weights_file
    assert spec.weights_url == weights.url
    assert weights is type(weights).DEFAULT
    assert spec.min_size == weights.meta["min_size"][0]
    assert spec.num_classes == len(weights.meta["categories"])
    assert hash_prefix(spec.weights_file) == spec.weights_hash_prefix and len(spec.weights_hash_prefix) == 8


@pytest.mark.parametrize("arch", ARCHS)
def test_module_names_exist_and_have_the_right_kind(arch):
    spec = get_spec(arch)
    model = _meta_model(spec)
    conv = model.get_submodule(spec.first_conv)
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == 3
    head = model.get_submodule(spec.classifier)
    assert isinstance(head, nn.Linear) and head.out_features == spec.num_classes
    for name in spec.aux_classifiers:
        assert isinstance(model.get_submodule(name), nn.Linear)
    assert all(model.get_submodule(a) is not None for a in (*spec.aux_heads, *spec.stem))
    if spec.head_dropout:
        assert isinstance(model.get_submodule(spec.head_dropout), nn.Dropout)
    assert getattr(model, "transform_input", False) is False
    features = {}
    model.get_submodule(spec.cam_layer).register_forward_hook(lambda m, i, o: features.update(out=o))
    model.eval()(torch.empty(1, 3, spec.native_size, spec.native_size, device="meta"))
    assert features["out"].dim() == 4  # a spatial map, usable for Grad-CAM
    last = [n for n, c in model.named_children() if n not in spec.heads and list(c.parameters())][-1]
    assert last == spec.cam_layer  # the last block with parameters before the head


@pytest.mark.parametrize("arch", [a for a in ARCHS if a.startswith("resnet")])
def test_resnet_normalisation_is_torchvisions(arch):
    spec = get_spec(arch)
    transforms = _tv_weights(spec).transforms()
    assert list(spec.mean) == list(transforms.mean) and list(spec.std) == list(transforms.std)
    # googlenet / inception_v3 use 0.5 / 0.5 instead: proven in test_build.py against transform_input


def test_to_dict_is_json():
    d = get_spec("inception_v3").to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["cam_layer"] == "Mixed_7c" and d["min_size"] == 75 and d["aux_heads"] == ["AuxLogits"]


def test_unknown_arch_and_small_input_fail_with_the_fix():
    with pytest.raises(ConfigError, match="resnet5.*valid: resnet18, resnet34"):
        get_spec("resnet5")
    with pytest.raises(ConfigError, match="image_size >= 75"):
        get_spec("inception_v3").check_size(64)
    get_spec("inception_v3").check_size(75)

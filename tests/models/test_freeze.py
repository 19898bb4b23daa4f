"""Freeze modes, unfreezing, BatchNorm under freezing and per-group learning rates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medrec.config import ModelConfig
from medrec.errors import ConfigError
from medrec.models.build import build_model
from medrec.models.freeze import apply_freeze, param_groups, train_mode


def _ids(*modules):
    return {id(p) for m in modules for p in m.parameters()}


def _frozen(model):
    return {id(p) for p in model.parameters() if not p.requires_grad}


@pytest.fixture(scope="module")
def resnet():
    model, _ = build_model(ModelConfig(arch="resnet18", weights="none"), num_outputs=2)
    return model


@pytest.fixture(scope="module")
def googlenet():
    model, _ = build_model(ModelConfig(arch="googlenet", weights="none", aux_logits=True), num_outputs=2)
    return model


def test_freeze_modes_resnet(resnet):
    m = resnet
    cfg = ModelConfig(arch="resnet18", freeze="none")
    assert apply_freeze(m, cfg, 0) == [] and _frozen(m) == set()
    apply_freeze(m, cfg.model_copy(update={"freeze": "stem"}), 0)
    assert _frozen(m) == _ids(m.conv1, m.bn1)
    apply_freeze(m, cfg.model_copy(update={"freeze": "backbone"}), 0)
    assert {id(p) for p in m.parameters() if p.requires_grad} == _ids(m.fc)
    names = apply_freeze(m, cfg.model_copy(update={"freeze": "until:layer3"}), 0)
    assert _frozen(m) == _ids(m.conv1, m.bn1, m.layer1, m.layer2, m.layer3)
    assert names and all(not n.startswith(("layer4", "fc")) for n in names)


def test_backbone_keeps_all_heads_training(googlenet):
    m = googlenet
    apply_freeze(m, ModelConfig(arch="googlenet", freeze="backbone", aux_logits=True), 0)
    assert {id(p) for p in m.parameters() if p.requires_grad} == _ids(m.fc, m.aux1, m.aux2)
    apply_freeze(m, ModelConfig(arch="googlenet", freeze="stem"), 0)
    assert _frozen(m) == _ids(m.conv1, m.conv2, m.conv3)


def test_unfreeze_after(resnet):
    cfg = ModelConfig(arch="resnet18", freeze="backbone", unfreeze_after=2)
    for epoch, expect_frozen in [(0, True), (1, True), (2, False), (5, False)]:
        apply_freeze(resnet, cfg, epoch)
        assert bool(_frozen(resnet)) is expect_frozen, epoch


def test_unknown_layer_names_valid_ones(resnet):
    with pytest.raises(ConfigError, match="until:<layer>.*conv1, bn1, layer1, layer2, layer3, layer4"):
        apply_freeze(resnet, ModelConfig(arch="resnet18", freeze="until:layer5"), 0)


def test_param_groups_lrs_and_partition(googlenet):
    cfg = ModelConfig(arch="googlenet", backbone_lr_mult=0.1, aux_logits=True)
    groups = param_groups(googlenet, cfg, lr=1e-3)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 1e-3), ("backbone", pytest.approx(1e-4))]
    assert {id(p) for p in groups[0]["params"]} == _ids(googlenet.fc, googlenet.aux1, googlenet.aux2)
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in googlenet.parameters())  # each exactly once
    opt = torch.optim.AdamW(groups)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, pytest.approx(1e-4)]


def test_frozen_parameters_and_bn_statistics_do_not_change():
    torch.manual_seed(0)
    model, _ = build_model(ModelConfig(arch="resnet18", weights="none", freeze="until:layer3"), num_outputs=2)
    cfg = ModelConfig(arch="resnet18", freeze="until:layer3")
    apply_freeze(model, cfg, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(param_groups(model, cfg, lr=1e-2), weight_decay=0.1)
    train_mode(model)
    assert not model.bn1.training and not model.layer3[0].bn1.training and model.layer4[0].bn1.training
    loss = F.cross_entropy(model(torch.randn(4, 1, 64, 64)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    opt.step()
    after = model.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        frozen_part = key.startswith(("conv1", "bn1", "layer1", "layer2", "layer3"))
        if key.endswith("num_batches_tracked"):
            continue
        assert changed is not frozen_part, key

"""Fixtures for the model tests: fake "ImageNet" weights files in a private torch cache.

Real weights cannot be downloaded in tests, so each architecture gets torchvision's own network
with random, perturbed values, saved the way torchvision publishes its files. Its name carries
the file's real sha256 prefix (`resnet18-<sha[:8]>.pth`), and the spec is pointed at that name,
so lookup, hash verification and loading run unchanged; only the 8 hex digits differ from
torchvision's official name (which tests/models/test_specs.py checks separately).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from medrec.config import ModelConfig
from medrec.models import specs

torch.set_num_threads(1)

# torchvision's published files hold the aux heads of GoogLeNet and Inception-v3
TV_FILE_KWARGS = {"googlenet": {"aux_logits": True, "init_weights": True},
                  "inception_v3": {"aux_logits": True, "init_weights": True}}
NETWORK_ENV = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def torchvision_model(arch: str, **kwargs) -> torch.nn.Module:
    """torchvision's network in the layout of its weights file (the independent reference)."""
    return getattr(torchvision.models, arch)(weights=None, **{**TV_FILE_KWARGS.get(arch, {}), **kwargs})


def perturbed_state_dict(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights on a trained network's scale.

    BatchNorm affine values are moved off the trivial 1 / 0, residual branches are damped (as
    training leaves them; otherwise 50 blocks of unit-variance branches blow logits up into
    float32 rounding trouble), and the running statistics are calibrated on random images.
    """
    torch.manual_seed(seed)
    model = torchvision_model(arch)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.mul_(torch.empty_like(m.weight).uniform_(0.8, 1.2))
            m.bias.add_(0.1 * torch.randn_like(m.bias))
            m.momentum = 1.0  # running stats := the calibration batch's stats
        for block in model.modules():
            last_bn = getattr(block, "bn3", None) or getattr(block, "bn2", None) if hasattr(block, "conv2") else None
            if isinstance(last_bn, torch.nn.BatchNorm2d):  # ResNet BasicBlock / Bottleneck
                last_bn.weight.mul_(0.2)
        aux = getattr(model, "AuxLogits", None)
        if aux is not None:
            model.AuxLogits = None  # torchvision's aux head needs 299 px in train mode
        model.train()(torch.randn(4, 3, 112, 112))
        if aux is not None:
            model.AuxLogits = aux
    return model.state_dict()


class FakeHub:
    """A TORCH_HOME whose hub/checkpoints gets one fake weights file per architecture, lazily."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "hub" / "checkpoints"
        self.dir.mkdir(parents=True)
        self.files: dict[str, tuple[str, str]] = {}

    def file(self, arch: str) -> tuple[Path, str]:
        """(path, sha256) of `arch`'s fake weights file, written on first use."""
        if arch not in self.files:
            tmp = self.dir / f"{arch}.tmp"
            torch.save(perturbed_state_dict(arch), tmp)
            sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
            stem = specs.SPECS[arch].weights_file.rsplit("-", 1)[0]
            name = f"{stem}-{sha[:8]}.pth"
            tmp.rename(self.dir / name)
            self.files[arch] = (name, sha)
        name, sha = self.files[arch]
        return self.dir / name, sha


@pytest.fixture(scope="session")
def fake_hub(tmp_path_factory):
    hub = FakeHub(tmp_path_factory.mktemp("torch_home"))
    yield hub
    shutil.rmtree(hub.root, ignore_errors=True)  # up to ~800 MB; do not keep it around


@pytest.fixture
def no_network(monkeypatch):
    """MEDREC_OFFLINE=1 and no proxies: nothing under test may reach the network."""
    monkeypatch.setenv("MEDREC_OFFLINE", "1")
    for name in NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def use_fake_weights(fake_hub, monkeypatch, no_network):
    """use_fake_weights(arch) -> (path, sha): point TORCH_HOME and the spec at the fake file."""

    def use(arch: str) -> tuple[Path, str]:
        path, sha = fake_hub.file(arch)
        monkeypatch.setenv("TORCH_HOME", str(fake_hub.root))
        monkeypatch.setitem(specs.SPECS, arch, dataclasses.replace(specs.SPECS[arch], weights_file=path.name))
        return path, sha

    return use


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    home = tmp_path / "empty_torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def tv_model():
    """torchvision_model(arch, **kwargs), the independent reference network."""
    return torchvision_model

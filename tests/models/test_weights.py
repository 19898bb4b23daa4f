"""Weights provenance: cache, download (loopback only), offline failures, files, the CLI."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import logging
import socket
import tarfile
import threading
import time
import warnings

import pytest
import torch

from medrec import weights as cli
from medrec.config import ModelConfig
from medrec.errors import WeightsError
from medrec.models import specs
from medrec.models import weights as w
from medrec.models.build import build_model

FAST = 5.0  # seconds an air-gapped machine may take to fail


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 that plays download.pytorch.org for files put in its folder."""
    root = tmp_path / "server"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(specs, "TORCHVISION_URL", f"http://127.0.0.1:{server.server_port}/models/")
    monkeypatch.delenv("MEDREC_OFFLINE", raising=False)
    (root / "models").mkdir()
    yield root / "models"
    server.shutdown()
    server.server_close()


def _expect_unavailable(exc_info, spec, home):
    msg = str(exc_info.value)
    assert str(home / "hub" / "checkpoints" / spec.weights_file) in msg
    assert spec.weights_url in msg
    assert f"python -m medrec.weights pull {spec.name}" in msg and "python -m medrec.weights import" in msg


def test_offline_fails_fast_naming_file_url_and_fix(empty_torch_home, no_network, monkeypatch):
    calls = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: calls.append(a) or [])
    spec = specs.get_spec("resnet50")
    start = time.monotonic()
    with pytest.raises(WeightsError) as exc_info:
        build_model(ModelConfig(arch="resnet50"), num_outputs=2)
    assert time.monotonic() - start < FAST
    _expect_unavailable(exc_info, spec, empty_torch_home)
    assert "MEDREC_OFFLINE=1" in str(exc_info.value) and calls == []  # the network was not touched


def test_unreachable_host_fails_fast(empty_torch_home, no_network, monkeypatch):
    monkeypatch.delenv("MEDREC_OFFLINE")
    monkeypatch.setattr(specs, "TORCHVISION_URL", "http://127.0.0.1:9/models/")  # discard port: refused
    spec = specs.get_spec("resnet18")
    start = time.monotonic()
    with pytest.raises(WeightsError, match="download failed") as exc_info:
        build_model(ModelConfig(arch="resnet18"), num_outputs=2)
    assert time.monotonic() - start < FAST
    _expect_unavailable(exc_info, spec, empty_torch_home)


def test_hanging_dns_fails_within_the_deadline(empty_torch_home, no_network, monkeypatch):
    """Without a DNS server getaddrinfo can block far longer than any socket timeout."""
    monkeypatch.delenv("MEDREC_OFFLINE")
    release = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: release.wait(60) and [])
    start = time.monotonic()
    try:
        with pytest.raises(WeightsError, match="not reachable within"):
            build_model(ModelConfig(arch="resnet18"), num_outputs=2)
        assert time.monotonic() - start < FAST
    finally:
        release.set()


def test_allow_random_init_warns_loudly(empty_torch_home, no_network, caplog):
    cfg = ModelConfig(arch="resnet18", allow_random_init=True)
    with caplog.at_level(logging.WARNING, logger="medrec.models.weights"):
        with warnings.catch_warnings(record=True) as python_warnings:
            warnings.simplefilter("always")
            model, prov = build_model(cfg, num_outputs=2)
    assert prov == {"initialisation": "random (ImageNet weights unavailable)", "weights_file": None, "weights_sha256": None}
    said = [r.getMessage() for r in caplog.records if "RANDOM INITIALISATION" in r.getMessage()]
    assert len(said) == 1 and "resnet18-f37072fd.pth" in said[0]
    # Said once: through logging only, not a second time as a Python warning (issue 18.4).
    assert not [w for w in python_warnings if "RANDOM INITIALISATION" in str(w.message)]
    assert model.fc.out_features == 2 and model.conv1.in_channels == 1
    assert build_model(ModelConfig(arch="resnet18", weights="none"), num_outputs=2)[1]["initialisation"] == "random"


def test_official_name_with_other_content_is_rejected(empty_torch_home, no_network, fake_hub):
    """The cache check is the file name's sha256 prefix, also for files torchvision did not download."""
    src, _ = fake_hub.file("resnet18")
    official = empty_torch_home / "hub" / "checkpoints" / specs.get_spec("resnet18").weights_file
    official.parent.mkdir(parents=True)
    official.write_bytes(src.read_bytes())  # real state dict, wrong hash for this name
    for cfg in (ModelConfig(arch="resnet18"), ModelConfig(arch="resnet18", allow_random_init=True)):
        with pytest.raises(WeightsError, match="corrupt or not the official file.*f37072fd"):
            build_model(cfg, num_outputs=2)
    assert cli.main(["check"]) == 3  # EXIT_CHECK_FAILED (medrec.exitcodes)


def test_download_from_loopback_server_then_cache(served, empty_torch_home, fake_hub, monkeypatch, capsys):
    src, sha = fake_hub.file("resnet18")
    monkeypatch.setitem(specs.SPECS, "resnet18", dataclasses.replace(specs.SPECS["resnet18"], weights_file=src.name))
    (served / src.name).write_bytes(src.read_bytes())
    model, prov = build_model(ModelConfig(arch="resnet18"), num_outputs=2)
    cached = empty_torch_home / "hub" / "checkpoints" / src.name
    assert prov == {"initialisation": "imagenet", "weights_file": src.name, "weights_sha256": sha}
    assert _sha(cached) == sha
    state = torch.load(src, weights_only=True)
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert cli.main(["pull", "resnet18"]) == 0 and "already cached and verified" in capsys.readouterr().out


def test_download_with_wrong_bytes_installs_nothing(served, empty_torch_home, fake_hub, monkeypatch):
    src, _ = fake_hub.file("resnet18")
    name = specs.get_spec("resnet18").weights_file  # official name, but the server sends other bytes
    (served / name).write_bytes(src.read_bytes())
    with pytest.raises(WeightsError, match="expected prefix 'f37072fd'"):
        build_model(ModelConfig(arch="resnet18"), num_outputs=2)
    assert list((empty_torch_home / "hub" / "checkpoints").iterdir()) == []  # no partial file either
    assert cli.main(["pull", "resnet18"]) == 2


def test_cli_pull_list(served, empty_torch_home, fake_hub, monkeypatch, capsys):
    src, sha = fake_hub.file("googlenet")
    monkeypatch.setitem(specs.SPECS, "googlenet", dataclasses.replace(specs.SPECS["googlenet"], weights_file=src.name))
    (served / src.name).write_bytes(src.read_bytes())
    assert cli.main(["pull", "googlenet"]) == 0
    assert _sha(empty_torch_home / "hub" / "checkpoints" / src.name) == sha
    capsys.readouterr()
    assert cli.main(["list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == set(specs.SPECS)
    assert "yes" in rows["googlenet"] and rows["resnet50"].endswith("no")


def test_export_import_roundtrip_and_corruption(use_fake_weights, tmp_path, monkeypatch, capsys):
    files = {arch: use_fake_weights(arch) for arch in ("resnet18", "googlenet")}
    tar = tmp_path / "weights.tar"
    assert cli.main(["export", str(tar)]) == 0
    with tarfile.open(tar) as t:
        assert sorted(t.getnames()) == sorted(["manifest.json", *(p.name for p, _ in files.values())])
    other = tmp_path / "other_home"
    monkeypatch.setenv("TORCH_HOME", str(other))
    assert cli.main(["import", str(tar)]) == 0
    for path, sha in files.values():
        assert _sha(other / "hub" / "checkpoints" / path.name) == sha
    capsys.readouterr()
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") == 2 and "not cached" in out
    prov = build_model(ModelConfig(arch="resnet18"), num_outputs=2)[1]  # offline, from the imported cache
    assert prov["weights_sha256"] == files["resnet18"][1]

    victim = other / "hub" / "checkpoints" / files["resnet18"][0].name
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert cli.main(["check"]) == 3 and "CORRUPT" in capsys.readouterr().out
    with pytest.raises(WeightsError, match="corrupt"):
        build_model(ModelConfig(arch="resnet18"), num_outputs=2)


def test_import_rejects_a_damaged_tar(use_fake_weights, tmp_path, monkeypatch):
    path, _ = use_fake_weights("resnet18")
    tar = tmp_path / "weights.tar"
    w.export_cache(tar, ["resnet18"])
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(tar) as src, tarfile.open(damaged, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == path.name:
                data = data[:-1] + bytes([data[-1] ^ 1])
            member.size = len(data)
            dst.addfile(member, __import__("io").BytesIO(data))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "fresh"))
    with pytest.raises(WeightsError, match="damaged"):
        w.import_cache(damaged)
    assert not any((tmp_path / "fresh" / "hub" / "checkpoints").iterdir())


def test_weights_from_torchvision_format_file(fake_hub, tmp_path, no_network):
    src, sha = fake_hub.file("resnet18")
    model, prov = build_model(ModelConfig(arch="resnet18", weights=str(src)), num_outputs=3)
    assert prov == {"initialisation": "file", "weights_file": str(src.resolve()), "weights_sha256": sha}
    state = torch.load(src, weights_only=True)
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(model.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_weights_from_medrec_checkpoint(tmp_path, no_network):
    cfg = ModelConfig(arch="googlenet", weights="none", in_channels=1, aux_logits=True, dropout=0.2)
    trained, _ = build_model(cfg, num_outputs=2)
    ckpt = tmp_path / "last.pt"
    torch.save({"format": "medrec-checkpoint/1", "model": trained.state_dict(), "epoch": 3}, ckpt)
    model, prov = build_model(cfg.model_copy(update={"weights": str(ckpt)}), num_outputs=2)
    assert prov["initialisation"] == "file" and prov["weights_sha256"] == _sha(ckpt)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), trained.eval()(x), atol=0, rtol=0)


def test_weights_file_of_another_network_is_rejected(fake_hub, tmp_path, no_network):
    src, _ = fake_hub.file("googlenet")
    with pytest.raises(WeightsError, match="fits neither"):
        build_model(ModelConfig(arch="resnet18", weights=str(src)), num_outputs=2)
    with pytest.raises(WeightsError, match="not found"):
        build_model(ModelConfig(arch="resnet18", weights=str(tmp_path / "nope.pth")), num_outputs=2)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot be read"):
        build_model(ModelConfig(arch="resnet18", weights=str(junk)), num_outputs=2)


def test_sha_memo_follows_file_changes(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"a" * 10)
    assert w.file_sha256(f) == _sha(f)
    f.write_bytes(b"b" * 11)
    assert w.file_sha256(f) == _sha(f)


def test_medrec_checkpoint_of_another_task_transfers_the_backbone(tmp_path, no_network, caplog):
    cfg = ModelConfig(arch="resnet18", weights="none")
    trained, _ = build_model(cfg, num_outputs=2)
    ckpt = tmp_path / "other_task.pt"
    torch.save({"format": "medrec-checkpoint/1", "model": trained.state_dict()}, ckpt)
    with caplog.at_level(logging.WARNING, logger="medrec.models.build"):
        model, _ = build_model(cfg.model_copy(update={"weights": str(ckpt)}), num_outputs=5)
    assert model.fc.out_features == 5 and "heads do not fit" in caplog.text
    for key, value in trained.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(model.state_dict()[key], value), key

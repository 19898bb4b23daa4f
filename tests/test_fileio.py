"""medrec.fileio: atomic writes leave the old file or the new one, never a torn one or a stray temp."""

import json
import os
import stat

import pytest

from medrec.fileio import atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text


def _entries(directory):
    return sorted(p.name for p in directory.iterdir())


def test_text_bytes_and_json_round_trip(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01\xff")
    atomic_write_bytes(tmp_path / "c.bin", lambda f: f.write(b"streamed"))
    obj = {"z": 1, "a": [1.5, None, "x"]}
    atomic_write_json(tmp_path / "d.json", obj)
    assert (tmp_path / "a.txt").read_bytes() == "héllo\n".encode()
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01\xff"
    assert (tmp_path / "c.bin").read_bytes() == b"streamed"
    text = (tmp_path / "d.json").read_text()
    assert json.loads(text) == obj
    assert text == json.dumps(obj, indent=2, sort_keys=True) + "\n"
    assert _entries(tmp_path) == ["a.txt", "b.bin", "c.bin", "d.json"]  # no temporary left behind


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "run.json"
    atomic_write_text(path, "old")

    def explode(f):
        f.write(b"half a fi")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(path, explode)
    assert path.read_text() == "old"
    assert _entries(tmp_path) == ["run.json"]
    with pytest.raises(TypeError):  # not serialisable: nothing written, old content intact
        atomic_write_json(path, {"x": object()})
    assert path.read_text() == "old"
    assert _entries(tmp_path) == ["run.json"]


def test_mode_and_default_permissions(tmp_path):
    atomic_write_text(tmp_path / "secret", "token", mode=0o600)
    assert stat.S_IMODE(os.stat(tmp_path / "secret").st_mode) == 0o600
    # without `mode` the file gets what a plain open() would give (mkstemp alone would give 0600)
    (tmp_path / "plain").write_text("x")
    atomic_write_text(tmp_path / "atomic", "x")
    assert stat.S_IMODE(os.stat(tmp_path / "atomic").st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


def test_creates_parents_and_context_manager(tmp_path):
    with atomic_open(tmp_path / "deep" / "er" / "f.bin") as f:
        f.write(b"abc")
        assert not (tmp_path / "deep" / "er" / "f.bin").exists()  # visible only once the block ends
    assert (tmp_path / "deep" / "er" / "f.bin").read_bytes() == b"abc"

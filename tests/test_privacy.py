"""Keyed pseudonyms: HMAC-SHA256 by the book, a key that is never guessable, never printed."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading

import pytest

from medrec.errors import ConfigError
from medrec.privacy import PseudonymKey, PseudonymKeyWarning, default_key_file, load_key

ENV = "MEDREC_TEST_PSEUDONYM_KEY"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_pseudonym_is_hmac_sha256_of_kind_and_value():
    key = PseudonymKey(b"0123456789abcdef-key", "test")
    expected = hmac.new(b"0123456789abcdef-key", b"patient\x00MRN-123", hashlib.sha256).hexdigest()
    assert key.pseudonym("MRN-123") == "P" + expected[:16]
    assert key.pseudonym("  MRN-123 ") == key.pseudonym("MRN-123")  # DICOM space padding
    assert key.pseudonym("MRN-123", "study")[1:] != key.pseudonym("MRN-123", "patient")[1:]


def test_unkeyed_hash_is_not_what_we_write():
    """The brute-force attack an unkeyed hash allows: hash every candidate id and compare."""
    with pytest.warns(PseudonymKeyWarning):
        key = load_key(ENV)  # a fresh random per-installation key
    candidates = [f"{i:06d}" for i in range(2000)]
    target = key.pseudonym("001234")
    unkeyed = {hashlib.sha256(c.encode()).hexdigest()[:16]: c for c in candidates}
    assert target[1:] not in unkeyed


def test_env_key_wins_and_different_keys_disagree(monkeypatch):
    monkeypatch.setenv(ENV, "a-shared-site-key-of-32-chars!!!")
    a = load_key(ENV)
    assert a.source == f"env:{ENV}" and a.secret == b"a-shared-site-key-of-32-chars!!!"
    monkeypatch.setenv(ENV, "another-site-key-of-32-chars!!!!")
    b = load_key(ENV)
    assert a.pseudonym("MRN-1") != b.pseudonym("MRN-1")
    assert a.key_id != b.key_id
    assert not default_key_file().exists()  # an env key never creates the file


def test_short_env_key_is_refused(monkeypatch):
    monkeypatch.setenv(ENV, "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_key(ENV)


def test_key_file_created_once_private_and_reused():
    with pytest.warns(PseudonymKeyWarning, match="created a new random per-installation pseudonym key"):
        first = load_key(ENV)
    path = default_key_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64  # 32 random bytes in hex
    with pytest.warns(PseudonymKeyWarning, match="is not set: using the per-installation"):
        again = load_key(ENV)
    assert again.pseudonym("MRN-1") == first.pseudonym("MRN-1")
    assert first.source == f"file:{path}"


def test_key_file_content_as_env_gives_the_same_pseudonyms(monkeypatch):
    """The documented way to share the per-installation key with another machine."""
    with pytest.warns(PseudonymKeyWarning):
        local = load_key(ENV)
    monkeypatch.setenv(ENV, default_key_file().read_text())
    assert load_key(ENV).pseudonym("MRN-9", "study") == local.pseudonym("MRN-9", "study")


def test_group_readable_key_file_is_refused():
    with pytest.warns(PseudonymKeyWarning):
        load_key(ENV)
    path = default_key_file()
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(ENV)


def test_no_key_and_no_create_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_key(ENV, key_file=tmp_path / "none.key", create=False)


@pytest.mark.filterwarnings("ignore::medrec.privacy.PseudonymKeyWarning")
def test_concurrent_first_use_shares_one_key(tmp_path):
    path = tmp_path / "k" / "pseudonym.key"
    keys: list[bytes] = []

    def use() -> None:
        keys.append(load_key(ENV, key_file=path).secret)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert [p.name for p in path.parent.iterdir()] == ["pseudonym.key"]  # no temp files left


def test_secret_never_in_repr():
    key = PseudonymKey(b"super-secret-value-xyz", "test")
    assert "super-secret" not in repr(key) and "super-secret" not in str(key.describe())

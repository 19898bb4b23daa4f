"""Keyed pseudonyms for patient, study and image identifiers.

Why a key: a PatientID is short and has a known shape (an 8-digit MRN, an accession
number), so an unkeyed hash such as sha256("12345678") is reversed by hashing every
possible id, 10^8 of them in seconds. HMAC-SHA256 with a secret key cannot be reversed or
checked against a guess without the key, so pseudonyms can sit in manifests, run folders
and reports. medrec never falls back to an unkeyed hash.

Where the key comes from, first match wins:

1. the environment variable named by `privacy.pseudonym_key_env` (default
   MEDREC_PSEUDONYM_KEY), at least 16 characters: set the same value on every machine
   (or site) whose pseudonyms must match;
2. the per-installation key file `$XDG_CONFIG_HOME/medrec/pseudonym.key` (default
   `~/.config/medrec/pseudonym.key`). When it does not exist it is created once with 32
   random bytes (hex) and mode 0600, and every use warns (`PseudonymKeyWarning`) that
   pseudonyms made with it match only on this account, how to share it, and that losing
   it gives new pseudonyms. A key file other users can read is refused, as ssh does.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from medrec.errors import ConfigError

KEY_ENV = "MEDREC_PSEUDONYM_KEY"
MIN_KEY_CHARS = 16
# 16 hex digits = 64 bits: a collision among a million patients has odds of about 3e-8.
DIGEST_CHARS = 16
PREFIXES = {"patient": "P", "study": "S", "image": "I"}


class PseudonymKeyWarning(UserWarning):
    """Pseudonyms are made with the per-installation key file, not a shared key."""


@dataclass(frozen=True)
class PseudonymKey:
    """A secret HMAC key and where it came from (the secret never appears in repr)."""

    secret: bytes = field(repr=False)
    source: str  # "env:NAME" or "file:PATH"

    def pseudonym(self, value: str, kind: str = "patient") -> str:
        """HMAC-SHA256 of `value` (surrounding spaces stripped), separated by `kind`.

        The same value gives different pseudonyms for different kinds, so a study id can
        never be matched against a patient id.
        """
        message = f"{kind}\x00{str(value).strip()}".encode()
        digest = hmac.new(self.secret, message, hashlib.sha256).hexdigest()
        return PREFIXES.get(kind, "") + digest[:DIGEST_CHARS]

    @property
    def key_id(self) -> str:
        """A non-secret id of the key: two runs with the same key_id have comparable pseudonyms."""
        return hmac.new(self.secret, b"medrec-key-id", hashlib.sha256).hexdigest()[:12]

    def describe(self) -> dict[str, str]:
        """For run.json's privacy section."""
        return {"pseudonym_key_source": self.source, "pseudonym_key_id": self.key_id}


def default_key_file() -> Path:
    """`$XDG_CONFIG_HOME/medrec/pseudonym.key`, or `~/.config/medrec/pseudonym.key`."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "medrec" / "pseudonym.key"


def load_key(env_var: str = KEY_ENV, *, key_file: str | Path | None = None, create: bool = True) -> PseudonymKey:
    """The pseudonym key from `env_var`, else from the key file (created if absent and `create`).

    Raises:
        ConfigError: the variable holds a key that is too short; the key file is readable
            by other users, empty, or absent with `create=False`.
    """
    value = os.environ.get(env_var, "")
    if value.strip():
        if len(value.strip()) < MIN_KEY_CHARS:
            raise ConfigError(
                f"${env_var} holds {len(value.strip())} characters; a pseudonym key needs at least "
                f"{MIN_KEY_CHARS} (a short key can be guessed); make one with "
                "python -c 'import secrets; print(secrets.token_hex(32))'"
            )
        return PseudonymKey(value.strip().encode(), f"env:{env_var}")
    path = Path(key_file) if key_file is not None else default_key_file()
    created = False
    if not path.exists():
        if not create:
            raise ConfigError(f"no pseudonym key: ${env_var} is not set and {path} does not exist")
        created = _create_key_file(path)
    secret = _read_key_file(path)
    action = "created a new random" if created else "using the"
    warnings.warn(
        f"${env_var} is not set: {action} per-installation pseudonym key {path}. Pseudonyms made with it "
        f"match only pseudonyms made on this account; to get the same pseudonyms elsewhere, set "
        f"${env_var} there to this file's content. Keep the file: without it the same patients get "
        "new pseudonyms.",
        PseudonymKeyWarning,
        stacklevel=2,
    )
    return PseudonymKey(secret, f"file:{path}")


def _create_key_file(path: Path) -> bool:
    """Write a fresh random key with mode 0600; False if another process made one first."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        # link() fails if the name exists, so two processes starting at once share one key
        # and neither ever reads a half-written file.
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _read_key_file(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"pseudonym key file {path} is readable by other users (mode {mode:o}); run chmod 600 {path}"
        )
    secret = path.read_text().strip()
    if len(secret) < MIN_KEY_CHARS:
        raise ConfigError(
            f"pseudonym key file {path} holds {len(secret)} characters, fewer than {MIN_KEY_CHARS}; "
            "delete it to have a new one made (pseudonyms will change)"
        )
    return secret.encode()

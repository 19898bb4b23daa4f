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

Also here, so that every reader treats identifiers one way: `read_identifiers`, the one decoder
of PatientID / PatientName / birth date / AccessionNumber text (in the file's SpecificCharacterSet),
used by the indexer, predict and `medrec.io.dicom.dicom_identifiers`; and `path_identifies`, the
check that a file's path does not carry its own identifiers (index and predict refuse such trees
unless told otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrec.errors import ConfigError

KEY_ENV = "MEDREC_PSEUDONYM_KEY"
MIN_KEY_CHARS = 16
# 16 hex digits = 64 bits: a collision among a million patients has odds of about 3e-8.
DIGEST_CHARS = 16
PREFIXES = {"patient": "P", "study": "S", "series": "R", "image": "I"}


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


# --------------------------------------------------------------------------- identifier text
# The one decoder of identifying DICOM text: the indexer and predict both go through it, so the
# bytes of a PatientID become the same string (and the same pseudonym) whichever reads them.

IDENTIFYING_KEYWORDS = ("PatientID", "PatientName", "PatientBirthDate", "AccessionNumber", "OtherPatientIDs")
# Backslash (multi-value), '^' and '=' (name components and groups): ISO 2022 escapes reset at them.
_PN_DELIMITERS = {0x5C, 0x5E, 0x3D}


def dicom_encodings(ds: Any) -> list[str]:
    """Python codecs for a dataset's SpecificCharacterSet (DICOM's default repertoire when absent)."""
    from pydicom.charset import convert_encodings

    raw = _raw_bytes(ds, "SpecificCharacterSet")
    text = raw.decode("latin-1") if isinstance(raw, bytes) else (raw or "")
    terms = [t.strip() for t in text.split("\\")] if text else ["ISO_IR 6"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert_encodings(terms)
    except Exception:  # noqa: BLE001 - unknown terms: latin-1 decodes any byte, never fails
        return ["iso8859"]


def decode_identifier(value: bytes | str | None, encodings: list[str]) -> str | None:
    """Identifier text from its raw bytes in the file's character set, NFC-normalised, padding stripped.

    Decoded from the bytes rather than through pydicom's value conversion, whose validation
    warnings would quote a malformed identifier verbatim. NFC: the same name typed with a
    combining accent or a precomposed letter gives one pseudonym.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        from pydicom.charset import decode_bytes

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bad byte becomes U+FFFD; the warning is not wanted
            try:
                value = decode_bytes(value, encodings, _PN_DELIMITERS)
            except Exception:  # noqa: BLE001 - a codec pydicom cannot drive
                value = value.decode("latin-1")
    text = unicodedata.normalize("NFC", str(value)).strip(" \x00")
    return text or None


def read_identifiers(ds: Any, keywords: tuple[str, ...] = IDENTIFYING_KEYWORDS) -> dict[str, str | None]:
    """The identifying attributes of a pydicom dataset, as text (None when absent or empty)."""
    encodings = dicom_encodings(ds)
    return {k: decode_identifier(_raw_bytes(ds, k), encodings) for k in keywords}


def _raw_bytes(ds: Any, keyword: str) -> bytes | str | None:
    """An element's value as stored (bytes for a file read from disk), never converted."""
    from pydicom.dataelem import RawDataElement

    if keyword not in ds:
        return None
    elem = ds.get_item(keyword, keep_deferred=True)
    value = elem.value
    if isinstance(elem, RawDataElement) or isinstance(value, bytes):
        return value or None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(map(str, value)) or None
    return str(value) if value not in (None, "") else None


# --------------------------------------------------------------------------- identifying paths

_MONTHS = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
           "oct": 10, "nov": 11, "dec": 12}
_MONTH_RE = re.compile(r"(?<![a-z])(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]{0,6}(?![a-z])")
# Three digit groups with separators between them: 31.12.1945, 1945-12-31, 12/31/45 (within a name).
_SEPARATED_DATE = re.compile(r"(?<![\d.])(\d{1,4})[-_., ]+(\d{1,2})[-_., ]+(\d{1,4})(?![\d.])")


def path_identifies(rel: str, identifiers: dict[str, str | None]) -> tuple[str, ...]:
    """The identifying attributes (keywords, never values) that a relative path carries.

    PACS exports are often filed under MRN/, NAME^FIRST/ or birth-date folders; the path
    column of a manifest or predictions file would then hold what the pseudonyms keep out.
    Caught: an id (PatientID, OtherPatientIDs, AccessionNumber) as a whole name, as a token of
    a longer name (`pt_12345`) or, from 6 characters, anywhere; the name's parts joined as
    DICOM does (`LI_WEI`, `WeiLi`, 2-letter parts included), a part of 3+ letters as a token, of
    4+ anywhere; the birth date in the common forms (19451231, 1945-12-31, 31.12.1945,
    12/31/45 as folders, 31Dec1945, ...). Short ids count only as whole tokens, to avoid
    matching by chance.
    """
    found = []
    components = [c for c in rel.lower().split("/") if c]
    for keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber"):
        values = (identifiers.get(keyword) or "").split("\\")
        if any(_id_in(v, components) for v in values):
            found.append(keyword)
    if _name_in(identifiers.get("PatientName"), components):
        found.append("PatientName")
    if _date_in(identifiers.get("PatientBirthDate"), rel.lower()):
        found.append("PatientBirthDate")
    return tuple(found)


def identifying_paths_message(n: int, kinds: dict[str, int], where: object, consequence: str) -> str:
    """The refusal for paths that carry identifiers: how many, of which kinds (never the values), the fix."""
    found = ", ".join(f"{k} ({v})" for k, v in sorted(kinds.items()))
    return (f"{n} image path(s) under {where} contain an identifier of their own file: {found} (folders or files "
            f"named by MRN, name, birth date or accession number?); {consequence}. Rename the folders (e.g. to "
            "the patient_id pseudonyms), or pass --allow-identifying-paths to go on anyway. Nothing was written.")


def _squash(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


def _tokens(component: str) -> list[str]:
    """Alphanumeric runs of a name, split where letters meet digits: 'pt_12345a' -> pt, 12345, a."""
    return re.findall(r"[^\W\d_]+|\d+", component)


def _id_in(value: str, components: list[str]) -> bool:
    v = _squash(value)
    if not v:
        return False
    for c in components:
        stem = c.split(".")[0]
        if v in (_squash(c), _squash(stem)) or (len(v) >= 3 and v in _tokens(c)) or (len(v) >= 6 and v in _squash(c)):
            return True
    return False


def _name_in(name: str | None, components: list[str]) -> bool:
    """Parts of a DICOM person name (family^given^middle, '=' between alphabetic/ideographic groups)."""
    for group in (name or "").lower().split("="):
        parts = [_squash(p) for p in group.split("^") if _squash(p)]
        joined = {a + b for a in parts for b in parts if a != b} | {"".join(parts)} if len(parts) > 1 else set()
        for c in components:
            words = [w for w in re.split(r"[\W_]+", c) if w]
            runs = {"".join(words[i:j]) for i in range(len(words)) for j in range(i + 2, len(words) + 1)}
            if joined & ({_squash(c), *words, *runs}):
                return True
            tokens = set(_tokens(c))
            if any((len(p) >= 3 and p in tokens) or (len(p) >= 4 and p in _squash(c)) for p in parts):
                return True
    return False


def _date_forms(value: str | None) -> tuple[set[str], set[str]]:
    """(8-digit, 6-digit) spellings of a DICOM date YYYYMMDD: ymd, dmy, mdy with 4- and 2-digit years."""
    digits = re.sub(r"\D", "", value or "")
    if len(digits) != 8:
        return set(), set()
    y, m, d = digits[:4], digits[4:6], digits[6:]
    long = {y + m + d, d + m + y, m + d + y}
    short = {y[2:] + m + d, d + m + y[2:], m + d + y[2:]}
    return long, short


def _date_in(value: str | None, rel: str) -> bool:
    long, short = _date_forms(value)
    if not long:
        return False
    text = _MONTH_RE.sub(lambda m: f"{_MONTHS[m.group(1)]:02d}", rel)
    for component in text.split("/"):
        for run in re.findall(r"\d+", component):
            if any(f in run for f in long) or run in short:
                return True
        for groups in _SEPARATED_DATE.findall(component):
            spelled = "".join(g.zfill(2) for g in groups)
            if spelled in long or spelled in short:
                return True
    return False

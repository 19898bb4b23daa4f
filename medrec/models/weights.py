"""Where pretrained weights come from: torchvision's cache, a download, or a file.

ImageNet weights live where torchvision keeps them, `torch.hub.get_dir()/checkpoints/<file>`
(`$TORCH_HOME/hub/checkpoints`), under torchvision's file names, so a cache filled by
torchvision, by `python -m medrec.weights pull` or by `... import` serves both.

Hash checks. torchvision verifies the sha256 prefix in the file name only when it downloads.
medrec also verifies it every time it loads a cached file: the full sha256 is computed anyway
for the run's provenance, and a truncated or swapped file then fails with its name and the fix
instead of loading silently. A file failing the check is an error even with
`allow_random_init` (that flag covers weights that are missing, not weights that are wrong).

Downloads never hang an air-gapped machine: the host (or proxy) is resolved and connected to in
a helper thread that is abandoned after NETWORK_TIMEOUT_S, so the failure comes within that time
even when DNS itself blocks. `MEDREC_OFFLINE=1` skips the network altogether.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import tarfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import Request, getproxies, proxy_bypass, urlopen

import torch

from medrec.errors import WeightsError
from medrec.fileio import atomic_open
from medrec.models.specs import SPECS, ArchSpec, get_spec, hash_prefix

logger = logging.getLogger(__name__)

NETWORK_TIMEOUT_S = 4.0  # reaching the host; an air-gapped machine fails within this
READ_TIMEOUT_S = 60.0  # per socket read once connected
OFFLINE_ENV = "MEDREC_OFFLINE"
EXPORT_FORMAT = "medrec-weights/1"
_CHUNK = 1 << 20
_sha_memo: dict[tuple[str, int, int], str] = {}


def cache_dir() -> Path:
    """torchvision's weights cache, `torch.hub.get_dir()/checkpoints` (follows $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_path(spec: ArchSpec) -> Path:
    return cache_dir() / spec.weights_file


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def _memo_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def _remember(path: Path, sha: str) -> None:
    _sha_memo[_memo_key(path)] = sha


def file_sha256(path: str | Path, *, fresh: bool = False) -> str:
    """Full sha256 of a file, remembered per (path, mtime, size) for this process unless `fresh`."""
    path = Path(path)
    key = _memo_key(path)
    if fresh or key not in _sha_memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _sha_memo[key] = h.hexdigest()
    return _sha_memo[key]


def verify_file(path: Path, *, fresh: bool = False) -> str:
    """Return the file's sha256 or raise WeightsError if it misses the prefix in its name."""
    sha = file_sha256(path, fresh=fresh)
    prefix = hash_prefix(path.name)
    if prefix and not sha.startswith(prefix):
        raise WeightsError(
            f"{path} is corrupt or not the official file: its sha256 {sha[:16]}... does not start "
            f"with '{prefix}' as its name says; delete it and run "
            f"`python -m medrec.weights pull` (or `import`) again"
        )
    return sha


@dataclass(frozen=True)
class Weights:
    """A state dict to load and the provenance to record for it."""

    state_dict: Mapping[str, torch.Tensor] | None
    provenance: dict[str, Any]
    layout: str = "torchvision"  # "torchvision" (3 channels, 1000 classes) | "medrec" | "unknown"


def _provenance(init: str, file: str | None = None, sha: str | None = None) -> dict[str, Any]:
    return {"initialisation": init, "weights_file": file, "weights_sha256": sha}


def resolve(cfg: Any, spec: ArchSpec) -> Weights:
    """The initial weights `cfg.weights` asks for: imagenet | none | a path.

    Raises:
        WeightsError: the weights cannot be found, downloaded, verified or read.
    """
    if cfg.weights == "none":
        return Weights(None, _provenance("random"))
    if cfg.weights == "imagenet":
        return _imagenet(spec, allow_random=cfg.allow_random_init)
    return _from_file(Path(cfg.weights).expanduser())


def _imagenet(spec: ArchSpec, *, allow_random: bool) -> Weights:
    path = cache_path(spec)
    if not path.exists():
        reason = f"{OFFLINE_ENV}=1 is set" if offline() else None
        if reason is None:
            try:
                download(spec, path)
            except (OSError, HTTPException) as exc:  # URLError, timeouts, refusals are OSErrors
                reason = f"the download failed: {exc}"
        if reason is not None:
            return _unavailable(spec, path, reason, allow_random)
    sha = verify_file(path)
    return Weights(_load(path), _provenance("imagenet", spec.weights_file, sha))


def _unavailable(spec: ArchSpec, path: Path, reason: str, allow_random: bool) -> Weights:
    msg = (
        f"{spec.name} ImageNet weights not found at {path} and {reason}. "
        f"On a machine with internet run `python -m medrec.weights pull {spec.name}` "
        f"(it downloads {spec.weights_url}), then `python -m medrec.weights export weights.tar`; "
        f"bring weights.tar here and run `python -m medrec.weights import weights.tar`. "
        f"Or copy that URL's file to {path}. To train without ImageNet weights set "
        f"model.weights: none (or model.allow_random_init: true)."
    )
    if not allow_random:
        raise WeightsError(msg)
    loud = f"TRAINING FROM RANDOM INITIALISATION because model.allow_random_init is true: {msg}"
    logger.warning(loud)  # once, through logging only: it reaches stderr and train.log (issue 18.4)
    return Weights(None, _provenance("random (ImageNet weights unavailable)"))


def _load(path: Path) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors have no common base
        raise WeightsError(f"{path}: cannot be read as a torch state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict or medrec checkpoint")
    return obj


def _from_file(path: Path) -> Weights:
    if not path.is_file():
        raise WeightsError(f"model.weights file {path} not found; valid: imagenet, none or a path to a state dict")
    obj = _load(path)
    layout = "unknown"
    if str(obj.get("format", "")).startswith("medrec-checkpoint"):
        obj, layout = obj["model"], "medrec"
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict (values must all be tensors) nor a medrec checkpoint")
    return Weights(obj, _provenance("file", str(path.resolve()), file_sha256(path)), layout)


# ---- network ---------------------------------------------------------------------------------


def _endpoint(url: str) -> tuple[str, int]:
    """The (host, port) a request for `url` connects to first: the proxy if one applies."""
    parts = urlparse(url)
    proxy = getproxies().get(parts.scheme)
    if proxy and not proxy_bypass(parts.hostname or ""):
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or "", p.port or (443 if p.scheme == "https" else 80)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def check_reachable(url: str, timeout: float = NETWORK_TIMEOUT_S) -> None:
    """Raise OSError unless `url`'s host (or proxy) accepts a connection within `timeout` s.

    getaddrinfo ignores socket timeouts and can block for tens of seconds without a DNS
    server, so the check runs in a daemon thread that is abandoned at the deadline.
    """
    host, port = _endpoint(url)
    result: list[BaseException | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=attempt, name="medrec-weights-reachable", daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        raise TimeoutError(f"{host}:{port} not reachable within {timeout:.0f} s (no network?)")
    if result[0] is not None:
        raise OSError(f"{host}:{port} not reachable: {result[0]}")


def download(spec: ArchSpec, dest: Path | None = None) -> Path:
    """Download `spec`'s weights into the cache, verifying the sha256 prefix of the name.

    Raises:
        OSError: the host cannot be reached or the transfer fails.
        WeightsError: the downloaded bytes do not match the name's hash prefix.
    """
    dest = dest or cache_path(spec)
    url = spec.weights_url
    check_reachable(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, dest)
    start = time.monotonic()
    with atomic_open(dest) as f:  # a failed or mismatching transfer leaves no file behind
        with urlopen(Request(url, headers={"User-Agent": "medrec"}), timeout=READ_TIMEOUT_S) as u:
            sha = _copy_hashing(u, f)
        prefix = hash_prefix(dest.name)
        if prefix and not sha.startswith(prefix):
            raise WeightsError(
                f"download of {url} has sha256 {sha[:16]}..., expected prefix '{prefix}'; try again"
            )
    _remember(dest, sha)
    logger.info("downloaded %s (%.0f MB, %.1f s)", dest.name, dest.stat().st_size / 1e6, time.monotonic() - start)
    return dest


def _copy_hashing(src: Any, f: Any) -> str:
    h = hashlib.sha256()
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        f.write(chunk)
    return h.hexdigest()


# ---- cache maintenance (python -m medrec.weights) ----------------------------------------------


def known_files(archs: Iterable[str] | None = None) -> dict[str, ArchSpec]:
    """Weights file name -> spec, for `archs` (default: every architecture)."""
    specs = [get_spec(a) for a in archs] if archs else list(SPECS.values())
    return {s.weights_file: s for s in specs}


def check_cache() -> list[tuple[str, str, str]]:
    """(arch, file, status) per known file; status: "ok", "not cached" or "CORRUPT: ..."."""
    rows = []
    for name, spec in known_files().items():
        path = cache_dir() / name
        if not path.exists():
            rows.append((spec.name, name, "not cached"))
            continue
        try:
            verify_file(path, fresh=True)  # `check` exists to read the bytes again
            rows.append((spec.name, name, "ok"))
        except WeightsError:
            rows.append((spec.name, name, f"CORRUPT: sha256 {file_sha256(path)[:16]}... does not match the name"))
    return rows


def export_cache(tar_path: str | Path, archs: Iterable[str] | None = None) -> list[str]:
    """Write the cached (verified) weights files and a sha256 manifest into an uncompressed tar.

    Raises:
        WeightsError: nothing to export, or a cached file fails its hash check.
    """
    files = [cache_dir() / n for n in known_files(archs) if (cache_dir() / n).exists()]
    if not files:
        raise WeightsError(f"no weights cached in {cache_dir()}; run `python -m medrec.weights pull ARCH` first")
    manifest = {
        "format": EXPORT_FORMAT,
        "torch": torch.__version__,
        "files": [{"name": p.name, "sha256": verify_file(p), "size": p.stat().st_size} for p in files],
    }
    data = json.dumps(manifest, indent=1).encode()
    tar_path = Path(tar_path)
    with atomic_open(tar_path) as f, tarfile.open(fileobj=f, mode="w") as tar:
        # weights do not compress; plain tar is as small and faster
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
        for p in files:
            tar.add(p, arcname=p.name, recursive=False)
    return [p.name for p in files]


def import_cache(tar_path: str | Path) -> list[str]:
    """Install the files of an export tar into the cache, each verified against the manifest.

    Raises:
        WeightsError: not a medrec weights tar, or a file fails its sha256 (nothing bad installed).
    """
    tar_path = Path(tar_path)
    try:
        tar = tarfile.open(tar_path, "r")
    except (OSError, tarfile.TarError) as exc:
        raise WeightsError(f"{tar_path}: not a readable tar ({exc})") from None
    with tar:
        manifest = _read_manifest(tar, tar_path)
        dest_dir = cache_dir()
        dest_dir.mkdir(parents=True, exist_ok=True)
        installed = []
        for entry in manifest["files"]:
            name, expected = entry["name"], entry["sha256"]
            member = tar.getmember(name) if name in tar.getnames() else None
            if Path(name).name != name or not hash_prefix(name) or member is None or not member.isfile():
                raise WeightsError(
                    f"{tar_path}: manifest entry '{name}' is missing, not a plain file or not named "
                    "<name>-<sha256 prefix>.<ext>"
                )
            with atomic_open(dest_dir / name) as f:  # a damaged member installs nothing
                sha = _copy_hashing(tar.extractfile(member), f)
                prefix = hash_prefix(name)
                if sha != expected or (prefix and not sha.startswith(prefix)):
                    raise WeightsError(
                        f"{tar_path}: {name} has sha256 {sha[:16]}..., manifest says {expected[:16]}...; "
                        "the tar is damaged, export it again"
                    )
            _remember(dest_dir / name, sha)
            installed.append(name)
    return installed


def _read_manifest(tar: tarfile.TarFile, tar_path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    except (KeyError, AttributeError, json.JSONDecodeError):
        raise WeightsError(
            f"{tar_path}: no valid manifest.json; make it with `python -m medrec.weights export`"
        ) from None
    if manifest.get("format") != EXPORT_FORMAT:
        raise WeightsError(f"{tar_path}: manifest format {manifest.get('format')!r}, expected {EXPORT_FORMAT!r}")
    return manifest


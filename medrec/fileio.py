"""Atomic file writes: every medrec writer goes through here.

A file is written to a temporary file in the same directory, flushed and fsynced, then renamed
over the destination with `os.replace` (atomic on POSIX and Windows), and the directory is fsynced
so the rename itself survives a power cut. A crash or kill at any moment leaves either the old file
or the new one, never a torn one, and never a stray temporary file after a Python exception.

    atomic_write_text(run_dir / "notes.txt", "hello\n")
    atomic_write_json(run_dir / "run.json", info)             # indent=2, sorted keys, trailing newline
    atomic_write_bytes(path, lambda f: torch.save(obj, f))    # a writer callable streams into the file
    with atomic_open(path) as f: ...                          # the same as a context manager
    atomic_write_text(secret, token, mode=0o600)              # permissions set before the rename
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

Writer = Callable[[IO[bytes]], Any]


@contextlib.contextmanager
def atomic_open(path: str | Path, *, mode: int | None = None) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces `path` atomically when the block ends without an error.

    Args:
        path: destination; its parent directories are created.
        mode: permission bits for the new file (e.g. 0o600); default: the usual umask-derived mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode if mode is not None else _default_mode())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes | Writer, *, mode: int | None = None) -> None:
    """Write `data` (bytes, or a callable that writes into the binary file it is given) atomically."""
    with atomic_open(path, mode=mode) as f:
        if callable(data):
            data(f)
        else:
            f.write(data)


def atomic_write_text(path: str | Path, text: str, *, mode: int | None = None, encoding: str = "utf-8") -> None:
    """Write `text` atomically."""
    atomic_write_bytes(path, text.encode(encoding), mode=mode)


def atomic_write_json(
    path: str | Path, obj: Any, *, mode: int | None = None, indent: int | None = 2,
    sort_keys: bool = True, default: Callable[[Any], Any] | None = None,
) -> None:
    """Write `obj` as JSON (indented, sorted keys, trailing newline) atomically.

    Raises:
        TypeError / ValueError: `obj` is not JSON-serialisable; the destination is left untouched.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)
    atomic_write_text(path, text + "\n", mode=mode)


def _default_mode() -> int:
    # mkstemp creates 0600 files; a plain open() would give 0666 minus the umask, which is what users expect
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

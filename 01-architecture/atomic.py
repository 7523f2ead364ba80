"""Atomic file writes: a reader sees the old file or the complete new one, whatever instant a crash hits."""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path, mode: str = "wb", **open_kwargs):
    """A file on a temporary name beside `path`; on success flushed, fsynced and renamed onto
    `path`, then the directory fsynced (so the rename itself survives a power cut); on failure
    the temporary file is removed and `path` is left as it was.

    The temporary file is created by open(), so it gets the mode the umask gives (0644 under the
    usual 022), not the owner-only mode of tempfile.mkstemp."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, mode.replace("w", "x"), **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_path(path.parent)


def atomic_write_text(path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_output(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def fsync_path(path) -> None:
    """Flush a file or a directory to disk; a directory's fsync makes the renames inside it durable
    (POSIX; a no-op for a directory where directories cannot be opened)."""
    flags = os.O_RDONLY
    if os.path.isdir(path):
        if not hasattr(os, "O_DIRECTORY"):
            return
        flags |= os.O_DIRECTORY
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

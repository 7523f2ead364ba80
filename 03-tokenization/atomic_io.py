"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""
import contextlib
import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", **open_kwargs):
    """Open a temporary file next to `path`; on success flush, fsync and rename it onto `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, mode, **open_kwargs) as handle:
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())  # mkstemp's file is owner-only
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def atomic_write_text(path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)

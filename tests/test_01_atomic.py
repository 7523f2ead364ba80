"""The one atomic writer: the old file or the whole new one, no temporary left, the umask's file mode."""
import os
import stat

import pytest

from mlot.architecture import atomic
from mlot.architecture.atomic import atomic_output, atomic_write_text


@pytest.fixture
def umask():
    """Set the process umask for one test, restored afterwards."""
    before = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(before)


@pytest.mark.parametrize("mask, expected_mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_file_has_the_mode_the_umask_gives(tmp_path, umask, mask, expected_mode):
    umask(mask)
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "grüße\n")
    assert stat.S_IMODE(path.stat().st_mode) == expected_mode
    assert path.read_bytes() == "grüße\n".encode("utf-8")
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_replacing_keeps_no_temporary(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    with atomic_output(path) as handle:
        handle.write(b"new")
        assert path.read_bytes() == b"old"  # nothing visible under the name before the rename
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_an_error_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_output(path) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("disk on fire")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_the_rename_is_made_durable_by_a_directory_fsync(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic, "fsync_path", lambda path: synced.append(os.fspath(path)))
    atomic_write_text(tmp_path / "a.txt", "a")
    assert synced == [os.fspath(tmp_path)]

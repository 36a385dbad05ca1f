"""Atomic writes and the clean-up of temp files left by killed writers."""

import os
import subprocess

import pytest

from ltpa.errors import LtpaError
from ltpa.io import HOST, atomic_open, remove_stale_temps


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_open(dest) as fh:
            fh.write(b"half")
            raise RuntimeError("killed")
    assert dest.read_bytes() == b"good" and os.listdir(tmp_path) == ["out.bin"]
    with atomic_open(dest) as fh:
        fh.write(b"new")
    assert dest.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]


def test_only_temps_of_dead_writers_are_removed(tmp_path):
    dest = tmp_path / "x.npy"
    mine = tmp_path / f".x.npy.ltpa-tmp-{HOST}-{os.getpid()}-abc"  # a live writer (this test)
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f".x.npy.ltpa-tmp-{HOST}-{gone.pid}-abc"
    other_recent = tmp_path / ".x.npy.ltpa-tmp-elsewhere-123-abc"  # another node, recent
    other_old = tmp_path / ".x.npy.ltpa-tmp-elsewhere-124-abc"  # another node, a week old
    for p in (mine, dead, other_recent, other_old):
        p.write_text("partial")
    os.utime(other_old, (0, 0))
    remove_stale_temps(dest)
    assert mine.exists() and other_recent.exists()
    assert not dead.exists() and not other_old.exists()


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(LtpaError, match="a file, not a folder, has that name"):
        with atomic_open(tmp_path / "f" / "out.npy"):
            pass

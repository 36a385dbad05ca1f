"""Atomic writes and the clean-up of temp files left by killed writers."""

import os
import subprocess

import pytest

from ltpa.errors import LtpaError
from ltpa.io import atomic_open, output_lock


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


HOLD = """
import sys, time
from ltpa.io import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_one_writer_per_output(tmp_path):
    """A job holds its output's lock; another process's job for that output fails at once."""
    import sys

    dest = tmp_path / "x.npy"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(dest)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LtpaError, match=rf"x.npy' is being written by another ltpa job "
                                            rf"\(pid {holder.pid}\)"):
            with output_lock(dest):
                pass
        with output_lock(tmp_path / "y.npy"):  # another output of the same folder: free
            pass
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: the lock is free again, and its temp files are removed under it
    stale = tmp_path / ".x.npy.ltpa-tmp-abc"
    stale.write_text("partial")
    with output_lock(dest):
        assert not stale.exists()
        with pytest.raises(LtpaError, match="already being written by this process"):
            with output_lock(dest):
                pass


def test_a_failed_check_before_the_rename_keeps_the_old_output(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"good")

    def changed():
        raise LtpaError("an input changed")

    with pytest.raises(LtpaError, match="an input changed"):
        with atomic_open(dest, before_rename=changed) as fh:
            fh.write(b"new")
    assert dest.read_bytes() == b"good" and os.listdir(tmp_path) == ["out.bin"]


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(LtpaError, match="a file, not a folder, has that name"):
        with atomic_open(tmp_path / "f" / "out.npy"):
            pass

"""Rebuild stamps (ltpa.study.stamps): a file later than the output, new each time, removed
once the output is up to date; in-process (the workflow's use: test_study_home,
test_workflow, test_status)."""

import os
import time

import pytest

from ltpa import LtpaError
from ltpa.study import stamps
from ltpa.study.stamps import LEAD_NS, remove_other_stamps, stamp_path, write_stamp


def test_stamp_path_names_the_rule_and_the_absolute_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = stamp_path("study.ltpa", "label_streamlines", "s1/scale33.npy")
    assert p == tmp_path / "study.ltpa" / "stale" / "label_streamlines" / str(
        tmp_path / "s1" / "scale33.npy.stamp").lstrip("/")


def test_a_stamp_is_later_than_its_output_even_one_dated_in_the_future(tmp_path):
    out = tmp_path / "out.npy"
    out.write_bytes(b"x")
    out_ns = out.stat().st_mtime_ns
    stamp = write_stamp(stamp_path(tmp_path / "w", "r", out), out)
    # later than the output, as seen in float seconds (Snakemake's comparison) too, and no
    # later than it must be: a job rebuilding the output right now writes it after the stamp
    got = stamp.stat().st_mtime_ns
    assert got >= out_ns + LEAD_NS and stamp.stat().st_mtime > out.stat().st_mtime
    assert got <= max(time.time_ns(), out_ns + 10**7)  # now, or 10 ms at most past it
    # an output written long ago: the stamp is now
    old = time.time_ns() - 3600 * 10**9
    os.utime(out, ns=(old, old))
    t0 = time.time_ns()
    write_stamp(stamp, out)
    assert t0 <= stamp.stat().st_mtime_ns <= time.time_ns()
    future = time.time_ns() + 3600 * 10**9  # a skewed clock wrote the output
    os.utime(out, ns=(future, future))
    write_stamp(stamp, out)
    assert future < stamp.stat().st_mtime_ns == future + LEAD_NS <= future + 10**7
    # no output yet: now
    t0 = time.time_ns()
    gone = write_stamp(stamp_path(tmp_path / "w", "r", tmp_path / "none"), tmp_path / "none")
    assert t0 <= gone.stat().st_mtime_ns <= time.time_ns()


@pytest.mark.parametrize("grain_s", [1, 2])
def test_on_a_file_system_of_whole_seconds_a_stamp_is_still_later(tmp_path, monkeypatch,
                                                                   grain_s):
    """Where times are kept in whole seconds (2 on FAT), a stamp 1 ms after an output written
    this second would be stored at the output's time: it then goes 1 s, else 2 s, later."""
    real_utime = os.utime

    def coarse_utime(path, ns):  # the file system truncates what it is given
        real_utime(path, ns=tuple(t // (grain_s * 10**9) * grain_s * 10**9 for t in ns))

    monkeypatch.setattr(stamps.os, "utime", coarse_utime)
    out = tmp_path / "out.npy"
    out.write_bytes(b"x")
    now_s = time.time_ns() // 10**9 * 10**9
    coarse_utime(out, ns=(now_s, now_s))  # written this second, as that file system keeps it
    stamp = write_stamp(stamp_path(tmp_path / "w", "r", out), out)
    assert stamp.stat().st_mtime_ns > out.stat().st_mtime_ns
    assert stamp.stat().st_mtime_ns <= now_s + 2 * 10**9


def test_each_stamp_has_new_content(tmp_path):
    """Snakemake skips an input whose checksum it recorded before: a stamp written again
    for the same output must differ."""
    out = tmp_path / "o"
    stamp = stamp_path(tmp_path / "w", "r", out)
    first = write_stamp(stamp, out).read_text()
    second = write_stamp(stamp, out).read_text()
    assert first != second and str(out) in first


def test_a_stamp_that_cannot_be_written_names_the_output_and_the_stamp(tmp_path):
    (tmp_path / "w").write_text("a file where the study's folder should be")
    stamp = stamp_path(tmp_path / "w", "r", tmp_path / "o")
    with pytest.raises(LtpaError, match=r"'.*/o' is out of date, but its rebuild stamp "
                                        r"'.*\.stamp' cannot be written"):
        write_stamp(stamp, tmp_path / "o")


def test_only_stamps_not_kept_are_removed(tmp_path):
    work = tmp_path / "w"
    keep = write_stamp(stamp_path(work, "r", tmp_path / "a"), tmp_path / "a")
    drop = write_stamp(stamp_path(work, "r", tmp_path / "b"), tmp_path / "b")
    other = work / "stale" / "notes.txt"
    other.write_text("not a stamp")
    assert remove_other_stamps(work, [keep]) == 1
    assert keep.exists() and not drop.exists() and other.exists()
    assert remove_other_stamps(tmp_path / "none", []) == 0
    # a stale/ that is a link to another folder is not walked
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.stamp").write_text("")
    linked = tmp_path / "w2"
    linked.mkdir()
    (linked / "stale").symlink_to(elsewhere)
    assert remove_other_stamps(linked, []) == 0 and (elsewhere / "x.stamp").exists()

"""What kind of file is at a path, from its first bytes: may an output replace it?

The workflow replaces an existing output that is out of date. That is right for a file of
the output's own format (an older build, or one made by dsi2 without a sidecar), and wrong
for anything else the JSON happens to name: another study's ``local_data.json``, a trk, a
NIfTI. ``foreign_kind`` answers, before any job, whether the file at an output path is of
another format (``overwrite_foreign`` in the config forces the replacement).
"""

from __future__ import annotations

import gzip
import os
import re
import stat
import zlib

from .targets import (
    RULE_EXPORT,
    RULE_INDEX,
    RULE_LABEL,
    RULE_MAP_B0,
    RULE_PATTERNS,
    RULE_SCALARS,
)

SNIFF_BYTES = 352  # a NIfTI-1 header's magic ends at byte 348

# the format each rule writes
FORMAT_OF_RULE = {RULE_INDEX: "pickle", RULE_EXPORT: "trk", RULE_LABEL: "npy",
                  RULE_SCALARS: "npy", RULE_MAP_B0: "nifti", RULE_PATTERNS: "npz"}
DESCRIPTION = {"pickle": "a pickle (.pkl)", "trk": "a TrackVis .trk", "npy": "a NumPy .npy",
               "npz": "a NumPy .npz (zip)",
               "nifti": "a NIfTI image", "json": "a JSON file", "gzip": "a gzip file",
               "text": "a text file", "unknown": "of an unknown format"}


def kind_of_bytes(head: bytes) -> str:
    """The format of a file whose first bytes are ``head`` (see DESCRIPTION).

    Parameters
    ----------
    head : bytes
        The file's first bytes (``SNIFF_BYTES`` of them, or fewer for a short file; a
        NIfTI is recognised only from 348 bytes on).

    Returns
    -------
    str
        A key of ``DESCRIPTION``: "npy", "pickle", "npz", "trk", "nifti", "gzip", "json",
        "text" (valid UTF-8) or "unknown" (also for empty ``head``).
    """
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if re.match(rb"\((?:[dl]p0|[dlt])?|c[\w.]+\n[\w.]+\n", head) and head[:2] != b"()":
        return "pickle"  # protocol 0 or 1 (Python 2's default): MARK, or a GLOBAL first
    if head.startswith(b"PK\x03\x04"):
        return "npz"  # a zip archive: what numpy's savez writes
    if head.startswith(b"TRACK"):
        return "trk"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    text = head.lstrip()
    if text[:1] in (b"{", b"["):
        return "json"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    return "text" if head else "unknown"


def kind_of_file(path) -> str | None:
    """The format of the regular file at ``path``, or None when there is none (or it is
    empty: nothing to lose).

    The file is opened without blocking (a FIFO never stalls); a gzip file is judged by
    its decompressed start (a .nii.gz is "nifti").

    Parameters
    ----------
    path : str or os.PathLike
        The path to look at.

    Returns
    -------
    str or None
        A key of ``DESCRIPTION`` (``kind_of_bytes``; "gzip" for a gzip file whose content
        is of no known format or cannot be decompressed); None when nothing is there, it is
        not a regular file, it is empty, or it cannot be opened or read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        head = os.read(fd, SNIFF_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    if head.startswith(b"\x1f\x8b"):
        try:  # a gzip file: its decompressed start says what it holds
            with gzip.open(path, "rb") as fh:
                inner = fh.read(SNIFF_BYTES)
            kind = kind_of_bytes(inner)
            return kind if kind != "unknown" else "gzip"
        except (OSError, EOFError, zlib.error):
            return "gzip"
    return kind_of_bytes(head)


def foreign_kind(path, rule: str) -> str | None:
    """The description of the file at ``path`` when it is not of ``rule``'s output format
    (e.g. 'a JSON file'), else None (absent, empty, or of the right format).

    For a rule that writes a NIfTI, a gzip file or a file of unknown format counts as the
    right format (other image formats, e.g. .mgz).

    Parameters
    ----------
    path : str or os.PathLike
        An output path.
    rule : str
        The rule that makes it (a key of ``FORMAT_OF_RULE``).

    Returns
    -------
    str or None
        The file's description from ``DESCRIPTION``, or None.

    Raises
    ------
    KeyError
        If ``rule`` is not one of ``FORMAT_OF_RULE`` and a file is there.
    """
    kind = kind_of_file(path)
    if kind is None:
        return None
    want = FORMAT_OF_RULE[rule]
    if kind == want or (want == "nifti" and kind == "gzip"):
        return None
    if want == "nifti" and kind == "unknown":  # .mgz, ANALYZE .img: other image formats
        return None
    return DESCRIPTION[kind]

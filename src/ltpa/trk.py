"""Reading TrackVis .trk files fast, with the voxmm values exactly as stored.

The header is decoded with nibabel's own header dtype; the body is memory-mapped
and walked by its int32 point counts, so the points are never converted through
RAS mm (float32 round trips move points across voxel boundaries) and never copied
whole. ``Trk.iter_chunks`` hands out the points of a run of streamlines at a time.
"""

from __future__ import annotations

import gzip
from array import array
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nibabel.streamlines.trk import header_2_dtype

from .errors import LtpaError

log = logging.getLogger(__name__)

HEADER_SIZE = 1000
DEFAULT_CHUNK_POINTS = 4_000_000


@dataclass
class Trk:
    """A .trk file opened for reading: header fields plus an index of its records."""

    path: Path
    header: np.ndarray  # one record of nibabel's header_2_dtype (native byte order)
    words: np.ndarray  # body as 4-byte words, float32 with the file's byte order
    starts: np.ndarray  # int64, word index of each streamline's first point
    counts: np.ndarray  # int64, points per streamline
    n_scalars: int
    n_properties: int
    _offsets: np.ndarray = field(default=None, repr=False)

    @property
    def dim(self):
        return tuple(int(d) for d in self.header["dimensions"])

    @property
    def voxel_size(self):
        return tuple(float(v) for v in self.header["voxel_sizes"])

    @property
    def voxel_order(self) -> str:
        from .grids import normalize_order

        return normalize_order(self.header["voxel_order"].item())

    @property
    def n_streamlines(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_points(self) -> int:
        return int(self.counts.sum())

    @property
    def stride(self) -> int:
        return 3 + self.n_scalars

    @property
    def offsets(self) -> np.ndarray:
        """int64 (n+1,) cumulative point offsets: streamline s has points offsets[s]:offsets[s+1]."""
        if self._offsets is None:
            off = np.zeros(self.n_streamlines + 1, dtype=np.int64)
            np.cumsum(self.counts, out=off[1:])
            self._offsets = off
        return self._offsets

    def streamline(self, s: int) -> np.ndarray:
        """Points of streamline ``s`` as an (n, 3) float32 array (native byte order)."""
        n = int(self.counts[s])
        start = int(self.starts[s])
        rows = self.words[start:start + n * self.stride].reshape(n, self.stride)
        return np.ascontiguousarray(rows[:, :3], dtype=np.float32)

    def iter_chunks(self, max_points: int = DEFAULT_CHUNK_POINTS, check_finite=True):
        """Yield (first_streamline, points (P, 3) float32, lengths int64) for runs of streamlines."""
        n = self.n_streamlines
        offsets = self.offsets
        s0 = 0
        while s0 < n:
            # largest s1 with at most max_points points in [s0, s1), at least one streamline
            s1 = int(np.searchsorted(offsets, offsets[s0] + max_points, side="right")) - 1
            s1 = min(max(s1, s0 + 1), n)
            pts = self._points(s0, s1)
            if check_finite and pts.size and not np.isfinite(pts).all():
                bad_point = int(np.flatnonzero(~np.isfinite(pts).all(axis=1))[0])
                bad = int(np.searchsorted(offsets, offsets[s0] + bad_point, side="right")) - 1
                raise LtpaError(
                    f"file {str(self.path)!r}: streamline {bad} has a NaN or infinite "
                    f"coordinate; expected finite voxmm coordinates"
                )
            yield s0, pts, self.counts[s0:s1]
            s0 = s1

    def _points(self, s0: int, s1: int) -> np.ndarray:
        counts = self.counts[s0:s1]
        total = int(counts.sum())
        if total == 0:
            return np.empty((0, 3), dtype=np.float32)
        first = int(self.starts[s0]) - 1  # the count word of s0
        if self.n_scalars == 0 and self.n_properties == 0:
            # records are back to back: [n, x y z ...][n, x y z ...]; drop the count words
            last = int(self.starts[s1 - 1] + 3 * counts[-1])
            span = self.words[first:last]
            count_pos = self.starts[s0:s1] - 1 - first
            flat = np.delete(span, count_pos)
            return flat.astype(np.float32, copy=False).reshape(total, 3)
        # general layout: gather the first three words of every point row
        rows = np.repeat(self.starts[s0:s1] - self.stride * (self.offsets[s0:s1] - self.offsets[s0]),
                         counts) + self.stride * np.arange(total, dtype=np.int64)
        idx = rows[:, None] + np.arange(3)
        return self.words[idx].astype(np.float32, copy=False)


def _read_bytes(path: Path):
    """The file's bytes: memory-mapped for .trk, decompressed for .trk.gz."""
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError, zlib.error) as exc:
            raise LtpaError(f"file {str(path)!r}: not a readable gzip file ({exc})") from exc
    return np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else b""


def read_header(buf, path) -> tuple[np.ndarray, str]:
    """Decode the 1000-byte header; returns (record in native order, byte order '<' or '>')."""
    if len(buf) < HEADER_SIZE:
        raise LtpaError(
            f"file {str(path)!r}: {len(buf)} bytes is shorter than a TrackVis header "
            f"({HEADER_SIZE} bytes); the file is truncated or not a .trk"
        )
    raw = bytes(buf[:HEADER_SIZE])
    if raw[:5] != b"TRACK":
        raise LtpaError(
            f"file {str(path)!r}: not a TrackVis .trk file (magic {raw[:6]!r}, expected b'TRACK')"
        )
    hdr = np.frombuffer(raw, dtype=header_2_dtype.newbyteorder("<"))[0]
    order = "<"
    if int(hdr["hdr_size"]) != HEADER_SIZE:
        hdr = np.frombuffer(raw, dtype=header_2_dtype.newbyteorder(">"))[0]
        order = ">"
        if int(hdr["hdr_size"]) != HEADER_SIZE:
            raise LtpaError(f"file {str(path)!r}: header field hdr_size is not 1000 in either byte order")
    native = np.array(hdr, dtype=header_2_dtype.newbyteorder("="))
    return native, order


def open_trk(path, *, check_count=True) -> Trk:
    """Open a .trk (or .trk.gz) and index its records.

    Errors (LtpaError, naming the file): missing file, wrong magic, truncated
    header or body, negative counts, a header n_count that disagrees with the
    records found, bad dimensions or voxel sizes.
    """
    path = Path(path)
    if not path.exists():
        raise LtpaError(f"file {str(path)!r} does not exist")
    buf = _read_bytes(path)
    hdr, order = read_header(buf, path)
    dim = hdr["dimensions"]
    vs = hdr["voxel_sizes"]
    if np.any(dim <= 0) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise LtpaError(
            f"file {str(path)!r}: header has dim {tuple(int(d) for d in dim)} and voxel size "
            f"{tuple(float(v) for v in vs)}; expected positive dimensions and voxel sizes"
        )
    n_scalars = int(hdr["nb_scalars_per_point"])
    n_properties = int(hdr["nb_properties_per_streamline"])
    if n_scalars < 0 or n_properties < 0:
        raise LtpaError(f"file {str(path)!r}: negative scalar or property count in the header")
    body_bytes = len(buf) - HEADER_SIZE
    if body_bytes % 4:
        raise LtpaError(
            f"file {str(path)!r}: body of {body_bytes} bytes is not a whole number of 4-byte "
            f"values; the file is truncated"
        )
    words = np.frombuffer(buf, dtype=order + "f4", offset=HEADER_SIZE)
    starts, counts = walk_records(words, order, 3 + n_scalars, n_properties, path)
    n_count = int(hdr["nb_streamlines"])
    if check_count and n_count > 0 and n_count != counts.shape[0]:
        raise LtpaError(
            f"file {str(path)!r}: header n_count says {n_count} streamlines but the file holds "
            f"{counts.shape[0]}; the file is truncated or its header is wrong"
        )
    return Trk(path, hdr, words, starts, counts, n_scalars, n_properties)


def walk_records(words, order, stride, n_properties, path):
    """Follow the int32 counts through the body; returns (starts, counts) as int64 arrays.

    Only the count words are read (one Python step per streamline, ~0.2 s per
    million); the points stay in the mapped file.
    """
    total = int(words.shape[0])
    ints = words.view(order + "i4")
    if (order == "<") == (np.little_endian is True) and total:
        mv = memoryview(ints).cast("B").cast("i")
    else:
        mv = ints.astype(np.int32)
    found = array("q")
    append = found.append
    step = stride
    w = 0
    while w < total:
        n = mv[w]
        if n < 0:
            raise LtpaError(
                f"file {str(path)!r}: streamline {len(found)} has a negative point count ({n})"
            )
        w += 1 + n * step + n_properties
        append(n)
    if w > total:
        raise LtpaError(
            f"file {str(path)!r}: streamline {len(found) - 1} needs {found[-1]} points but the "
            f"file ends {(w - total) * 4} bytes early; the file is truncated"
        )
    counts = np.frombuffer(found, dtype=np.int64).copy() if found else np.zeros(0, np.int64)
    offsets = np.zeros(counts.shape[0], dtype=np.int64)
    if counts.shape[0] > 1:
        np.cumsum(counts[:-1], out=offsets[1:])
    idx = np.arange(counts.shape[0], dtype=np.int64)
    starts = idx * (1 + n_properties) + stride * offsets + 1
    return starts, counts

"""Reading TrackVis .trk files fast, with the voxmm values exactly as stored.

The header is decoded with nibabel's own header dtype; the body is memory-mapped
and walked by its int32 point counts in a compiled loop (``ltpa.kernels``), so the
points are never converted through RAS mm (float32 round trips move points across
voxel boundaries) and never copied whole. The kernels read the mapped body in
ranges of streamlines (``Trk.ranges``) and the pages of each finished range are
released (``madvise(MADV_DONTNEED)``), so the mapped file never sits in the
process's resident memory as a whole. ``Trk.iter_chunks`` hands out the points of
a run of streamlines at a time as numpy arrays (for tests and small files).
"""

from __future__ import annotations

import gzip
import logging
import mmap
import os
import weakref
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nibabel.streamlines.trk import header_2_dtype

from .errors import LtpaError

log = logging.getLogger(__name__)

HEADER_SIZE = 1000
DEFAULT_CHUNK_POINTS = 4_000_000
# words (4 bytes) per range handed to a kernel before its pages are released: 32 MB
RANGE_WORDS = 8 << 20
# first guess of the streamline count when the header's n_count is 0 (grown by doubling)
INITIAL_COUNTS = 1 << 16
_PAGE = mmap.PAGESIZE

# live mappings, so that a writer handed a buffer from one can copy the bytes
# file-to-file instead of paging them in (see ``mapped_source``)
_MAPPINGS: "weakref.WeakSet[_Mapping]" = weakref.WeakSet()


class _Mapping:
    """A read-only mapping of a whole file and where it sits in memory."""

    def __init__(self, mm: mmap.mmap, path: Path):
        self.mm = mm
        self.path = path
        self.size = len(mm)
        self.address = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
        _MAPPINGS.add(self)

    def release(self, start: int, stop: int) -> None:
        """Drop the process's pages of bytes [start, stop) (whole pages inside it only)."""
        lo = -(-start // _PAGE) * _PAGE
        hi = min(stop, self.size) // _PAGE * _PAGE
        if hi > lo:
            try:
                self.mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError, AttributeError):  # not on this platform: just keep them
                pass


def mapped_source(buffer):
    """(path, file offset, mapping) if ``buffer`` lies inside a file mapped by open_trk, else None."""
    try:
        view = np.frombuffer(buffer, dtype=np.uint8)
    except (TypeError, ValueError):
        return None
    if not view.size:
        return None
    addr = view.__array_interface__["data"][0]
    for m in list(_MAPPINGS):
        if m.address <= addr and addr + view.size <= m.address + m.size:
            return m.path, addr - m.address, m
    return None


class _HeaderGrid:
    """Grid fields read from a decoded TrackVis ``header`` record."""

    header: np.ndarray

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


@dataclass
class Trk(_HeaderGrid):
    """A .trk file opened for reading: header fields plus an index of its records."""

    path: Path
    header: np.ndarray  # one record of nibabel's header_2_dtype (native byte order)
    words: np.ndarray  # body as 4-byte words, float32 with the file's byte order
    starts: np.ndarray  # int64, word index of each streamline's first point
    counts: np.ndarray  # int64, points per streamline
    n_scalars: int
    n_properties: int
    _offsets: np.ndarray = field(default=None, repr=False)
    _mapping: _Mapping = field(default=None, repr=False)
    _native: np.ndarray = field(default=None, repr=False)

    def native_words(self) -> np.ndarray:
        """The body as read-only native-order float32 (the mapped words, or a swapped copy)."""
        if self._native is None:
            if self.words.dtype.isnative:
                self._native = self.words
            else:
                self._native = self.words.astype(np.float32)
                self._native.flags.writeable = False
        return self._native

    def ranges(self, max_words: int | None = None):
        """Yield (s0, s1): runs of whole streamlines spanning about ``max_words`` words each.

        After the consumer is done with a run (when the next one is requested), the
        process's pages of that part of the mapped file are released.
        """
        n = self.n_streamlines
        if not n:
            return
        max_words = RANGE_WORDS if max_words is None else max_words
        starts = self.starts
        s0 = 0
        while s0 < n:
            s1 = int(np.searchsorted(starts, starts[s0] + max_words, side="left"))
            s1 = min(max(s1, s0 + 1), n)
            yield s0, s1
            self.release_words(int(starts[s0]) - 1, int(starts[s1]) - 1 if s1 < n else None)
            s0 = s1

    def release_words(self, w0: int, w1=None) -> None:
        """Release the mapped pages of body words [w0, w1) (w1 None: to the end)."""
        if self._mapping is not None and self._native is self.words:
            stop = self._mapping.size if w1 is None else HEADER_SIZE + 4 * w1
            self._mapping.release(HEADER_SIZE + 4 * max(w0, 0), stop)



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
    """(buffer, mmap or None): memory-mapped for .trk, decompressed bytes for .trk.gz."""
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read(), None
        except (OSError, EOFError, zlib.error) as exc:
            raise LtpaError(f"file {str(path)!r}: not a readable gzip file ({exc})") from exc
    with open(path, "rb") as fh:
        if not os.fstat(fh.fileno()).st_size:
            return b"", None
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return mm, mm


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


@dataclass
class TrkBody(_HeaderGrid):
    """A .trk whose header is read and checked and whose body is mapped but not walked yet."""

    path: Path
    buffer: object
    header: np.ndarray
    order: str
    words: np.ndarray
    n_scalars: int
    n_properties: int
    mapping: _Mapping = None

    @property
    def native(self) -> bool:
        return self.order == ("<" if np.little_endian else ">")


    @property
    def n_hint(self) -> int:
        return int(self.header["nb_streamlines"])


def open_trk_body(path) -> TrkBody:
    """Read and check the header of a .trk (or .trk.gz) and map its body (no walk yet).

    Raises the header errors of ``open_trk`` (missing file, wrong magic, truncated
    header, bad dimensions or voxel sizes, negative scalar/property counts, a body
    that is not whole 4-byte words).
    """
    path = Path(path)
    if not path.exists():
        raise LtpaError(f"file {str(path)!r} does not exist")
    buf, mm = _read_bytes(path)
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
    words = np.frombuffer(buf, dtype=order + "f4", offset=HEADER_SIZE, count=body_bytes // 4)
    mapping = _Mapping(mm, path) if mm is not None else None
    return TrkBody(path, buf, hdr, order, words, n_scalars, n_properties, mapping)


def _check_n_count(path, n_count, n):
    if n_count > 0 and n_count != n:
        raise LtpaError(
            f"file {str(path)!r}: header n_count says {n_count} streamlines but the file holds "
            f"{n}; the file is truncated or its header is wrong"
        )


def open_trk(path, *, check_count=True) -> Trk:
    """Open a .trk (or .trk.gz) and index its records.

    Errors (LtpaError, naming the file): missing file, wrong magic, truncated
    header or body, negative counts, a header n_count that disagrees with the
    records found, bad dimensions or voxel sizes.
    """
    body = open_trk_body(path)
    path = body.path
    n_hint = body.n_hint
    starts, counts = walk_records(body.words, body.order, 3 + body.n_scalars, body.n_properties,
                                  path, n_hint=n_hint, mapping=body.mapping)
    if check_count:
        _check_n_count(path, n_hint, counts.shape[0])
    return Trk(path, body.header, body.words, starts, counts, body.n_scalars, body.n_properties,
               _mapping=body.mapping)


def walk_and_label(body: TrkBody, vs, adim, upper, rank, n_regions, start, progress=None):
    """Connection ids of every streamline of a native-order ``body`` in one sweep.

    Walks the records and labels each as it goes (``ltpa.kernels.walk_label``), so
    the body is read once; the pages are released behind the walk. Errors are those
    of ``open_trk`` (negative count, truncated body, header n_count mismatch) and,
    only when the structure is sound, the first streamline with a non-finite
    coordinate, in that order. Returns ``(ids int64, n_points_outside)``.
    """
    from .kernels import walk_label

    if not body.native:
        raise ValueError("walk_and_label needs a native-order body")
    path = body.path
    words = body.words
    ints = words.view(np.int32)
    total = int(words.shape[0])
    n_properties = body.n_properties
    stride = 3 + body.n_scalars
    mapping = body.mapping
    n_hint = min(body.n_hint, total // (1 + n_properties) + 1)
    ids = np.empty(n_hint + 1 if n_hint > 0 else INITIAL_COUNTS, dtype=np.int64)
    n_total = max(body.n_hint, 1)
    w = n = 0
    n_outside = 0
    bad = -1
    c = 0
    while w < total:
        w_stop = min(w + RANGE_WORDS, total)
        w0 = w
        while w < w_stop:
            w, n, status, c, n_out = walk_label(ints, words, w, w_stop, stride, n_properties, ids,
                                                n, bad < 0, vs, adim, upper, rank, n_regions,
                                                start)
            n_outside += n_out
            if status == 1:
                raise LtpaError(
                    f"file {str(path)!r}: streamline {n} has a negative point count ({int(c)})"
                )
            if status == 3:
                bad = n  # keep walking (counts only): structural errors are named first
            if n == ids.shape[0]:
                ids = np.concatenate([ids, np.empty(ids.shape[0], np.int64)])
        if mapping is not None:
            mapping.release(HEADER_SIZE + 4 * w0, HEADER_SIZE + 4 * min(w, total))
        if progress and bad < 0 and w < total:
            progress(n, max(n_total, n + 1))
    if w > total:
        raise LtpaError(
            f"file {str(path)!r}: streamline {n - 1} needs {int(c)} points but the "
            f"file ends {(w - total) * 4} bytes early; the file is truncated"
        )
    _check_n_count(path, body.n_hint, n)
    if bad >= 0:
        raise LtpaError(
            f"file {str(path)!r}: streamline {bad} has a NaN or infinite coordinate; "
            f"expected finite voxmm coordinates"
        )
    if progress:
        progress(n, n)
    return ids[:n].copy(), int(n_outside)


def walk_records(words, order, stride, n_properties, path, n_hint=0, mapping=None):
    """Follow the int32 counts through the body; returns (starts, counts) as int64 arrays.

    Only the count words are read, in a compiled loop (~0.15 s per million
    streamlines); the points stay in the mapped file,
    whose pages are released behind the walk.
    """
    from .kernels import walk_counts

    total = int(words.shape[0])
    if order == ("<" if np.little_endian else ">"):
        ints = words.view(np.int32)
    else:
        ints = words.view(order + "i4").astype(np.int32)
        mapping = None
    # the header's n_count is only a hint: never trust it for more records than the body can
    # hold (each record takes at least 1 + n_properties words), so a lying header cannot
    # make us allocate gigabytes before the n_count check names the problem
    n_hint = min(n_hint, total // (1 + n_properties) + 1)
    counts = np.empty(n_hint + 1 if n_hint > 0 else INITIAL_COUNTS, dtype=np.int64)
    w = n = 0
    while w < total:
        w_stop = min(w + RANGE_WORDS, total)
        w0 = w
        while w < w_stop:
            w, n, status, _ = walk_counts(ints, w, w_stop, stride, n_properties, counts, n)
            if status:
                raise LtpaError(
                    f"file {str(path)!r}: streamline {n} has a negative point count "
                    f"({int(counts[n])})"
                )
            if n == counts.shape[0]:
                counts = np.concatenate([counts, np.empty(counts.shape[0], np.int64)])
        if mapping is not None:
            mapping.release(HEADER_SIZE + 4 * w0, HEADER_SIZE + 4 * min(w, total))
    if w > total:
        raise LtpaError(
            f"file {str(path)!r}: streamline {n - 1} needs {int(counts[n - 1])} points but the "
            f"file ends {(w - total) * 4} bytes early; the file is truncated"
        )
    counts = counts[:n].copy()
    offsets = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(counts[:-1], out=offsets[1:])
    starts = np.arange(n, dtype=np.int64)
    starts *= 1 + n_properties
    offsets *= stride
    starts += offsets
    starts += 1
    return starts, counts

"""Reading TrackVis .trk files: one open file, read a range at a time, voxmm exactly as stored.

The header is decoded with nibabel's own header dtype. The body is never memory-mapped for
reading: a range of it at a time (4 MB) is read with ``pread`` into one reused buffer, the
whole records in it are found (``kernels.walk_range``) and handed to one action kernel
while they are in cache (``TrkFile.walk``). So

- every step reads the file once, through the one descriptor opened at the start (a job
  never reopens its input by path), and a file replaced or cut while it is read gives a
  clear ``LtpaError`` (a short read, or a changed identity), never a SIGBUS;
- memory does not grow with the file: the buffer is 4 MB (a single record larger than
  ``MAX_RECORD_BYTES`` is refused as corrupt); per streamline only what a step keeps
  (its count, an id).

Points are never converted through RAS mm (float32 round trips move points across voxel
boundaries): a point's voxel is ``floor(voxmm / voxel_size)`` of the stored value.
"""

from __future__ import annotations

import mmap
import os
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DamagedFileError, InputError, LtpaError, StaleOutputError, opening
from .grids import normalize_order

HEADER_SIZE = 1000
BUFFER_WORDS = 1 << 20  # 4 MB: a range stays in cache between the walk and the action
MAX_RECORD_BYTES = 64 << 20  # one streamline of 5.6 M points: only a corrupt file has one
MAX_STREAMLINE_POINTS = 5_500_000  # the same bound for files read other than by records
_GROW = 1 << 16

Identity = namedtuple("Identity", "dev ino size mtime_ns")


def header_dtype() -> np.dtype:
    """The TrackVis v2 header's dtype (nibabel's ``header_2_dtype``).

    Imported on first use: nibabel takes 70-300 ms to import, and the dry run and ``ltpa
    status`` import this module without reading any header.

    Returns
    -------
    numpy.dtype
        The structured dtype of the 1000-byte header, in native byte order as nibabel defines
        it (callers use ``newbyteorder``).
    """
    from nibabel.streamlines.trk import header_2_dtype

    return header_2_dtype


def identity_of(st: os.stat_result) -> Identity:
    """The identity (device, inode, size, mtime in ns) of a file from its ``stat`` result.

    Parameters
    ----------
    st : os.stat_result
        Result of ``os.stat`` or ``os.fstat``.

    Returns
    -------
    Identity
        The fields that tell whether a file on disk is still the same one.
    """
    return Identity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def describe_change(before: Identity, after: Identity | None) -> str:
    """Say in words how a file changed between two identities.

    Parameters
    ----------
    before : Identity
        The identity when the file was opened.
    after : Identity or None
        The identity now, or None when the file no longer exists.

    Returns
    -------
    str
        "was removed", "was replaced by another file", "changed size (a -> b bytes)" or
        "was modified".
    """
    if after is None:
        return "was removed"
    if (before.dev, before.ino) != (after.dev, after.ino):
        return "was replaced by another file"
    if before.size != after.size:
        return f"changed size ({before.size} -> {after.size} bytes)"
    return "was modified"


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
        return normalize_order(self.header["voxel_order"].item())

    @property
    def vox_to_ras(self) -> np.ndarray:
        return np.asarray(self.header["voxel_to_rasmm"], dtype=np.float64)


def read_header(buf, path) -> tuple[np.ndarray, str]:
    """Decode the 1000-byte header; returns (record in this machine's byte order, the file's
    byte order '<' or '>').

    The byte order is the one in which ``hdr_size`` reads 1000 (little-endian tried first).

    Parameters
    ----------
    buf : bytes-like
        The file's first bytes; only the first ``HEADER_SIZE`` (1000) are used.
    path : str or os.PathLike
        The file, named in error messages.

    Returns
    -------
    record : numpy.ndarray
        0-d structured array of ``header_dtype()`` in this machine's byte order (a copy).
    order : str
        The file's byte order: "<" or ">".

    Raises
    ------
    DamagedFileError
        If ``buf`` is shorter than 1000 bytes, does not start with b"TRACK", or its
        ``hdr_size`` is not 1000 in either byte order.
    """
    if len(buf) < HEADER_SIZE:
        raise DamagedFileError(
            f"file {str(path)!r}: {len(buf)} bytes is shorter than a TrackVis header "
            f"({HEADER_SIZE} bytes); the file is truncated or not a .trk"
        )
    raw = bytes(buf[:HEADER_SIZE])
    if raw[:5] != b"TRACK":
        raise DamagedFileError(
            f"file {str(path)!r}: not a TrackVis .trk file (magic {raw[:6]!r}, expected b'TRACK')"
        )
    hdr = np.frombuffer(raw, dtype=header_dtype().newbyteorder("<"))[0]
    order = "<"
    if int(hdr["hdr_size"]) != HEADER_SIZE:
        hdr = np.frombuffer(raw, dtype=header_dtype().newbyteorder(">"))[0]
        order = ">"
        if int(hdr["hdr_size"]) != HEADER_SIZE:
            raise DamagedFileError(
                f"file {str(path)!r}: header field hdr_size is not 1000 in either "
                f"byte order")
    record = np.array(hdr, dtype=header_dtype().newbyteorder("="))
    return record, order


def check_header(header, path, body_bytes: int) -> tuple[int, int]:
    """(n_scalars, n_properties) after checking the header's grid and the body's size.

    Parameters
    ----------
    header : numpy.ndarray
        The decoded header record (``read_header``).
    path : str or os.PathLike
        The file, named in error messages.
    body_bytes : int
        Size of the body (the file's size minus the 1000-byte header) in bytes.

    Returns
    -------
    n_scalars : int
        Scalars per point (``nb_scalars_per_point``).
    n_properties : int
        Properties per streamline (``nb_properties_per_streamline``).

    Raises
    ------
    DamagedFileError
        If a dimension is not positive or a voxel size is not positive and finite; if the
        scalar or property count is negative or above 10,000; if ``body_bytes`` is not a
        multiple of 4.
    """
    dim = header["dimensions"]
    vs = header["voxel_sizes"]
    if np.any(dim <= 0) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise DamagedFileError(
            f"file {str(path)!r}: header has dim {tuple(int(d) for d in dim)} and voxel size "
            f"{tuple(float(v) for v in vs)}; expected positive dimensions and voxel sizes"
        )
    n_scalars = int(header["nb_scalars_per_point"])
    n_properties = int(header["nb_properties_per_streamline"])
    if n_scalars < 0 or n_properties < 0:
        raise DamagedFileError(
            f"file {str(path)!r}: negative scalar or property count in the header")
    if n_scalars > 10_000 or n_properties > 10_000:
        raise DamagedFileError(
            f"file {str(path)!r}: header claims {n_scalars} scalars per point and "
            f"{n_properties} properties per streamline; expected at most 10,000")
    if body_bytes % 4:
        raise DamagedFileError(
            f"file {str(path)!r}: body of {body_bytes} bytes is not a whole number of 4-byte "
            f"values; the file is truncated"
        )
    return n_scalars, n_properties


@dataclass
class Range:
    """The whole records of one buffer: streamlines ``s0 .. s0 + n - 1`` of the file."""

    words: np.ndarray  # float32, this machine's byte order (the buffer)
    ints: np.ndarray  # int32 view of the same buffer
    starts: np.ndarray  # int64, word of each record's first point, relative to the buffer
    counts: np.ndarray  # int64, points per record
    n: int
    s0: int  # file streamline number of the first record
    w0: int  # body word of buffer[0]


@dataclass
class Walked:
    """What a walk over a .trk body found: streamline and point counts, and optionally the
    number of points of each streamline."""
    n_streamlines: int
    n_points: int
    counts: np.ndarray | None  # int32 per streamline (when asked for)


class TrkFile(_HeaderGrid):
    """A .trk opened for reading: the descriptor, its identity at open, the checked header.

    Use as a context manager (or ``close()``). ``walk`` reads the body; ``changed()`` says
    whether the file on disk is still the one that was opened.
    """

    def __init__(self, path):
        path = Path(path)
        with opening(path, "a .trk"):
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.path = path
        self.fd = fd
        try:
            st = os.fstat(fd)
            self.identity = identity_of(st)
            head = os.pread(fd, HEADER_SIZE, 0)
            self.header, self.order = read_header(head, path)
            self.body_bytes = st.st_size - HEADER_SIZE
            self.n_scalars, self.n_properties = check_header(self.header, path, self.body_bytes)
        except BaseException:
            # __del__ must not close the number again: by then another file may hold it
            self.fd = None
            os.close(fd)
            raise
        self.total_words = self.body_bytes // 4

    # ------------------------------------------------------------------ lifetime
    def close(self):
        """Close the file descriptor; calling it again does nothing."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ------------------------------------------------------------------ facts
    @property
    def stride(self) -> int:
        """Words (float32) per point: x, y, z and the per-point scalars."""
        return 3 + self.n_scalars

    @property
    def n_hint(self) -> int:
        """The header's ``nb_streamlines`` (0 in files whose writer did not fill it in)."""
        return int(self.header["nb_streamlines"])

    @property
    def machine_order(self) -> bool:
        """Whether the file's byte order is this machine's (its words need no byte swap)."""
        return self.order == ("<" if np.little_endian else ">")

    def changed(self) -> str | None:
        """How the file differs from when it was opened (descriptor or path), or None.

        The descriptor's identity is compared first, then that of the file now at ``path``.

        Returns
        -------
        str or None
            ``describe_change``'s text ("was removed", "was replaced by another file",
            "changed size (a -> b bytes)", "was modified"), or None when both the descriptor
            and the path still have the identity (device, inode, size, mtime) seen at open.
        """
        now = identity_of(os.fstat(self.fd))
        if now != self.identity:
            return describe_change(self.identity, now)
        try:
            there = identity_of(os.stat(self.path))
        except OSError:
            there = None
        if there != self.identity:
            return describe_change(self.identity, there)
        return None

    def check_unchanged(self, what="") -> None:
        """Raise if the file changed since it was opened (see ``changed``).

        Parameters
        ----------
        what : str, optional
            What was being done, for the message (default "it was read").

        Raises
        ------
        StaleOutputError
            If the file was removed, replaced or modified since it was opened.
        """
        change = self.changed()
        if change:
            raise StaleOutputError(
                f"file {str(self.path)!r} {change} while {what or 'it was read'}; "
                f"nothing was written: run again once the file is stable")

    # ------------------------------------------------------------------ reading
    def read_words(self, w0: int, out: np.ndarray) -> None:
        """Read body words [w0, w0 + len(out)) into ``out`` (float32), in this machine's byte
        order.

        Parameters
        ----------
        w0 : int
            Index of the first body word to read (0 is the word right after the header).
        out : numpy.ndarray
            Contiguous 4-byte array (float32, or an int32 view) filled in place; its length is
            the number of words read. Byte-swapped in place when the file's order is not
            this machine's.

        Raises
        ------
        InputError
            If reading fails with an OSError.
        DamagedFileError
            If the file ends before ``out`` is filled (it was cut or changed; the message
            says which).
        """
        view = memoryview(out).cast("B")
        offset = HEADER_SIZE + 4 * w0
        done = 0
        while done < view.nbytes:
            try:
                got = os.preadv(self.fd, [view[done:]], offset + done)
            except OSError as exc:
                raise InputError(f"file {str(self.path)!r} could not be read: {exc.strerror}") \
                    from None
            if got <= 0:
                raise DamagedFileError(
                    f"file {str(self.path)!r} ended {view.nbytes - done} bytes early while it "
                    f"was read: it {self.changed() or 'was cut'} (nothing was written)")
            done += got
        if not self.machine_order:
            out.byteswap(inplace=True)

    def walk(self, action=None, *, keep_counts=False, progress=None,
             buffer_words: int | None = None) -> Walked:
        """Read the body once, calling ``action(Range)`` on each buffer of whole records.

        Errors (LtpaError naming the file): a negative count, a record running past the end
        of the file (truncated), a record over ``MAX_RECORD_BYTES``, more records than a
        nonzero header ``n_count`` says (as soon as it happens) or fewer (at the end).

        Parameters
        ----------
        action : callable, optional
            Called as ``action(Range)`` for each buffer of whole records, in file order. The
            Range's arrays are views of reused buffers, valid only during the call. None:
            only count.
        keep_counts : bool, optional
            Also keep the number of points of each streamline (``Walked.counts``). Default
            False.
        progress : callable, optional
            Called as ``progress(words_done, total_words)`` after each buffer.
        buffer_words : int, optional
            Size of the read buffer in 4-byte words (default ``BUFFER_WORDS``, 4 MB); it is
            grown for a single record that does not fit.

        Returns
        -------
        Walked
            The number of streamlines and points, and with ``keep_counts`` an int32 array of
            points per streamline (else None).

        Raises
        ------
        DamagedFileError
            For a negative point count, a record running past the end of the file, a record
            over ``MAX_RECORD_BYTES``, or a streamline count that disagrees with a nonzero
            header ``n_count``; also from ``read_words`` when the file is cut while read.
        InputError
            From ``read_words``, when a read fails with an OSError.
        """
        # numba (~0.45 s to import) only when a file is read: the dry run and
        # `ltpa status` import this module without it
        from ..kernels import WALK_NEGATIVE, walk_range

        size = int(buffer_words or BUFFER_WORDS)
        buf = np.empty(size, dtype=np.float32)
        starts = np.empty(size // (1 + self.n_properties) + 1, dtype=np.int64)
        counts = np.empty_like(starts)
        n_count = self.n_hint if self.n_hint > 0 else -1
        kept = np.empty(min(n_count, self.total_words + 1) if n_count > 0 else _GROW,
                        dtype=np.int32) if keep_counts else None
        stride, n_prop = self.stride, self.n_properties
        w_file = 0
        s = 0
        n_points = 0
        total = self.total_words
        while w_file < total:
            k = min(buf.shape[0], total - w_file)
            self.read_words(w_file, buf[:k])
            ints = buf.view(np.int32)
            w, n, status = walk_range(ints, 0, k, stride, n_prop, starts, counts, 0)
            if status == WALK_NEGATIVE:
                raise DamagedFileError(
                    f"file {str(self.path)!r}: streamline {s + n} has a negative "
                    f"point count ({int(ints[w])})")
            if n == 0:  # the record at w_file does not fit in the buffer
                c = int(ints[0])
                need = 1 + c * stride + n_prop
                if w_file + need > total:
                    raise DamagedFileError(
                        f"file {str(self.path)!r}: streamline {s} needs {c} points but the file "
                        f"ends {(w_file + need - total) * 4} bytes early; the file is truncated")
                if 4 * need > MAX_RECORD_BYTES:
                    raise DamagedFileError(
                        f"file {str(self.path)!r}: streamline {s} claims {c} points "
                        f"({4 * need >> 20} MB); ltpa reads streamlines of up to "
                        f"{MAX_RECORD_BYTES >> 20} MB: the file is corrupt")
                buf = np.empty(need, dtype=np.float32)
                continue
            if n_count > 0 and s + n > n_count:
                raise DamagedFileError(
                    f"file {str(self.path)!r}: header n_count says {n_count} streamlines but "
                    f"the file holds more; the file is corrupt or its header is wrong")
            if action is not None:
                action(Range(buf, ints, starts[:n], counts[:n], n, s, w_file))
            if kept is not None:
                if s + n > kept.shape[0]:
                    kept = np.concatenate([kept, np.empty(max(n, kept.shape[0]), np.int32)])
                kept[s:s + n] = counts[:n]
            n_points += int(counts[:n].sum())
            s += n
            w_file += w
            if progress is not None:
                progress(w_file, total)
        if n_count > 0 and s != n_count:
            raise DamagedFileError(
                f"file {str(self.path)!r}: header n_count says {n_count} streamlines but the "
                f"file holds {s}; the file is truncated or its header is wrong")
        return Walked(s, n_points, kept[:s].copy() if kept is not None else None)

    # ------------------------------------------------------------------ the body as bytes
    def body_array(self) -> np.ndarray:
        """The body as a float32 array over a read-only map of this descriptor.

        Only for writing the pkl: its writer copies these bytes file-to-file from ``fd``
        (``copy_file_range``, else ``pread``) and never touches the mapped pages.

        Returns
        -------
        numpy.ndarray
            Read-only 1-D float32 array of ``total_words`` words in the file's byte order
            (``order + "f4"``), starting after the 1000-byte header; an empty array when the
            body is empty.
        """
        if self.body_bytes == 0:
            return np.zeros(0, dtype=self.order + "f4")
        mm = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
        arr = np.frombuffer(mm, dtype=self.order + "f4", offset=HEADER_SIZE,
                            count=self.total_words)
        arr.flags.writeable = False
        return arr


def open_trk(path) -> TrkFile:
    """Open a .trk: the descriptor and its checked header (the body is read by ``walk``).

    Parameters
    ----------
    path : str or os.PathLike
        The .trk file.

    Returns
    -------
    TrkFile
        The open file; close it (or use it as a context manager).

    Raises
    ------
    InputError
        If the file does not exist, is a folder or cannot be opened.
    DamagedFileError
        If its header is not a valid TrackVis header (``read_header``, ``check_header``).
    """
    return TrkFile(path)


@dataclass
class Trk(_HeaderGrid):
    """A whole .trk read into memory (small files, tests and tools): records and points."""

    path: Path
    header: np.ndarray
    words: np.ndarray  # float32 body, in this machine's byte order
    starts: np.ndarray  # int64 word of each streamline's first point
    counts: np.ndarray  # int64 points per streamline
    n_scalars: int
    n_properties: int

    @property
    def n_streamlines(self) -> int:
        """Number of streamlines."""
        return int(self.counts.shape[0])

    @property
    def n_points(self) -> int:
        """Total number of points over all streamlines."""
        return int(self.counts.sum())

    @property
    def stride(self) -> int:
        """Words (float32) per point: x, y, z and the per-point scalars."""
        return 3 + self.n_scalars

    def streamline(self, s: int) -> np.ndarray:
        """The points of one streamline.

        Parameters
        ----------
        s : int
            Streamline index.

        Returns
        -------
        numpy.ndarray
            (n, 3) float32 coordinates as stored in the file (scalars dropped).
        """
        n = int(self.counts[s])
        start = int(self.starts[s])
        rows = self.words[start:start + n * self.stride].reshape(n, self.stride)
        return np.ascontiguousarray(rows[:, :3], dtype=np.float32)

    def iter_chunks(self, max_points: int = 4_000_000):
        """Yield (first_streamline, points (P, 3) float32, lengths) for runs of streamlines.

        Parameters
        ----------
        max_points : int, optional
            Most points per run (default 4,000,000); a run always holds at least one
            streamline, even a longer one.

        Yields
        ------
        first_streamline : int
            Index of the run's first streamline.
        points : numpy.ndarray
            (P, 3) float32 voxmm coordinates of the run's streamlines, one after another
            (scalars dropped).
        lengths : numpy.ndarray
            int64 points per streamline of the run (a view of ``counts``).

        Raises
        ------
        DamagedFileError
            If a point of the run has a NaN or infinite coordinate (the message names the
            streamline).
        """
        n = self.n_streamlines
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.counts, out=offsets[1:])
        s0 = 0
        while s0 < n:
            s1 = int(np.searchsorted(offsets, offsets[s0] + max_points, side="right")) - 1
            s1 = min(max(s1, s0 + 1), n)
            pts = [self.streamline(s) for s in range(s0, s1)]
            pts = np.concatenate(pts) if pts else np.zeros((0, 3), np.float32)
            if not np.isfinite(pts).all():
                bad_point = int(np.flatnonzero(~np.isfinite(pts).all(axis=1))[0])
                bad = int(np.searchsorted(offsets, offsets[s0] + bad_point, side="right")) - 1
                raise DamagedFileError(f"file {str(self.path)!r}: streamline {bad} has a NaN or "
                                f"infinite coordinate; expected finite voxmm coordinates")
            yield s0, pts, self.counts[s0:s1]
            s0 = s1


def record_starts(counts: np.ndarray, stride: int, n_properties: int) -> np.ndarray:
    """int64 word of each streamline's first point, from the counts (the body's layout).

    Parameters
    ----------
    counts : array_like
        Points per streamline.
    stride : int
        Words per point (3 plus the scalars per point).
    n_properties : int
        Property words at the end of each record.

    Returns
    -------
    numpy.ndarray
        int64 body word index of each streamline's first point (after its count word):
        ``1 + s * (1 + n_properties) + stride * sum(counts[:s])``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.arange(counts.shape[0], dtype=np.int64) * (1 + n_properties) + 1
    if counts.shape[0] > 1:
        starts[1:] += np.cumsum(counts[:-1]) * stride
    return starts


def not_finite(path, s: int) -> LtpaError:
    """The error for streamline ``s`` of ``path`` having a NaN or infinite coordinate.

    Parameters
    ----------
    path : str or os.PathLike
        The file, named in the message.
    s : int
        Index of the streamline.

    Returns
    -------
    LtpaError
        A ``DamagedFileError`` (returned, not raised) for the caller to raise.
    """
    return DamagedFileError(
        f"file {str(path)!r}: streamline {s} has a NaN or infinite coordinate; "
        f"expected finite voxmm coordinates"
    )

"""Per-scan termination patterns: build, save and read them (no pickle, memory-mapped).

A scan's patterns under one atlas at radius ``r`` are a sparse matrix: one row per center
(every key-grid voxel whose sphere holds at least one of the scan's streamlines, sorted by
linear C-order number), one entry per connection id present, valued with the number of
*distinct* streamlines of that id through any voxel of the sphere. Id 0 (unlabeled) is an
entry like any other. The sphere is every integer offset with ``a^2 + b^2 + c^2 <= r^2``
(dsi2's ``sphere_around_ijk``: 1, 7, 33, 123 voxels for r = 0..3), clipped to the key grid.

The file (``FORMAT`` version ``VERSION``) is an uncompressed ``.npz`` (numpy's zip of
``.npy`` members, stored, not deflated) holding

- ``centers`` (n_centers,): sorted linear key-grid numbers of the centers (int32 when
  the grid has fewer than 2^31 voxels, else int64);
- ``indptr`` int64 (n_centers + 1,): row ``c`` is ``indptr[c]:indptr[c + 1]``;
- ``connection_ids`` (nnz,): sorted within a row;
- ``counts`` (nnz,): distinct streamlines;
- ``meta`` uint8: UTF-8 JSON: ``format``, ``version``, ``radius``, ``dim``, ``affine``
  (voxel centre -> RAS mm of the key grid, or null), ``voxel_size``, ``n_streamlines``,
  ``scan_id``, ``region_ids`` and ``connection_ids_start_at`` (from the npy's sidecar, or
  null), ``inputs`` (path, size, mtime_ns of the pkl and the npy it was built from).

``connection_ids`` and ``counts`` are stored in the narrowest of uint8, uint16 and int32
that holds the file's largest value (version 2; version 1, still read, stored int64
centers and int32 entries): at r = 0 a scan of 10^6 streamlines writes 40% of the bytes.
Whoever reads the arrays directly casts before arithmetic; ``ScanPatterns.rows`` gives
int64.

``read_patterns`` maps each member in place (``np.memmap`` at the member's offset in the
zip), so opening costs no copy and a study's reduction reads only the rows it needs.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DamagedFileError, InputError, LtpaError, StaleOutputError
from ..io import atomic_path, release_pages

FORMAT = "ltpa-termination-patterns"
VERSION = 2
READ_VERSIONS = (1, 2)  # 1: int64 centers, int32 entries (the dtypes are in each member)
MAX_RADIUS = 10
MEMBERS = ("centers", "indptr", "connection_ids", "counts", "meta")


def narrow_dtype(largest) -> np.dtype:
    """The dtype of an entry member (``connection_ids``, ``counts``) in a version-2 file.

    Parameters
    ----------
    largest : int
        The member's largest value.

    Returns
    -------
    numpy.dtype
        The narrowest of uint8, uint16 and int32 (little-endian) that holds ``0..largest``.

    Raises
    ------
    ValueError
        ``largest`` is negative or does not fit an int32.
    """
    largest = int(largest)
    if largest < 0 or largest >= 2**31:
        raise ValueError(f"{largest} does not fit an entry member")
    return np.dtype("<u1" if largest <= 0xFF else "<u2" if largest <= 0xFFFF else "<i4")


def centers_dtype(dim) -> np.dtype:
    """The dtype of the ``centers`` member for a key grid.

    Parameters
    ----------
    dim : sequence of int
        The key grid's shape.

    Returns
    -------
    numpy.dtype
        int32 for a grid of fewer than 2^31 voxels, else int64 (little-endian).
    """
    n = int(np.prod([int(d) for d in dim], dtype=np.int64))
    return np.dtype("<i4" if n < 2**31 else "<i8")


# --------------------------------------------------------------------------- the sphere


def check_radius(radius) -> int:
    """``radius`` as an int in 0..MAX_RADIUS, or an LtpaError naming the value.

    Only a Python or numpy integer is one (not a bool, a float, even a whole one, or a
    string: the command line and the config parse theirs as integers).

    Parameters
    ----------
    radius : int
        The value given: the sphere's radius in voxels.

    Returns
    -------
    int
        ``radius`` as a Python int.

    Raises
    ------
    InputError
        If ``radius`` is not an integer (as above) or is outside 0..MAX_RADIUS.
    """
    ok = isinstance(radius, (int, np.integer)) and not isinstance(radius, (bool, np.bool_))
    if not ok or not 0 <= int(radius) <= MAX_RADIUS:
        raise InputError(f"radius {radius!r}: expected an integer number of voxels in "
                         f"0..{MAX_RADIUS}")
    return int(radius)


def sphere_offsets(radius) -> np.ndarray:
    """(n, 3) int64 offsets (a, b, c) with a^2 + b^2 + c^2 <= radius^2, in C order.

    Parameters
    ----------
    radius : int
        The sphere's radius in voxels, 0..MAX_RADIUS.

    Returns
    -------
    numpy.ndarray
        (n, 3) int64 offsets, sorted by a, then b, then c (1, 7, 33, 123 rows for
        r = 0..3).

    Raises
    ------
    InputError
        If ``radius`` is not a valid radius (``check_radius``).
    """
    r = check_radius(radius)
    a, b, c = np.meshgrid(*(np.arange(-r, r + 1),) * 3, indexing="ij")
    keep = a * a + b * b + c * c <= r * r
    return np.stack([a[keep], b[keep], c[keep]], axis=1).astype(np.int64)


# --------------------------------------------------------------------------- one scan's patterns


@dataclass
class ScanPatterns:
    """One scan's termination patterns (CSR over centers; see the module's docstring)."""

    centers: np.ndarray
    indptr: np.ndarray
    connection_ids: np.ndarray
    counts: np.ndarray
    meta: dict
    path: str | None = None

    @property
    def radius(self) -> int:
        """The sphere's radius in voxels (``meta["radius"]``)."""
        return int(self.meta["radius"])

    @property
    def dim(self) -> tuple:
        """The key grid's shape (``meta["dim"]``)."""
        return tuple(int(d) for d in self.meta["dim"])

    @property
    def affine(self) -> np.ndarray | None:
        """The key grid's 4x4 voxel-centre -> RAS mm affine (float64), or None when the file
        has none."""
        aff = self.meta.get("affine")
        return None if aff is None else np.asarray(aff, dtype=np.float64)

    @property
    def n_centers(self) -> int:
        """Number of centers (rows)."""
        return int(self.centers.shape[0])

    def rows(self, lin: np.ndarray):
        """The rows of the centers ``lin`` (linear numbers, any order) as flat arrays.

        Returns ``(row, connection_ids, counts)``, all int64: ``row[e]`` is the position in
        ``lin`` of entry ``e``; centers that are not this scan's give no entry. One
        ``searchsorted`` and one gather for all of them.

        Parameters
        ----------
        lin : numpy.ndarray
            (B,) linear key-grid numbers of the centers (C order), cast to int64.

        Returns
        -------
        row : numpy.ndarray
            (E,) int64 positions in ``lin``, ascending.
        connection_ids : numpy.ndarray
            (E,) int64 connection ids, sorted within a row.
        counts : numpy.ndarray
            (E,) int64 distinct streamlines of each id in the sphere.
        """
        lin = np.asarray(lin, dtype=np.int64)
        cen = self.centers
        if lin.shape[0] == 0 or cen.shape[0] == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.copy(), empty.copy()
        key = lin
        if cen.dtype != lin.dtype:  # search in the file's dtype: no int64 copy of centers
            key = np.minimum(lin, np.iinfo(cen.dtype).max).astype(cen.dtype)
        pos = np.searchsorted(cen, key)
        pos = np.minimum(pos, cen.shape[0] - 1)
        hit = np.asarray(cen[pos]) == lin
        which = np.flatnonzero(hit)
        pos = pos[which]
        lo = np.asarray(self.indptr[pos], dtype=np.int64)
        size = np.asarray(self.indptr[pos + 1], dtype=np.int64) - lo
        take = np.repeat(lo - (np.cumsum(size) - size), size)
        take += np.arange(take.shape[0], dtype=np.int64)
        row = np.repeat(which.astype(np.int64), size)
        return (row, np.asarray(self.connection_ids[take], dtype=np.int64),
                np.asarray(self.counts[take], dtype=np.int64))

    @property
    def n_entries(self) -> int:
        """Number of entries over all rows (0 when ``indptr`` is empty)."""
        return int(self.indptr[-1]) if self.indptr.shape[0] else 0

    def release(self) -> None:
        """Drop the pages of the mapped file this process has read (``ltpa.io``): a pass
        over every center of a big study keeps its resident memory to one block's."""
        release_pages(self.centers, self.indptr, self.connection_ids, self.counts)

    def dense(self):
        """Every row as ``(center of each entry, connection_ids, counts)`` (flat arrays, in
        the file's dtypes).

        Returns
        -------
        centers : numpy.ndarray
            (nnz,) linear key-grid number of the center of each entry (``centers``' dtype).
        connection_ids : numpy.ndarray
            (nnz,) connection ids, as stored.
        counts : numpy.ndarray
            (nnz,) counts, as stored.
        """
        size = np.diff(np.asarray(self.indptr, dtype=np.int64))
        return (np.repeat(np.asarray(self.centers), size), np.asarray(self.connection_ids),
                np.asarray(self.counts))


class _Builder:
    """What the kernel needs for one scan: its centers, the voxel lookup table, the ids as
    int32 and the per-streamline / per-id work arrays (kept across chunks of centers)."""

    def __init__(self, index, connection_ids, radius, n_streamlines=None, where=""):
        from .pattern_kernels import dilate

        self.radius = r = check_radius(radius)
        prefix = f"{where}: " if where else ""
        conn = np.asarray(connection_ids)
        if conn.ndim != 1 or conn.dtype.kind not in "iu":
            raise DamagedFileError(f"{prefix}connection ids must be one integer per streamline; "
                                   f"got a {conn.dtype} array of shape {conn.shape}")
        n = int(conn.shape[0]) if n_streamlines is None else int(n_streamlines)
        if conn.shape[0] != n:
            raise StaleOutputError(f"{prefix}{conn.shape[0]} connection ids for {n} streamlines; "
                                   f"the pkl and the npy must be of the same scan (one may be out "
                                   f"of date)")
        n_labels = 1
        if n:
            lo, hi = int(conn.min()), int(conn.max())
            if lo < 0:
                raise DamagedFileError(f"{prefix}connection id {lo} is negative")
            if hi >= 2**31 - 1:
                raise DamagedFileError(f"{prefix}connection id {hi} is too large")
            n_labels = hi + 1
        self.n = n
        # the kernel's most frequent read: 2 bytes a streamline keep it in a core's cache
        self.conn = conn.astype(np.uint16 if n_labels <= 1 << 16 else np.int32, copy=False)
        self.dim = dim = tuple(int(d) for d in index.dim)
        voxels = np.asarray(index.voxels, dtype=np.int64)
        self.offsets = sphere_offsets(r)
        n_vox = dim[0] * dim[1] * dim[2]
        if r == 0:
            self.centers = voxels.copy()
        else:
            mark = np.zeros(n_vox, dtype=np.uint8)
            dilate(voxels, dim[0], dim[1], dim[2], self.offsets, mark)
            self.centers = np.flatnonzero(mark).astype(np.int64)
            del mark
        self.lut = np.full(n_vox, -1, dtype=np.int32 if voxels.shape[0] < 2**31 else np.int64)
        self.lut[voxels] = np.arange(voxels.shape[0], dtype=self.lut.dtype)
        self.indptr = np.asarray(index.indptr, dtype=np.int64)
        self.ids = np.asarray(index.ids)
        self.n_labels = n_labels
        # no count exceeds the streamlines of the sphere's voxels (nor the scan's)
        per_voxel = int(np.diff(self.indptr).max()) if voxels.shape[0] else 0
        self.count_bound = min(n, per_voxel * self.offsets.shape[0])
        self.work = []  # per thread: pattern_kernels.work_arrays, made on first use
        self.done = []  # per thread: the end of the centers its stamps have seen
        self.entries = self.rows_done = 0  # what the kernel made so far: a size guess

    def _work(self, t):
        from .pattern_kernels import work_arrays

        while len(self.work) <= t:
            self.work.append(work_arrays(self.n, self.n_labels))
            self.done.append(0)
        return self.work[t]

    def _part(self, t, lo, hi):
        from .pattern_kernels import CTZ_TABLE, sphere_patterns

        d = self.dim
        stamp, acc, touched, bits = self._work(t)
        if lo < self.done[t]:  # centers again: stamps of those numbers would look fresh
            stamp.fill(-1)
        self.done[t] = hi
        return sphere_patterns(self.centers[lo:hi], lo, d[0], d[1], d[2], self.offsets,
                               self.lut, self.indptr, self.ids, self.conn, stamp, acc,
                               touched, bits, CTZ_TABLE, self._expected(lo, hi))

    def _expected(self, lo, hi) -> int:
        """Entries centers ``lo:hi`` will likely make (the kernel's first output size)."""
        if self.radius == 0:  # a center is an indexed voxel: its row has <= its ids
            return int(self.indptr[hi] - self.indptr[lo])
        # as many entries a center as in the chunks so far (a guess of 32 before any)
        per_center = self.entries / self.rows_done if self.rows_done else 32.0
        return int((hi - lo) * 1.25 * per_center)

    def parts(self, lo, hi, threads=1):
        """The kernel's output for centers ``lo:hi``: one ``(indptr, connection_ids,
        counts)`` per consecutive part, in order (``indptr`` relative to the part; the
        entry arrays may be views of larger buffers: copy what is kept).

        With ``threads`` > 1 the chunk is cut into that many consecutive parts, each run by
        the (GIL-free) kernel in its own thread with its own work arrays; a thread always
        gets a later part than in the previous chunk, so its stamps only grow.
        """
        threads = max(1, min(int(threads), hi - lo))
        if threads == 1:
            out = [self._part(0, lo, hi)]
        else:
            from concurrent.futures import ThreadPoolExecutor

            cuts = np.linspace(lo, hi, threads + 1).astype(np.int64)
            with ThreadPoolExecutor(threads) as pool:
                out = list(pool.map(lambda t: self._part(t, int(cuts[t]), int(cuts[t + 1])),
                                    range(threads)))
        self.entries += sum(int(ptr[-1]) for ptr, _, _ in out)
        self.rows_done += hi - lo
        return out

    def rows(self, lo, hi, threads=1):
        """CSR rows of centers ``lo:hi`` (``indptr`` relative to the chunk; compact arrays):
        the ``parts`` joined."""
        parts = self.parts(lo, hi, threads)
        if len(parts) == 1:
            ptr, cids, counts = parts[0]
            return ptr, cids.copy(), counts.copy()
        ptrs, shift = [np.zeros(1, dtype=np.int64)], 0
        for ptr, _, _ in parts:
            ptrs.append(ptr[1:] + shift)
            shift += int(ptr[-1])
        return (np.concatenate(ptrs), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))

    def meta(self, extra):
        info = {"format": FORMAT, "version": VERSION, "radius": self.radius,
                "dim": list(self.dim), "n_streamlines": self.n,
                "n_centers": int(self.centers.shape[0])}
        info.update(extra or {})
        return info


def build_patterns(index, connection_ids, radius, *, n_streamlines=None, meta=None,
                   where="", threads=1) -> ScanPatterns:
    """A scan's patterns, in memory, from its voxel index (``VoxelIndex``: ``dim``,
    ``voxels`` (sorted linear numbers), ``indptr``, ``ids``) and connection ids (the npy:
    one non-negative integer per streamline). ``threads``: kernel threads (``_Builder.rows``;
    the result does not depend on it).

    Parameters
    ----------
    index : VoxelIndex
        The scan's voxel index: ``dim``, ``voxels`` (sorted linear numbers), ``indptr`` and
        ``ids`` (the streamlines through each voxel).
    connection_ids : array_like
        1-D integer array: one non-negative connection id per streamline.
    radius : int
        The sphere's radius in voxels, 0..MAX_RADIUS.
    n_streamlines : int, optional
        The scan's number of streamlines, which ``connection_ids`` must match; None
        (default): ``len(connection_ids)``.
    meta : dict, optional
        Entries added to (and overriding) the meta the builder records (``format``,
        ``version``, ``radius``, ``dim``, ``n_streamlines``, ``n_centers``).
    where : str, optional
        Prefix of error messages (e.g. the scan and its field); default none.
    threads : int, optional
        Kernel threads (default 1).

    Returns
    -------
    ScanPatterns
        In memory (``path`` None): ``centers`` and ``indptr`` int64, ``connection_ids`` and
        ``counts`` int32.

    Raises
    ------
    InputError
        If ``radius`` is not a valid radius.
    DamagedFileError
        If ``connection_ids`` is not a 1-D integer array, or holds a negative id or one of
        2^31 - 1 or more.
    StaleOutputError
        If ``connection_ids`` does not have ``n_streamlines`` ids.
    """
    b = _Builder(index, connection_ids, radius, n_streamlines, where)
    ptr, cids, counts = b.rows(0, b.centers.shape[0], threads)
    return ScanPatterns(b.centers, ptr, cids, counts, b.meta(meta))


CHUNK_CENTERS = 1 << 15  # centers per kernel call when writing: the output is streamed
# entries (2 to 8 bytes each, in the dtypes of the scan's bounds) held in memory before the
# rest go to work files: at most 256 MiB, so that a scan of 10^6 streamlines at r <= 1 is
# written once, and a bigger one in bounded memory
MEMORY_ENTRIES = 1 << 25
ENTRY_MEMBERS = ("connection_ids", "counts")


class _Entries:
    """A scan's entries as its chunks come: kept in memory up to ``limit``, then every
    chunk so far and every later one appended to two work files in ``folder``. They are
    held in the dtypes of the scan's bounds (``bounds``: the largest connection id and
    count possible) and written in the narrowest dtypes that hold the largest id and count
    seen (``narrow_dtype``)."""

    def __init__(self, folder, limit, bounds):
        self.folder, self.limit = folder, int(limit)
        self.bounds = tuple(int(v) for v in bounds)
        self.held = tuple(narrow_dtype(v) for v in self.bounds)
        self.parts = []  # (connection_ids, counts) of each chunk while in memory
        self.files = None
        self.n = 0
        self.largest = [0, 0]  # of the connection ids, of the counts

    def add(self, cids, counts):
        """Keep one part's entries (copied, in the held dtypes)."""
        pair = []
        for m, arr in enumerate((cids, counts)):
            if arr.shape[0]:
                top = int(arr.max())
                if top > self.bounds[m]:  # never (a kernel fault): no value is wrapped
                    raise LtpaError(f"internal error: {ENTRY_MEMBERS[m]} outside "
                                    f"0..{self.bounds[m]}")
                self.largest[m] = max(self.largest[m], top)
            pair.append(arr.astype(self.held[m]))
        self.n += int(cids.shape[0])
        if self.files is None and self.n <= self.limit:
            self.parts.append(pair)
            return
        if self.files is None:
            self.files = [open(os.path.join(self.folder, name), "w+b") for name in ENTRY_MEMBERS]
            for held in self.parts:
                self._spill(held)
            self.parts = []
        self._spill(pair)

    def _spill(self, pair):
        for fh, arr in zip(self.files, pair):
            fh.write(memoryview(arr).cast("B"))

    def dtypes(self):
        """The entry members' dtypes: (connection_ids, counts)."""
        return tuple(narrow_dtype(v) for v in self.largest)

    def write_members(self, zf):
        """The two entry members, from memory or read back from the work files, narrowed."""
        for m, (name, dtype) in enumerate(zip(ENTRY_MEMBERS, self.dtypes())):
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array_header_2_0(
                    out, {"descr": dtype.str, "fortran_order": False, "shape": (self.n,)})
                if self.files is None:
                    blocks = (pair[m] for pair in self.parts)
                else:
                    blocks = _blocks_of(self.files[m], self.held[m])
                for block in blocks:
                    if block.shape[0]:
                        out.write(memoryview(block.astype(dtype, copy=False)).cast("B"))

    def close(self):
        """Close the work files (the folder that holds them is removed by the caller)."""
        for fh in self.files or ():
            fh.close()


def _blocks_of(fh, dtype, size=1 << 22):
    """The values (``dtype``) of work file ``fh`` from its start, ``size`` bytes at a time."""
    fh.seek(0)
    while True:
        raw = fh.read(size)
        if not raw:
            return
        yield np.frombuffer(raw, dtype=dtype)


def write_patterns_file(index, connection_ids, radius, path, *, n_streamlines=None,
                        meta=None, where="", before_rename=None,
                        chunk=CHUNK_CENTERS, threads=1, memory_entries=MEMORY_ENTRIES) -> dict:
    """Build a scan's patterns and write them to ``path`` chunk by chunk (atomically).

    The entries of the chunks are kept in memory up to ``memory_entries`` (2 to 8 bytes
    each); past that, they go to two temporary files as they are made and the .npz is
    assembled from those, so memory holds at most that many entries plus one chunk's, not the
    scan's. ``threads`` kernel threads share each chunk (the file depends on neither).
    ``meta``: a dict, or a function that gives it, called once the kernel is done.
    Returns ``{"n_centers", "n_entries"}``.

    Parameters
    ----------
    index : VoxelIndex
        The scan's voxel index, as ``build_patterns``'s.
    connection_ids : array_like
        1-D integer array: one non-negative connection id per streamline.
    radius : int
        The sphere's radius in voxels, 0..MAX_RADIUS.
    path : str or os.PathLike
        The .npz to write; the temporary files are made in its folder, which must exist.
    n_streamlines : int, optional
        The scan's number of streamlines, which ``connection_ids`` must match; None
        (default): ``len(connection_ids)``.
    meta : dict or callable, optional
        Entries added to (and overriding) the meta the builder records, or a function of
        no arguments returning them.
    where : str, optional
        Prefix of error messages (e.g. the scan and its field); default none.
    before_rename : callable, optional
        Called with no arguments once the file is on disk, before it replaces ``path``
        (``ltpa.io.atomic_path``); an exception from it leaves ``path`` as it was.
    chunk : int, optional
        Centers per kernel call (default ``CHUNK_CENTERS``).
    threads : int, optional
        Kernel threads per chunk (default 1).
    memory_entries : int, optional
        Entries held in memory before they go to work files (default ``MEMORY_ENTRIES``).

    Returns
    -------
    dict
        ``{"n_centers": int, "n_entries": int}`` of the file written.

    Raises
    ------
    InputError
        If ``radius`` is not a valid radius.
    DamagedFileError
        If ``connection_ids`` is not a 1-D integer array, or holds a negative id or one of
        2^31 - 1 or more.
    StaleOutputError
        If ``connection_ids`` does not have ``n_streamlines`` ids.
    LtpaError
        If the file cannot be written (``ltpa.io.atomic_path``), or (an internal error)
        the kernel makes a value outside the scan's bounds.
    OSError
        If the temporary folder beside ``path`` (its folder missing included) or a work
        file in it cannot be made or written.
    """
    import tempfile

    b = _Builder(index, connection_ids, radius, n_streamlines, where)
    n_c = b.centers.shape[0]
    indptr = np.zeros(n_c + 1, dtype=np.int64)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=".ltpa-patterns-", dir=path.parent) as work:
        entries = _Entries(work, memory_entries, (b.n_labels - 1, b.count_bound))
        try:
            for lo in range(0, n_c, max(1, int(chunk))):
                at = lo
                for ptr, cids, counts in b.parts(lo, min(lo + int(chunk), n_c), threads):
                    m = ptr.shape[0] - 1
                    indptr[at + 1:at + m + 1] = ptr[1:] + entries.n
                    entries.add(cids, counts)
                    at += m
            raw = json.dumps(b.meta(meta() if callable(meta) else meta),
                             sort_keys=True).encode()
            with atomic_path(path, suffix=".npz", before_rename=before_rename) as tmp:
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                    _member(zf, "centers", b.centers.astype(centers_dtype(b.dim), copy=False))
                    _member(zf, "indptr", indptr.astype("<i8", copy=False))
                    entries.write_members(zf)
                    _member(zf, "meta", np.frombuffer(raw, dtype=np.uint8))
        finally:
            entries.close()
    return {"n_centers": int(n_c), "n_entries": int(entries.n)}


def _member(zf, name, array):
    with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
        np.lib.format.write_array_header_2_0(
            out, {"descr": array.dtype.str, "fortran_order": False, "shape": array.shape})
        out.write(memoryview(np.ascontiguousarray(array)).cast("B"))


def dataset_meta(ds, *, region_ids=None, start=None, inputs=None) -> dict:
    """The meta a ``TrackDataset``'s patterns record: its key grid, scan and atlas.

    Parameters
    ----------
    ds : ltpa.dataset.TrackDataset
        The scan's dataset (its header's ``voxel_to_rasmm`` and ``voxel_sizes``, its
        ``scan_id``).
    region_ids : array_like of int, optional
        The sorted region ids the connection ids decode with (the npy's sidecar).
    start : int, optional
        The first connection id of the numbering (``connection_ids_start_at``).
    inputs : dict, optional
        The files the patterns are built from (path, size, mtime_ns of the pkl and npy).

    Returns
    -------
    dict
        ``affine`` (4x4 nested lists of float, or None when the header's 3x3 part is all
        zeros), ``voxel_size`` (3 floats), ``scan_id``, ``region_ids`` (list of int or
        None), ``connection_ids_start_at`` (int or None) and ``inputs`` (``{}`` when None).
    """
    hdr = ds.header
    aff = np.asarray(hdr["voxel_to_rasmm"], dtype=np.float64).reshape(4, 4)
    meta = {"affine": aff.tolist() if aff[:3, :3].any() else None,
            "voxel_size": [float(v) for v in np.asarray(hdr["voxel_sizes"]).reshape(3)],
            "scan_id": ds.scan_id,
            "region_ids": None if region_ids is None else [int(v) for v in region_ids],
            "connection_ids_start_at": None if start is None else int(start),
            "inputs": inputs or {}}
    return meta


def patterns_of_dataset(ds, connection_ids, radius, *, region_ids=None, start=None,
                        inputs=None, where="") -> ScanPatterns:
    """``build_patterns`` for a ``TrackDataset`` (its key grid recorded in the meta).

    Parameters
    ----------
    ds : ltpa.dataset.TrackDataset
        The scan's dataset: its voxel index (``tracks_at_ijk``), number of streamlines and
        header.
    connection_ids : array_like
        1-D integer array: one non-negative connection id per streamline of ``ds``.
    radius : int
        The sphere's radius in voxels, 0..MAX_RADIUS.
    region_ids : array_like of int, optional
        Recorded in the meta (``dataset_meta``).
    start : int, optional
        Recorded in the meta as ``connection_ids_start_at``.
    inputs : dict, optional
        Recorded in the meta: the files the patterns are built from.
    where : str, optional
        Prefix of error messages; default none.

    Returns
    -------
    ScanPatterns
        In memory, as ``build_patterns``'s, with ``dataset_meta``'s entries in its meta.

    Raises
    ------
    InputError
        If ``radius`` is not a valid radius.
    DamagedFileError
        If ``connection_ids`` is not a 1-D integer array, or holds a negative id or one of
        2^31 - 1 or more.
    StaleOutputError
        If ``connection_ids`` does not have one id per streamline of ``ds``.
    """
    meta = dataset_meta(ds, region_ids=region_ids, start=start, inputs=inputs)
    return build_patterns(ds.tracks_at_ijk, connection_ids, radius,
                          n_streamlines=ds.get_ntracks(), meta=meta, where=where)


# --------------------------------------------------------------------------- the file


def save_patterns(patterns: ScanPatterns, path, before_rename=None) -> Path:
    """Write ``patterns`` to ``path`` (.npz, stored) atomically.

    The file records ``patterns.meta`` with ``version`` set to ``VERSION``; the centers are
    written in ``centers_dtype``, the entries in ``narrow_dtype``.

    Parameters
    ----------
    patterns : ScanPatterns
        The patterns to write.
    path : str or os.PathLike
        The .npz to write.
    before_rename : callable, optional
        Called with no arguments once the file is on disk, before it replaces ``path``
        (``ltpa.io.atomic_path``); an exception from it leaves ``path`` as it was.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If a connection id or a count is negative, or the largest does not fit an int32
        (``narrow_dtype``).
    LtpaError
        If the file cannot be written (``ltpa.io.atomic_path``).
    """
    info = dict(patterns.meta, version=VERSION)
    meta = np.frombuffer(json.dumps(info, sort_keys=True).encode(), dtype=np.uint8)

    def entries(values):
        values = np.asarray(values)
        if values.shape[0] and values.min() < 0:  # never wrapped into an unsigned dtype
            raise ValueError(f"{int(values.min())} does not fit an entry member")
        return values.astype(narrow_dtype(values.max() if values.shape[0] else 0))

    arrays = {"centers": np.asarray(patterns.centers).astype(centers_dtype(patterns.dim)),
              "indptr": np.ascontiguousarray(patterns.indptr, dtype=np.int64),
              "connection_ids": entries(patterns.connection_ids),
              "counts": entries(patterns.counts),
              "meta": meta}
    path = Path(path)
    with atomic_path(path, suffix=".npz", before_rename=before_rename) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # a zip member's local file header (30 bytes)


def _member_arrays(path: str) -> dict:
    """Each ``.npy`` member of a stored (uncompressed) zip, memory-mapped in place."""
    out = {}
    with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                raise DamagedFileError(f"member {info.filename!r} is compressed; termination-"
                                       f"pattern files are stored uncompressed (write them with "
                                       f"ltpa)")
            fh.seek(info.header_offset)
            head = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
            if head[0] != b"PK\x03\x04":
                raise DamagedFileError(f"member {info.filename!r}: bad zip header")
            fh.seek(info.header_offset + _LOCAL_HEADER.size + head[9] + head[10])
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            if dtype.hasobject or fortran or len(shape) != 1:
                raise DamagedFileError(f"member {info.filename!r} is not a flat numeric array")
            if dtype.kind not in "iu" or dtype.byteorder == ">":
                raise DamagedFileError(f"member {info.filename!r} holds {dtype}, not "
                                       f"little-endian integers")
            offset = fh.tell()
            if shape[0] == 0:
                out[name] = np.zeros(0, dtype=dtype)
            else:
                out[name] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    return out


def read_patterns(path) -> ScanPatterns:
    """Open a termination-pattern file (arrays memory-mapped); LtpaError naming the file if
    it is not one of this format and version.

    Parameters
    ----------
    path : str or os.PathLike
        The .npz (``FORMAT``, a version of ``READ_VERSIONS``).

    Returns
    -------
    ScanPatterns
        Its members as read-only ``numpy.memmap`` arrays in the file's dtypes (an empty
        member: an empty array), its meta, and ``path`` as a str.

    Raises
    ------
    InputError
        If the file does not exist.
    DamagedFileError
        If it cannot be read or is not such a file: not a zip, a compressed or missing
        member, a member that is not a flat array of little-endian integers, a meta that is
        not JSON or of another format, or arrays that do not fit together.
    StaleOutputError
        If its format version is not one this ltpa reads (rebuild it).
    """
    path = os.fspath(path)
    source = f"file {path!r}"
    try:
        arrays = _member_arrays(path)
    except FileNotFoundError:
        raise InputError(f"{source} does not exist") from None
    except LtpaError as exc:
        raise exc.in_context(source) from None
    except (OSError, ValueError, zipfile.BadZipFile, struct.error) as exc:
        raise DamagedFileError(f"{source} is not a termination-pattern file ({exc})") from None
    missing = [m for m in MEMBERS if m not in arrays]
    if missing:
        raise DamagedFileError(f"{source} is not a termination-pattern file (no "
                               f"{', '.join(missing)})")
    try:
        meta = json.loads(bytes(np.asarray(arrays["meta"])).decode())
    except ValueError as exc:
        raise DamagedFileError(f"{source}: its meta is not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DamagedFileError(f"{source} is not a termination-pattern file (format "
                               f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") not in READ_VERSIONS:
        raise StaleOutputError(f"{source} has format version {meta.get('version')!r}; this ltpa "
                               f"reads versions {', '.join(map(str, READ_VERSIONS))}: rebuild "
                               f"it (ltpa patterns, or the workflow)")
    p = ScanPatterns(arrays["centers"], arrays["indptr"], arrays["connection_ids"],
                     arrays["counts"], meta, path)
    n_c = p.centers.shape[0]
    if p.indptr.shape[0] != n_c + 1 or p.connection_ids.shape != p.counts.shape or \
            (n_c and int(p.indptr[-1]) != p.counts.shape[0]):
        raise DamagedFileError(f"{source}: its arrays do not fit together (a damaged file?)")
    return p


def patterns_path(numpy_path, radius) -> Path:
    """Where the workflow puts a scan's patterns: beside the npy,
    ``<npy without .npy>.patterns-r<R>.npz``.

    Parameters
    ----------
    numpy_path : str or os.PathLike
        The scan's connection-ids npy.
    radius : int
        The sphere's radius in voxels, 0..MAX_RADIUS.

    Returns
    -------
    pathlib.Path
        The pattern file's path (``.patterns-r<R>.npz`` appended when the name does not
        end in .npy).

    Raises
    ------
    InputError
        If ``radius`` is not a valid radius (``check_radius``).
    """
    text = os.fspath(numpy_path)
    stem = text[:-4] if text.endswith(".npy") else text
    return Path(f"{stem}.patterns-r{check_radius(radius)}.npz")

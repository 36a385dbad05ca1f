"""The pickled per-scan ``TrackDataset`` and its safe loader.

What is pickled is small arrays plus plain metadata: the CSR voxel index, the
trk body words (the streamlines exactly as stored, never copied into per-point
Python objects) and the per-axis map to the key grid's voxmm. Loading rebuilds
nothing big.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import DamagedFileError, LtpaError, RefusedPickleError, StaleOutputError
from .formats.grids import SPACES
from .formats.trk import HEADER_SIZE, record_starts
from .io import atomic_path
from .prepared.safepickle import Refused, finished, load_mapped

PICKLE_PROTOCOL = 5


class VoxelIndex(Mapping):
    """Read-only mapping (i, j, k) -> sorted unique streamline ids (int32 array).

    Like dsi2's ``defaultdict(set)``: ``index[ijk]`` of a voxel that no streamline
    reaches gives an empty array, while ``ijk in index``, ``keys()``, ``items()``
    and ``len()`` see only the non-empty voxels.
    """

    def __init__(self, dim, voxels, indptr, ids):
        self.dim = tuple(int(d) for d in dim)
        self.voxels = voxels
        self.indptr = indptr
        self.ids = ids

    def _position(self, ijk):
        try:
            i, j, k = (int(v) for v in ijk)
        except (TypeError, ValueError):
            return -1
        d0, d1, d2 = self.dim
        if not (0 <= i < d0 and 0 <= j < d1 and 0 <= k < d2):
            return -1
        lin = (i * d1 + j) * d2 + k
        pos = int(np.searchsorted(self.voxels, lin))
        if pos < self.voxels.shape[0] and self.voxels[pos] == lin:
            return pos
        return -1

    def __getitem__(self, ijk):
        pos = self._position(ijk)
        if pos < 0:
            return self.ids[:0]
        return self.ids[self.indptr[pos]:self.indptr[pos + 1]]

    def __contains__(self, ijk):
        return self._position(ijk) >= 0

    def get(self, ijk, default=None):
        """The streamline ids at voxel ``ijk``, or ``default`` where there are none.

        Unlike ``index[ijk]`` (an empty array there), a voxel that no streamline reaches,
        one outside the grid, or an ``ijk`` that is not three values or has one that
        ``int`` refuses with TypeError or ValueError (e.g. NaN) gives ``default``. Each
        value goes through ``int``, so a float is truncated (an infinite one raises
        OverflowError).

        Parameters
        ----------
        ijk : sequence of int
            (i, j, k) in the key grid.
        default : optional
            What to return without ids (default None).

        Returns
        -------
        numpy.ndarray or default
            The voxel's sorted unique ids (int32), a slice of the index's ids (not a copy).
        """
        pos = self._position(ijk)
        if pos < 0:
            return default
        return self.ids[self.indptr[pos]:self.indptr[pos + 1]]

    def __len__(self):
        return int(self.voxels.shape[0])

    def key_array(self) -> np.ndarray:
        """(V, 3) int64 array of the non-empty voxels, in sorted order.

        Returns
        -------
        numpy.ndarray
            (V, 3) int64 (i, j, k) of each non-empty voxel, in increasing C-order linear
            index (the order of ``counts()`` and of iteration). A new array.
        """
        return np.stack(np.unravel_index(self.voxels, self.dim), axis=1).astype(np.int64)

    def __iter__(self):
        for ijk in self.key_array().tolist():
            yield tuple(ijk)

    def counts(self) -> np.ndarray:
        """Number of streamlines per non-empty voxel (aligned with key_array()).

        Returns
        -------
        numpy.ndarray
            (V,) int64 (the dtype of ``indptr``) number of ids of each non-empty voxel.
        """
        return np.diff(self.indptr)


class Streamlines:
    """The streamlines of a dataset in the key grid's voxmm, as a read-only sequence."""

    def __init__(self, words, starts, counts, stride, sign, shift):
        self._words = words
        self._starts = starts
        self._counts = counts
        self._stride = int(stride)
        self._sign = np.asarray(sign, dtype=np.float32)
        self._shift = np.asarray(shift, dtype=np.float32)

    def __len__(self):
        return int(self._counts.shape[0])

    def __getitem__(self, s):
        if isinstance(s, slice):
            return [self[i] for i in range(*s.indices(len(self)))]
        s = int(s)
        if s < 0:
            s += len(self)
        if not 0 <= s < len(self):
            raise IndexError(s)
        n = int(self._counts[s])
        start = int(self._starts[s])
        rows = self._words[start:start + n * self._stride].reshape(n, self._stride)[:, :3]
        with np.errstate(over="ignore", invalid="ignore"):  # the values as stored, inf included
            return rows.astype(np.float32) * self._sign + self._shift

    def __iter__(self):
        for s in range(len(self)):
            yield self[s]

    @property
    def lengths(self) -> np.ndarray:
        """Points per streamline (int32): the dataset's own array, not a copy."""
        return self._counts

    def take(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """Streamlines ``ids`` at once: their points as one (P, 3) float32 array, in order, and
        the point count of each (int64), gathered without a loop over streamlines.

        Parameters
        ----------
        ids : array_like
            Streamline indices (flattened, cast to int64); repeats are taken again. Out of
            range ids raise numpy's IndexError.

        Returns
        -------
        points : numpy.ndarray
            (P, 3) float32 points in the key grid's voxmm (``stored * sign + shift``), the
            streamlines one after another in the order of ``ids``.
        counts : numpy.ndarray
            (len(ids),) int64 number of points of each streamline; they sum to P.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = np.asarray(self._counts[ids], dtype=np.int64)
        first = np.asarray(self._starts[ids], dtype=np.int64)
        before = np.cumsum(n) - n  # points of the selection before each streamline
        within = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(before, n)
        word = np.repeat(first, n) + within * self._stride
        with np.errstate(over="ignore", invalid="ignore"):  # the values as stored, inf included
            points = self._words[word[:, None] + np.arange(3)].astype(np.float32)
            return points * self._sign + self._shift, n


FORMAT = "ltpa.TrackDataset"
# 1: an explicit state dict (``TrackDataset.__reduce__``), the header as 1000 raw bytes and
#    the big arrays aligned to 64 bytes in the file (readable in place, see ``load_track_dataset``).
# 0: the first release: the instance ``__dict__`` (private names), read by ``_state_from_v0``.
FORMAT_VERSION = 1
HEADER_BYTES = 1000
MAX_STRIDE = 3 + 10_000  # points carry at most 10,000 scalars
MAX_KEY_VOXELS = 1 << 40
_JSON_NODES = 1_000_000
_JSON_DEPTH = 100


class TrackDataset:
    """One scan's streamlines and their voxel index (what LTPA queries).

    Attributes
    ----------
    scan_id : str
    properties : dict -- the scan's metadata from local_data.json (scan_group, attributes, ...)
    header : numpy record -- TrackVis header of the key grid
    tracks_at_ijk : VoxelIndex -- (i, j, k) -> sorted unique streamline ids
    tracks : Streamlines -- streamlines in the key grid's voxmm
    space : 'qsdr' | 'mni' | 'native'
    build : dict -- package version and parameters the dataset was built with

    Pickled as ``(ltpa.dataset._restore, (state,))`` with an explicit, versioned state dict
    (``FORMAT_VERSION``); every way of loading checks that state before an object exists.
    """

    def __init__(self, *, scan_id, properties, header, index, words, counts, stride, mm_sign,
                 mm_shift, space, build, n_properties=0):
        self.scan_id = scan_id
        self.properties = properties
        self.header = header
        self.space = space
        self.build = build
        self._index = index
        self._words = words
        self._counts = counts
        self._starts = None  # derived from the counts when streamlines are first read
        self._stride = int(stride)
        self._n_properties = int(n_properties)
        self._mm_sign = np.asarray(mm_sign, dtype=np.float64)
        self._mm_shift = np.asarray(mm_shift, dtype=np.float64)

    # ------------------------------------------------------------------ persisted state
    def __reduce__(self):
        return (_restore, (self._state(),))

    def _state(self) -> dict:
        header = np.asarray(self.header)
        raw = header.astype(header.dtype.newbyteorder("<")).tobytes()
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "scan_id": self.scan_id,
            "space": self.space,
            "properties": self.properties,
            "build": self.build,
            "header": raw,
            "dim": tuple(int(d) for d in self._index.dim),
            "voxels": self._index.voxels,
            "indptr": self._index.indptr,
            "ids": self._index.ids,
            "words": self._words,
            "counts": self._counts,
            "stride": self._stride,
            "n_properties": self._n_properties,
            "mm_sign": tuple(float(v) for v in self._mm_sign),
            "mm_shift": tuple(float(v) for v in self._mm_shift),
        }

    def __setstate__(self, state):
        """A first-release (format 0) file read by plain ``pickle.load``: NEWOBJ + BUILD(dict)."""
        self.__dict__.update(_from_state(_state_from_v0(state, "the pickle"), "the pickle")
                             .__dict__)

    # ------------------------------------------------------------------ access
    @property
    def tracks_at_ijk(self) -> VoxelIndex:
        """The voxel index: (i, j, k) -> sorted unique streamline ids."""
        return self._index

    def _layout(self):
        """Each streamline's first word, from the counts (checked once against the body)."""
        if self._starts is None:
            starts = record_starts(self._counts, self._stride, self._n_properties)
            _check_streamlines(self._words, starts, self._counts, self._stride)
            self._starts = starts
        return self._starts

    @property
    def tracks(self) -> Streamlines:
        """The streamlines in the key grid's voxmm, as a read-only sequence.

        The first access checks once that every streamline lies inside the stored body.

        Returns
        -------
        Streamlines
            A new view of the dataset's arrays at each access (nothing is copied).

        Raises
        ------
        DamagedFileError
            If a streamline's count or start is negative or it runs past the stored body.
        """
        return Streamlines(self._words, self._layout(), self._counts, self._stride,
                           self._mm_sign, self._mm_shift)

    def get_ntracks(self) -> int:
        """The number of streamlines (dsi2's name; also ``len(dataset)``).

        Returns
        -------
        int
            The number of streamlines in the dataset.
        """
        return int(self._counts.shape[0])

    def __len__(self):
        return self.get_ntracks()

    def get_tracks_by_ijks(self, ijks) -> np.ndarray:
        """Sorted unique ids of the streamlines through any of the voxels ``ijks``.

        Parameters
        ----------
        ijks : iterable of sequence of int
            (i, j, k) voxels of the key grid; voxels outside the grid, or that no
            streamline reaches, add nothing.

        Returns
        -------
        numpy.ndarray
            int32 streamline ids, sorted and unique; empty when no voxel has any.
        """
        parts = [self._index[ijk] for ijk in ijks]
        parts = [p for p in parts if p.size]
        if not parts:
            return np.zeros(0, dtype=np.int32)
        return np.unique(np.concatenate(parts))

    def verify(self) -> None:
        """Check every invariant of the arrays (O(size)), beyond what loading checks.

        Raises LtpaError naming what is inconsistent. Loading a file checks types, dtypes,
        lengths and what a query relies on (voxels strictly increasing inside the grid,
        pointers non-decreasing, ids of existing streamlines); this also checks that no voxel
        is empty, that ids are sorted per voxel, and every streamline inside the stored body.

        Raises
        ------
        DamagedFileError
            If the index voxels are not strictly increasing inside the key grid, a voxel has
            no streamlines (or a backwards range), an id is outside 0 .. n - 1, the ids of a
            voxel are not sorted and unique, or a streamline lies outside the stored body.
        """
        idx = self._index
        v = idx.voxels
        if v.size and (v[0] < 0 or v[-1] >= int(np.prod(idx.dim)) or np.any(np.diff(v) <= 0)):
            raise DamagedFileError("index voxels are not strictly increasing inside the key grid")
        if v.size and np.any(np.diff(idx.indptr) <= 0):
            raise DamagedFileError("index has a voxel without streamlines or a backwards range")
        n = self.get_ntracks()
        ids = idx.ids
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise DamagedFileError(f"index holds streamline ids outside 0..{n - 1}")
        if ids.size > 1:
            step = np.diff(ids.astype(np.int64))
            inner = np.ones(step.shape[0], dtype=bool)
            inner[idx.indptr[1:-1] - 1] = False  # where one voxel's ids end, the next begin
            if np.any(step[inner] <= 0):
                raise DamagedFileError("index ids are not sorted and unique within a voxel")
        self._starts = None
        self._layout()

    def __repr__(self):
        return (f"TrackDataset(scan_id={self.scan_id!r}, space={self.space!r}, "
                f"ntracks={self.get_ntracks()}, voxels={len(self._index)})")


class _StateError(RefusedPickleError):
    pass


def _fail(source, what):
    raise _StateError(f"{source}: not a valid track dataset: {what}")


def _json_like(value, source, field):
    """A copy of ``value`` if it is plain JSON-like data (bounded size and depth), else an error."""
    budget = [_JSON_NODES]

    def copy(v, depth):
        budget[0] -= 1
        if budget[0] < 0:
            _fail(source, f"{field} holds more than {_JSON_NODES} values")
        if depth > _JSON_DEPTH:
            _fail(source, f"{field} is nested more than {_JSON_DEPTH} levels deep")
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, (list, tuple)):
            return [copy(x, depth + 1) for x in v]
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if not isinstance(k, str):
                    _fail(source, f"{field} has a key of type {type(k).__name__}")
                out[k] = copy(x, depth + 1)
            return out
        _fail(source, f"{field} holds a {type(v).__name__}; expected JSON-like data")

    return copy(value, 0)


def _array(state, key, kind, source, ndim=1):
    value = finished(state.get(key))
    if not isinstance(value, np.ndarray) or value.dtype.kind != kind[0] \
            or value.dtype.itemsize != int(kind[1]) or value.ndim != ndim:
        what = type(value).__name__ if not isinstance(value, np.ndarray) else \
            f"{value.dtype} array of {value.ndim} dimensions"
        _fail(source, f"{key!r} is a {what}; expected a {ndim}-D {kind} array")
    return value  # either byte order: numpy reads both (a big-endian trk's body stays as is)


def _int(value, source, key, lo, hi):
    if type(value) is not int or not lo <= value <= hi:
        _fail(source, f"{key!r} is {value!r}; expected an integer in {lo}..{hi}")
    return value


def _floats3(value, source, key):
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (tuple, list)) or len(value) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
            for v in value):
        _fail(source, f"{key!r} must be three finite numbers")
    return tuple(float(v) for v in value)


_V1_KEYS = {"format", "version", "scan_id", "space", "properties", "build", "header", "dim",
            "voxels", "indptr", "ids", "words", "counts", "stride", "n_properties", "mm_sign",
            "mm_shift"}


def _from_state(state, source) -> "TrackDataset":
    """The dataset of a format-1 state, after checking every field's type and the arrays' sizes."""
    from nibabel.streamlines.trk import header_2_dtype


    if type(state) is not dict:
        _fail(source, f"the state is a {type(state).__name__}, not a dict")
    if state.get("format") != FORMAT:
        _fail(source, f"format {str(state.get('format'))[:40]!r}, expected {FORMAT!r}")
    version = state.get("version")
    if type(version) is int and version > FORMAT_VERSION:
        raise LtpaError(f"{source}: written by a newer ltpa (track dataset format {version}); "
                        f"this ltpa reads formats up to {FORMAT_VERSION}: upgrade ltpa")
    if version != FORMAT_VERSION:
        _fail(source, f"format version {str(version)[:20]!r}")
    if set(state) != _V1_KEYS:
        extra = sorted(map(str, set(state) - _V1_KEYS))[:5]
        missing = sorted(_V1_KEYS - set(state))[:5]
        _fail(source, f"state fields differ (unexpected {extra}, missing {missing})")
    scan_id = state["scan_id"]
    if scan_id is not None and (not isinstance(scan_id, str) or len(scan_id) > 10_000):
        _fail(source, "'scan_id' must be a string or None")
    if state["space"] not in SPACES:
        _fail(source, f"'space' is {str(state['space'])[:40]!r}; expected one of {SPACES}")
    properties = _json_like(state["properties"], source, "'properties'")
    build = _json_like(state["build"], source, "'build'")
    if not isinstance(properties, dict) or not isinstance(build, dict):
        _fail(source, "'properties' and 'build' must be dicts")
    raw = state["header"]
    if not isinstance(raw, (bytes, bytearray, memoryview)) or len(raw) != HEADER_BYTES \
            or bytes(raw[:5]) != b"TRACK":
        _fail(source, "'header' must be the 1000 bytes of a TrackVis header")
    header = np.frombuffer(bytes(raw), dtype=header_2_dtype.newbyteorder("<")).reshape(())
    header = header.astype(header_2_dtype.newbyteorder("="))
    dim = state["dim"]
    if not isinstance(dim, (tuple, list)) or len(dim) != 3:
        _fail(source, "'dim' must be three sizes")
    dim = tuple(_int(d, source, "dim", 1, 1 << 20) for d in dim)
    if dim[0] * dim[1] * dim[2] > MAX_KEY_VOXELS:
        _fail(source, f"key grid {dim} is too large")
    voxels = _array(state, "voxels", "i8", source)
    indptr = _array(state, "indptr", "i8", source)
    ids = _array(state, "ids", "i4", source)
    words = _array(state, "words", "f4", source)
    counts = _array(state, "counts", "i4", source)
    _check_index(dim, voxels, indptr, ids, counts.shape[0], source)
    stride = _int(state["stride"], source, "stride", 3, MAX_STRIDE)
    n_properties = _int(state["n_properties"], source, "n_properties", 0, MAX_STRIDE)
    return TrackDataset(
        scan_id=scan_id, properties=properties, header=header,
        index=VoxelIndex(dim, voxels, indptr, ids), words=words, counts=counts, stride=stride,
        n_properties=n_properties, mm_sign=_floats3(state["mm_sign"], source, "mm_sign"),
        mm_shift=_floats3(state["mm_shift"], source, "mm_shift"), space=state["space"],
        build=build)


def _check_index(dim, voxels, indptr, ids, n_streamlines, source):
    """The index's values, not only its shapes: everything a query relies on to stay inside
    the arrays and to name only existing streamlines (one vectorized pass over each array)."""
    if indptr.shape[0] != voxels.shape[0] + 1:
        _fail(source, f"{voxels.shape[0]} voxels but {indptr.shape[0]} index pointers")
    if int(indptr[0]) != 0 or int(indptr[-1]) != ids.shape[0]:
        _fail(source, f"index pointers run from {int(indptr[0])} to {int(indptr[-1])}; "
                      f"expected 0 to {ids.shape[0]} (the number of ids)")
    back = indptr[1:] < indptr[:-1]
    if back.any():
        k = int(np.argmax(back))
        _fail(source, f"index pointer {k + 1} is {int(indptr[k + 1])}, below the one before it "
                      f"({int(indptr[k])}); expected non-decreasing pointers")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= n_streamlines:
            bad = lo if lo < 0 else hi
            k = int(np.argmax(ids == bad))
            _fail(source, f"'ids' holds streamline id {bad} at position {k}; expected ids "
                          f"0..{n_streamlines - 1} (the dataset has {n_streamlines} "
                          f"streamlines)")
    if voxels.size:
        size = dim[0] * dim[1] * dim[2]
        if int(voxels[0]) < 0 or int(voxels[-1]) >= size:
            bad = int(voxels[0]) if int(voxels[0]) < 0 else int(voxels[-1])
            _fail(source, f"voxel key {bad} lies outside the key grid {dim} (keys 0..{size - 1})")
        ahead = voxels[1:] <= voxels[:-1]
        if ahead.any():
            k = int(np.argmax(ahead))
            _fail(source, f"voxel keys are not strictly increasing: key {k + 1} is "
                          f"{int(voxels[k + 1])} after {int(voxels[k])}")


def _check_streamlines(words, starts, counts, stride):
    """Every streamline's points lie inside the stored body (checked before any access)."""
    if counts.size == 0:
        return
    if counts.min() < 0 or starts.min() < 0:
        raise DamagedFileError("track dataset: negative streamline count or start")
    n_words = words.shape[0]
    if counts.max() > n_words or starts.max() > n_words:  # (keeps the sum below from overflowing)
        raise DamagedFileError("track dataset: a streamline runs past the stored body")
    if int((starts + counts * stride).max()) > n_words:
        raise DamagedFileError("track dataset: a streamline runs past the stored body")


_V0_DATASET = {"scan_id", "properties", "header", "space", "build", "_index", "_words",
               "_starts", "_counts", "_stride", "_mm_sign", "_mm_shift"}
_V0_INDEX = {"dim", "voxels", "indptr", "ids"}


def _state_from_v0(state, source, index_state=None) -> dict:
    """The format-1 state of a first-release dataset (its pickled instance __dict__)."""
    if type(state) is not dict or set(state) != _V0_DATASET:
        _fail(source, "a format-0 dataset state with unexpected fields")
    index = finished(state["_index"])
    if isinstance(index, VoxelIndex):
        index_state = {"dim": index.dim, "voxels": index.voxels, "indptr": index.indptr,
                       "ids": index.ids}
    elif isinstance(index, dict):
        index_state = index
    if type(index_state) is not dict or set(index_state) != _V0_INDEX:
        _fail(source, "a format-0 voxel index with unexpected fields")
    header = finished(state["header"])
    if not isinstance(header, np.ndarray) or header.dtype.fields is None \
            or header.dtype.itemsize != HEADER_BYTES:
        _fail(source, "'header' is not a TrackVis header record")
    counts, n_properties = _v0_layout(state, source)
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "scan_id": state["scan_id"],
        "space": state["space"], "properties": state["properties"], "build": state["build"],
        "header": header.astype(header.dtype.newbyteorder("<")).tobytes(),
        "dim": tuple(index_state["dim"]) if isinstance(index_state["dim"], (tuple, list))
        else index_state["dim"],
        "voxels": index_state["voxels"], "indptr": index_state["indptr"],
        "ids": index_state["ids"], "words": state["_words"], "counts": counts,
        "n_properties": n_properties, "stride": state["_stride"], "mm_sign": state["_mm_sign"],
        "mm_shift": state["_mm_shift"],
    }


def _v0_layout(state, source):
    """(int32 counts, n_properties) of a format-0 state, whose starts must follow from them."""
    starts = _array({"s": finished(state["_starts"])}, "s", "i8", source)
    counts = _array({"c": finished(state["_counts"])}, "c", "i8", source)
    stride = _int(state["_stride"], source, "stride", 3, MAX_STRIDE)
    if starts.shape != counts.shape:
        _fail(source, f"{starts.shape[0]} streamline starts but {counts.shape[0]} counts")
    if counts.size and (counts.min() < 0 or counts.max() >= 2**31):
        _fail(source, "streamline counts outside 0 .. 2^31-1")
    n_properties = 0
    if counts.shape[0] > 1:
        n_properties = int(starts[1] - starts[0] - counts[0] * stride - 1)
    if not 0 <= n_properties <= MAX_STRIDE or not np.array_equal(
            record_starts(counts, stride, n_properties), starts):
        _fail(source, "streamline starts that do not follow from the counts")
    return counts.astype(np.int32), n_properties


def _restore(state):
    """What plain ``pickle.load`` calls to rebuild a dataset (format 1): checks, then builds."""
    return _from_state(state, "the pickle")


def save_track_dataset(dataset: TrackDataset, path, body_fd=None, before_rename=None) -> None:
    """Pickle ``dataset`` to ``path`` atomically (protocol 5: arrays written from their buffers).

    The pickle is the plain ``pickle.dump`` stream of ``(_restore, (state,))``; only how its
    bytes reach the file differs: each big array's data starts at a multiple of 64 bytes in
    the file (a no-op ``SHORT_BINBYTES`` + ``POP`` pads before it), so a reader can use it in
    place from a memory map; and when ``body_fd`` is given (the open .trk whose body the
    dataset's words map), the trk body (hundreds of MB) is copied file-to-file from that
    descriptor (``os.copy_file_range``, else ``pread``) instead of through this process's
    memory: the mapped pages are never touched.

    Parameters
    ----------
    dataset : TrackDataset
        The dataset to save.
    path : str or os.PathLike
        The .pkl to write (a temp file beside it is renamed onto it, ``ltpa.io.atomic_path``).
    body_fd : int, optional
        Descriptor of the open .trk whose body (after its 1000-byte header) the dataset's
        words map; None: the words are written from memory.
    before_rename : callable, optional
        Called with no arguments after the data is on disk and before the rename; it raises
        to keep the output from replacing ``path``.

    Raises
    ------
    StaleOutputError
        If the .trk behind ``body_fd`` ends before its body is copied (it was cut).
    LtpaError
        If the output cannot be written (``atomic_path``).
    """
    body = None
    if body_fd is not None and dataset._words.nbytes:
        body = (dataset._words.__array_interface__["data"][0], dataset._words.nbytes, body_fd,
                HEADER_SIZE)
    with atomic_path(path, before_rename=before_rename) as tmp:
        with open(tmp, "wb", buffering=0) as raw:
            writer = _Writer(raw, body)
            pickle.Pickler(writer, protocol=PICKLE_PROTOCOL).dump(dataset)
            writer.flush()


ALIGN = 64
# opcode -> bytes of its length field, for the opcodes that carry an array's data
_BIG_HEADERS = {pickle.BINBYTES[0]: 4, pickle.BINBYTES8[0]: 8, pickle.BYTEARRAY8[0]: 8}


class _Writer:
    """File-like ``write`` for the pickler: small writes buffered, big payloads aligned, streamed.

    The C pickler writes a payload of 64 KiB or more on its own, right after a write that
    ends with its header (BINBYTES/BINBYTES8/BYTEARRAY8 + length) outside any frame; that
    write is still in ``_buf`` when the payload arrives, so padding can go before the header.
    """

    FLUSH = 1 << 20
    STEP = 32 << 20

    def __init__(self, raw, body=None):
        self._raw = raw
        self._buf = bytearray()
        self._written = 0
        self._body = body  # (address, nbytes, fd, offset) of the trk body, or None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n = view.nbytes
        header = self._payload_header(n)
        if not header:
            if len(self._buf) >= self.FLUSH:
                self.flush()  # never the latest write: it may be a payload's header
            self._buf += view
            return n
        self._align_payload(header)
        self.flush()
        body = self._body
        if body is not None and n == body[1] and \
                np.frombuffer(view, np.uint8).__array_interface__["data"][0] == body[0]:
            self._copy_from_fd(body[2], body[3], n)
            return n
        for lo in range(0, n, self.STEP):
            self._write_all(view[lo:lo + self.STEP])
        return n

    def _payload_header(self, n) -> int:
        """Size of the header at the end of ``_buf`` if a write of ``n`` bytes is its payload."""
        buf = self._buf
        if n < 1 << 16:
            return 0
        for size in (5, 9):
            if len(buf) >= size and _BIG_HEADERS.get(buf[-size]) == size - 1 \
                    and int.from_bytes(buf[1 - size:], "little") == n:
                return size
        return 0

    def _align_payload(self, header: int) -> None:
        """Insert ``SHORT_BINBYTES k <k zeros> POP`` before the header so the payload is aligned."""
        end = self._written + len(self._buf)  # where the payload would start
        k = (-(end + 3)) % ALIGN
        pad = pickle.SHORT_BINBYTES + bytes([k]) + bytes(k) + pickle.POP
        self._buf[-header:-header] = pad

    def _copy_from_fd(self, fd, offset, n) -> None:
        """Copy ``n`` bytes at ``offset`` of ``fd`` to the output, by the kernel when it can."""
        copy = getattr(os, "copy_file_range", None)
        done = 0
        if copy is not None:
            try:
                while done < n:
                    got = copy(fd, self._raw.fileno(), n - done, offset + done)
                    if got <= 0:
                        break
                    done += got
            except OSError:
                pass  # e.g. another file system: the rest by pread + write
        if done < n:
            self._raw.seek(self._written + done)
        buf = bytearray(min(self.STEP, n - done))
        while done < n:
            k = os.preadv(fd, [memoryview(buf)[:min(len(buf), n - done)]], offset + done)
            if k <= 0:
                raise StaleOutputError("the .trk ended while its body was copied into the pkl "
                                "(was it cut?); nothing was written")
            self._raw.write(memoryview(buf)[:k])
            done += k
        self._written += n

    def _write_all(self, view) -> None:
        while view.nbytes:
            k = self._raw.write(view)
            self._written += k
            view = view[k:]

    def flush(self) -> None:
        if self._buf:
            self._write_all(memoryview(self._buf))
            self._buf = bytearray()


_GLOBALS = {
    ("ltpa.dataset", "_restore"): "restore",
    ("ltpa.dataset", "TrackDataset"): "TrackDataset",
    ("ltpa.dataset", "VoxelIndex"): "VoxelIndex",
}


def _factories(source):
    def restore(*args):
        if len(args) != 1:
            raise Refused("_restore takes one state")
        return _from_state(args[0], source)

    def dataset_v0(draft, state):
        return _from_state(_state_from_v0(state, source), source)

    def index_v0(draft, state):
        if type(state) is not dict:
            raise Refused("a voxel index state that is not a dict")
        return dict(state)

    return {("reduce", "restore"): restore, ("build", "TrackDataset"): dataset_v0,
            ("build", "VoxelIndex"): index_v0}


def load_track_dataset(path) -> TrackDataset:
    """Load a pickled TrackDataset without running anything from the file.

    Plain ``pickle.load`` runs whatever code a pickle names. This loader reads the file
    with ``ltpa.prepared.safepickle`` (a small machine that knows only the opcodes and the exact
    names a track dataset uses, and checks every array against its bytes and every field
    of the state against its declared type) and maps the file, so the big arrays are read
    in place (read-only) rather than copied. Reads format 1 and the first release's files.

    Parameters
    ----------
    path : str or os.PathLike
        The .pkl file.

    Returns
    -------
    TrackDataset
        The dataset; its big arrays are read-only views of the mapped file.

    Raises
    ------
    InputError
        If the file does not exist, is a folder, or cannot be opened or mapped.
    RefusedPickleError
        If the file is empty, truncated or malformed, uses an opcode or a name a track
        dataset does not, or its state fails a check (a field's type, an array's dtype or
        size, the index's values).
    LtpaError
        If it was written by a newer ltpa (a higher format version), or the pickle holds
        something other than a TrackDataset.
    """
    path = Path(path)
    source = f"file {str(path)!r}"
    obj = finished(load_mapped(path, _GLOBALS, _factories(source)))
    if not isinstance(obj, TrackDataset):
        raise LtpaError(f"{source}: holds a {type(obj).__name__}, not a TrackDataset")
    return obj

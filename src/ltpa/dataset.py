"""The pickled per-scan ``TrackDataset`` and its safe loader.

What is pickled is small arrays plus plain metadata: the CSR voxel index, the
trk body words (the streamlines exactly as stored, never copied into per-point
Python objects) and the per-axis map to the key grid's voxmm. Loading rebuilds
nothing big.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import LtpaError
from .io import atomic_path

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
        pos = self._position(ijk)
        if pos < 0:
            return default
        return self.ids[self.indptr[pos]:self.indptr[pos + 1]]

    def __len__(self):
        return int(self.voxels.shape[0])

    def key_array(self) -> np.ndarray:
        """(V, 3) int64 array of the non-empty voxels, in sorted order."""
        return np.stack(np.unravel_index(self.voxels, self.dim), axis=1).astype(np.int64)

    def __iter__(self):
        for ijk in self.key_array().tolist():
            yield tuple(ijk)

    def counts(self) -> np.ndarray:
        """Number of streamlines per non-empty voxel (aligned with key_array())."""
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
        return rows.astype(np.float32) * self._sign + self._shift

    def __iter__(self):
        for s in range(len(self)):
            yield self[s]

    @property
    def lengths(self) -> np.ndarray:
        return self._counts


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
    """

    def __init__(self, *, scan_id, properties, header, index, words, starts, counts, stride,
                 mm_sign, mm_shift, space, build):
        self.scan_id = scan_id
        self.properties = properties
        self.header = header
        self.space = space
        self.build = build
        self._index = index
        self._words = words
        self._starts = starts
        self._counts = counts
        self._stride = int(stride)
        self._mm_sign = np.asarray(mm_sign, dtype=np.float64)
        self._mm_shift = np.asarray(mm_shift, dtype=np.float64)

    @property
    def tracks_at_ijk(self) -> VoxelIndex:
        return self._index

    @property
    def tracks(self) -> Streamlines:
        return Streamlines(self._words, self._starts, self._counts, self._stride,
                           self._mm_sign, self._mm_shift)

    def get_ntracks(self) -> int:
        return int(self._counts.shape[0])

    def __len__(self):
        return self.get_ntracks()

    def get_tracks_by_ijks(self, ijks) -> np.ndarray:
        """Sorted unique ids of the streamlines through any of the voxels ``ijks``."""
        parts = [self._index[ijk] for ijk in ijks]
        parts = [p for p in parts if p.size]
        if not parts:
            return np.zeros(0, dtype=np.int32)
        return np.unique(np.concatenate(parts))

    def __repr__(self):
        return (f"TrackDataset(scan_id={self.scan_id!r}, space={self.space!r}, "
                f"ntracks={self.get_ntracks()}, voxels={len(self._index)})")


def save_track_dataset(dataset: TrackDataset, path) -> None:
    """Pickle ``dataset`` to ``path`` atomically (protocol 5: arrays are written from their buffers).

    The pickle is the plain ``pickle.dump`` stream; only how its bytes reach the
    file differs: the trk body (hundreds of MB, a view of the mapped .trk) is
    copied file-to-file by the kernel (``os.copy_file_range``) instead of being
    paged into this process, so writing it costs no resident memory.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb", buffering=0) as raw:
            writer = _Writer(raw)
            pickle.Pickler(writer, protocol=PICKLE_PROTOCOL).dump(dataset)
            writer.flush()


class _Writer:
    """File-like ``write`` for the pickler: small writes buffered, big ones streamed."""

    BIG = 1 << 20
    STEP = 32 << 20

    def __init__(self, raw):
        self._raw = raw
        self._buf = bytearray()

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n = view.nbytes
        if n < self.BIG:
            self._buf += view
            if len(self._buf) >= self.BIG:
                self.flush()
            return n
        self.flush()
        from .trk import mapped_source

        src = mapped_source(view)
        if src is not None and self._copy_from_file(src, n):
            return n
        mapping = src[2] if src is not None else None
        for lo in range(0, n, self.STEP):
            self._write_all(view[lo:lo + self.STEP])
            if mapping is not None:
                mapping.release(src[1] + lo, src[1] + min(lo + self.STEP, n))
        return n

    def _copy_from_file(self, src, n) -> bool:
        path, offset, _ = src
        copy = getattr(os, "copy_file_range", None)
        if copy is None:
            return False
        start = self._raw.tell()
        done = 0
        try:
            with open(path, "rb") as fh:
                while done < n:
                    got = copy(fh.fileno(), self._raw.fileno(), n - done, offset + done)
                    if got <= 0:
                        raise OSError("copy_file_range copied nothing")
                    done += got
        except OSError:
            if done:  # start over with plain writes from the same place
                self._raw.seek(start)
                self._raw.truncate()
            return False
        return True

    def _write_all(self, view) -> None:
        while view.nbytes:
            k = self._raw.write(view)
            view = view[k:]

    def flush(self) -> None:
        if self._buf:
            self._write_all(memoryview(self._buf))
            self._buf = bytearray()


_ALLOWED = {
    ("ltpa.dataset", "TrackDataset"),
    ("ltpa.dataset", "VoxelIndex"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "numpy" and name.endswith("DType") or module == "numpy.dtypes":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only ltpa's TrackDataset and numpy arrays "
            f"are allowed in a track dataset pickle"
        )


def load_track_dataset(path) -> TrackDataset:
    """Load a pickled TrackDataset, refusing any class but ltpa's and numpy's.

    Plain ``pickle.load`` runs whatever code a pickle names; this loader only
    lets through the classes a TrackDataset is made of, so a tampered or foreign
    file fails with an error instead of running code.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            obj = _SafeUnpickler(io.BufferedReader(fh)).load()
    except FileNotFoundError as exc:
        raise LtpaError(f"file {str(path)!r} does not exist") from exc
    except pickle.UnpicklingError as exc:
        raise LtpaError(f"file {str(path)!r}: {exc}") from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise LtpaError(f"file {str(path)!r}: not a readable track dataset pickle ({exc})") from exc
    if not isinstance(obj, TrackDataset):
        raise LtpaError(f"file {str(path)!r}: holds a {type(obj).__name__}, not a TrackDataset")
    return obj

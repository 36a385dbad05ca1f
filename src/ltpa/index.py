"""Streamline -> voxel hashing: for every key voxel, the sorted ids of the streamlines in it.

The index is built as CSR arrays: ``voxels`` (sorted C-order linear indices of
the non-empty key voxels), ``indptr`` and ``ids`` (int32 streamline ids, sorted
and unique within each voxel), by a two-pass counting sort over the key grid in
compiled loops (``ltpa.kernels``): pass 1 walks the mapped points once, computes
each point's key voxel, keeps a (voxel, streamline) pair only the first time it
occurs (consecutive repeats are skipped outright, others by remembering the last
streamline counted per voxel), counts pairs per voxel and appends the pair's voxel
to a key list; pass 2 scatters the streamline ids into their voxels' slots after a
prefix sum. Streamlines are visited in order, so ids come out sorted without a sort.
Memory: 4 bytes per kept pair twice (key list + ids) plus two grid-sized arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import LtpaError
from .grids import KeyMap
from .trk import Trk

log = logging.getLogger(__name__)


@dataclass
class VoxelCSR:
    dim: tuple
    voxels: np.ndarray  # int64 (V,), sorted linear indices (C order) in the key grid
    indptr: np.ndarray  # int64 (V+1,)
    ids: np.ndarray  # int32, streamline ids per voxel, sorted
    n_outside: int  # points whose key voxel lies outside the key grid


def build_index(trk: Trk, key_map: KeyMap, progress=None) -> VoxelCSR:
    """Hash every point of ``trk`` to its key voxel."""
    from .kernels import hash_count, hash_fill

    dim = tuple(int(d) for d in key_map.grid.dim)
    n_vox = int(np.prod(dim))
    n = trk.n_streamlines
    n_points = trk.n_points
    if n >= 2**31 - 1:
        raise LtpaError(f"file {str(trk.path)!r}: {n} streamlines do not fit int32 ids")
    words = trk.native_words()
    vs = np.asarray(trk.voxel_size, dtype=np.float64)
    sign = np.asarray(key_map.sign, dtype=np.float64)
    shift = np.asarray(key_map.shift, dtype=np.float64)
    kdim = np.asarray(dim, dtype=np.int64)
    last = np.full(n_vox, -1, dtype=np.int32)
    vcount = np.zeros(n_vox, dtype=np.int64)
    # upper bound: one pair per point; untouched pages of np.empty cost no memory
    keys = np.empty(max(n_points, 1), dtype=np.int32 if n_vox < 2**31 else np.int64)
    per_streamline = np.zeros(n, dtype=np.int64)
    nk = 0
    n_outside = 0
    for s0, s1 in trk.ranges():
        nk, n_out, bad = hash_count(words, trk.starts, trk.counts, s0, s1, trk.stride, vs, sign,
                                    shift, kdim, last, vcount, keys, nk, per_streamline)
        if bad >= 0:
            raise _not_finite(trk, bad)
        n_outside += n_out
        if progress:
            progress(s1, n)
    del last
    nonempty = np.flatnonzero(vcount)
    indptr = np.zeros(nonempty.shape[0] + 1, dtype=np.int64)
    np.cumsum(vcount[nonempty], out=indptr[1:])
    pos = np.zeros(n_vox, dtype=np.int64)
    pos[nonempty] = indptr[:-1]
    del vcount
    ids = np.empty(nk, dtype=np.int32)
    hash_fill(keys[:nk], per_streamline, pos, ids)
    return VoxelCSR(dim, nonempty.astype(np.int64), indptr, ids, int(n_outside))


def _not_finite(trk: Trk, s: int) -> LtpaError:
    return LtpaError(
        f"file {str(trk.path)!r}: streamline {s} has a NaN or infinite coordinate; "
        f"expected finite voxmm coordinates"
    )

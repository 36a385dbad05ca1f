"""Streamline -> voxel hashing: for every key voxel, the sorted ids of the streamlines in it.

The index is built as CSR arrays: ``voxels`` (sorted C-order linear indices of
the non-empty key voxels), ``indptr`` and ``ids`` (int32 streamline ids, sorted
and unique within each voxel). Each (voxel, streamline) pair is packed into one
int64 ``voxel * n_streamlines + id``; runs of points in the same voxel are
dropped as they are read, and one in-place sort plus one pass removes the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .grids import KeyMap, inside, linear_index
from .trk import Trk

log = logging.getLogger(__name__)


@dataclass
class VoxelCSR:
    dim: tuple
    voxels: np.ndarray  # int64 (V,), sorted linear indices (C order) in the key grid
    indptr: np.ndarray  # int64 (V+1,)
    ids: np.ndarray  # int32, streamline ids per voxel, sorted
    n_outside: int  # points whose key voxel lies outside the key grid


def native_voxels(points: np.ndarray, voxel_size) -> np.ndarray:
    """floor(voxmm / voxel_size) per axis, as int64 (the trk rule; computed in float64)."""
    vox = points.astype(np.float64)
    vox /= np.asarray(voxel_size, dtype=np.float64)
    np.floor(vox, out=vox)
    return vox.astype(np.int64)


def build_index(trk: Trk, key_map: KeyMap, progress=None) -> VoxelCSR:
    """Hash every point of ``trk`` to its key voxel."""
    dim = key_map.grid.dim
    n = trk.n_streamlines
    n_points = trk.n_points
    stride = max(n, 1)
    # upper bound: one pair per point; untouched pages of np.empty cost no memory
    pairs = np.empty(n_points, dtype=np.int64)
    used = 0
    n_outside = 0
    for s0, pts, lengths in trk.iter_chunks():
        key = key_map.apply(native_voxels(pts, trk.voxel_size))
        ok = inside(key, dim)
        sid = np.repeat(np.arange(s0, s0 + lengths.shape[0], dtype=np.int64), lengths)
        packed = linear_index(key, dim)
        packed *= stride
        packed += sid
        n_out = int(ok.size - np.count_nonzero(ok))
        if n_out:
            n_outside += n_out
            packed = packed[ok]
        if packed.size:
            keep = np.empty(packed.shape[0], dtype=bool)
            keep[0] = True
            np.not_equal(packed[1:], packed[:-1], out=keep[1:])
            packed = packed[keep]
            pairs[used:used + packed.shape[0]] = packed
            used += packed.shape[0]
        if progress:
            progress(s0 + lengths.shape[0], n)
    pairs = pairs[:used]
    pairs.sort(kind="quicksort")
    if used:
        keep = np.empty(used, dtype=bool)
        keep[0] = True
        np.not_equal(pairs[1:], pairs[:-1], out=keep[1:])
        if not keep.all():
            pairs = pairs[keep]
    vox = pairs // stride
    ids = (pairs - vox * stride).astype(np.int32)
    del pairs
    if vox.size:
        new = np.empty(vox.shape[0], dtype=bool)
        new[0] = True
        np.not_equal(vox[1:], vox[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        voxels = vox[starts]
    else:
        starts = np.zeros(0, dtype=np.int64)
        voxels = np.zeros(0, dtype=np.int64)
    del vox
    indptr = np.empty(starts.shape[0] + 1, dtype=np.int64)
    indptr[:-1] = starts
    indptr[-1] = ids.shape[0]
    return VoxelCSR(tuple(dim), voxels.astype(np.int64), indptr, ids, n_outside)

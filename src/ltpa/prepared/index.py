"""Streamline -> voxel hashing: for every key voxel, the sorted ids of the streamlines in it.

The index is built as CSR arrays: ``voxels`` (sorted C-order linear indices of
the non-empty key voxels), ``indptr`` and ``ids`` (int32 streamline ids, sorted
and unique within each voxel), by a two-pass counting sort over the key grid in
compiled loops (``ltpa.kernels``): pass 1 (``hash_range``, on each range of the file
as it is read) computes each point's key voxel, keeps a (voxel, streamline) pair only
the first time it occurs (consecutive repeats are skipped outright, others by
remembering the last streamline counted per voxel), counts pairs per voxel and appends
the pair's voxel to a key list; pass 2 (``hash_fill``) scatters the streamline ids into
their voxels' slots after a prefix sum. Streamlines are visited in order, so ids come
out sorted without a sort.

Memory: 4 bytes per kept pair twice (key list + ids), 20 bytes per key-grid voxel, 8 bytes
per streamline (its count and its number of pairs), and the 4 MB read buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import LtpaError
from ..formats.grids import KeyMap
from ..formats.trk import TrkFile, not_finite
from ..kernels import HashTables, hash_fill, hash_range


@dataclass
class VoxelCSR:
    """The voxel index of one scan as CSR arrays (``build_index``; see the module docstring).

    Attributes
    ----------
    dim : tuple of int
        The key grid's shape.
    voxels : numpy.ndarray
        int64 (V,): sorted C-order linear indices of the non-empty key voxels.
    indptr : numpy.ndarray
        int64 (V + 1,): voxel ``v``'s ids are ``ids[indptr[v]:indptr[v + 1]]``.
    ids : numpy.ndarray
        int32: the streamline ids of each voxel, sorted and unique within it.
    n_outside : int
        Points whose key voxel lies outside the key grid (left out of the index).
    n_streamlines : int
        Streamlines in the file.
    n_points : int
        Points in the file.
    counts : numpy.ndarray
        int32 (n_streamlines,): points per streamline.
    """

    dim: tuple
    voxels: np.ndarray  # int64 (V,), sorted linear indices (C order) in the key grid
    indptr: np.ndarray  # int64 (V+1,)
    ids: np.ndarray  # int32, streamline ids per voxel, sorted
    n_outside: int  # points whose key voxel lies outside the key grid
    n_streamlines: int
    n_points: int
    counts: np.ndarray  # int32 points per streamline


# bytes per key-grid voxel that build_index allocates (last id int32, count and slot int64)
INDEX_BYTES_PER_VOXEL = 20


def build_index(trk: TrkFile, key_map: KeyMap, progress=None) -> VoxelCSR:
    """Hash every point of ``trk`` to its key voxel, reading the file once.

    Parameters
    ----------
    trk : TrkFile
        The open .trk (read once, with ``walk``).
    key_map : KeyMap
        The trk voxel -> key map; its grid is the key grid.
    progress : callable, optional
        Called as ``progress(words_done, total_words)`` as the file is read.

    Returns
    -------
    VoxelCSR
        The key grid's shape, the CSR index (int64 ``voxels`` and ``indptr``, int32 ``ids``),
        the number of points outside the key grid, the streamline and point counts, and the
        int32 points per streamline.

    Raises
    ------
    LtpaError
        If the file may hold more streamlines than int32 ids can number (by its header's
        ``n_count``, or its size when that is 0).
    DamagedFileError
        If a streamline has a NaN or infinite coordinate, or the body is damaged (see
        ``TrkFile.walk``).
    """
    dim = tuple(int(d) for d in key_map.grid.dim)
    n_vox = int(np.prod(dim))
    # at most one pair per point, and a point takes at least 3 words: untouched pages of
    # np.empty cost no memory, so this bound reserves address space, not RAM
    max_pairs = trk.total_words // 3 + 1
    n_max = trk.total_words // (1 + trk.n_properties) + 1
    n_first = min(n_max, trk.n_hint) if trk.n_hint > 0 else 1 << 16
    if min(n_max, trk.n_hint if trk.n_hint > 0 else n_max) >= 2**31 - 1:
        raise LtpaError(f"file {str(trk.path)!r}: more streamlines than int32 ids can number")
    t = HashTables(
        vs=np.asarray(trk.voxel_size, dtype=np.float64),
        sign=np.asarray(key_map.sign, dtype=np.float64),
        shift=np.asarray(key_map.shift, dtype=np.float64),
        kdim=np.asarray(dim, dtype=np.int64),
        last=np.full(n_vox, -1, dtype=np.int32),
        vcount=np.zeros(n_vox, dtype=np.int64),
        keys=np.empty(max_pairs, dtype=np.int32 if n_vox < 2**31 else np.int64),
        per_streamline=np.zeros(n_first, dtype=np.int32),
    )
    state = {"nk": 0, "outside": 0, "t": t}

    def hash_one(r):
        t = state["t"]
        if r.s0 + r.n > t.per_streamline.shape[0]:  # n_count unknown: grow by doubling
            grown = np.zeros(max(2 * t.per_streamline.shape[0], r.s0 + r.n), dtype=np.int32)
            grown[:r.s0] = t.per_streamline[:r.s0]
            state["t"] = t = t._replace(per_streamline=grown)
        nk, n_out, bad = hash_range(r.words, r.starts, r.counts, r.n, r.s0, trk.stride, t,
                                    state["nk"])
        if bad >= 0:
            raise not_finite(trk.path, r.s0 + bad)
        state["nk"] = nk
        state["outside"] += n_out

    walked = trk.walk(hash_one, keep_counts=True, progress=progress)
    t = state.pop("t")
    nk = state["nk"]
    vcount = t.vcount
    keys = t.keys[:nk]
    per_streamline = t.per_streamline[:walked.n_streamlines]
    del t
    nonempty = np.flatnonzero(vcount)
    indptr = np.zeros(nonempty.shape[0] + 1, dtype=np.int64)
    np.cumsum(vcount[nonempty], out=indptr[1:])
    del vcount
    pos = np.zeros(n_vox, dtype=np.int64)
    pos[nonempty] = indptr[:-1]
    ids = np.empty(nk, dtype=np.int32)
    hash_fill(keys, per_streamline, pos, ids)
    return VoxelCSR(dim, nonempty.astype(np.int64), indptr, ids, int(state["outside"]),
                    walked.n_streamlines, walked.n_points, walked.counts)

"""The CSR lookup behind a voxel query, and giving a scan's mapped pages back afterwards."""

from __future__ import annotations

import numpy as np

from .. import io

_EMPTY_IDS = np.zeros(0, dtype=np.int32)
_MAX_RUNS = 256  # id ranges gathered as slices (a Python list of at most this many) below it


def ids_at(index, lin: np.ndarray, n_tracks: int) -> np.ndarray:
    """Sorted unique ids (int32) of the streamlines through the voxels ``lin`` of a VoxelIndex.

    ``lin``: sorted unique linear voxel numbers. One ``searchsorted`` for every voxel at once;
    the matching id ranges are gathered either as slices of runs of consecutive index voxels
    (a box ROI is a few runs along k, whose ids lie end to end in the index: plain copies)
    when there are at most ``_MAX_RUNS`` runs, or else through one index array made with
    ``repeat``/``arange`` (no loop over voxels either way); then a bitmap over the scan's
    streamlines (many ids) or ``np.unique`` (few) makes the sorted union.

    Parameters
    ----------
    index : ltpa.dataset.VoxelIndex
        The scan's CSR index (``TrackDataset.tracks_at_ijk``): its sorted linear voxel
        numbers ``voxels``, its ``indptr`` and its ``ids``.
    lin : numpy.ndarray
        1-D sorted unique linear voxel numbers (C order over the index's grid, as
        ``ltpa.analysis.roi.linear`` gives them); voxels not in the index (reached by no
        streamline) add nothing.
    n_tracks : int
        The scan's number of streamlines: every id is below it (the size of the bitmap).

    Returns
    -------
    numpy.ndarray
        1-D int32 array of the sorted unique ids of the streamlines through any voxel of
        ``lin``; empty when ``lin`` or the index is empty or no voxel of ``lin`` is in it.
    """
    voxels = index.voxels
    if lin.shape[0] == 0 or voxels.shape[0] == 0:
        return _EMPTY_IDS
    pos = np.searchsorted(voxels, lin)
    pos = np.minimum(pos, voxels.shape[0] - 1)
    pos = pos[voxels[pos] == lin]
    if pos.shape[0] == 0:
        return _EMPTY_IDS
    indptr, ids = index.indptr, index.ids
    breaks = np.flatnonzero(np.diff(pos) != 1)
    if breaks.shape[0] < _MAX_RUNS:
        first = np.concatenate([pos[:1], pos[breaks + 1]])
        last = np.concatenate([pos[breaks], pos[-1:]])
        bounds = zip(indptr[first].tolist(), indptr[last + 1].tolist())
        got = np.concatenate([ids[a:b] for a, b in bounds])
    else:
        lo = np.asarray(indptr[pos], dtype=np.int64)
        size = np.asarray(indptr[pos + 1], dtype=np.int64) - lo
        # id k of the gather comes from voxel v's range: lo[v] + (k - first k of v)
        take = np.repeat(lo - (np.cumsum(size) - size), size)
        take += np.arange(take.shape[0], dtype=np.int64)
        got = ids[take]
        del take
    if got.shape[0] == 0:
        return _EMPTY_IDS
    if got.shape[0] * 8 >= n_tracks:
        seen = np.zeros(n_tracks, dtype=bool)
        seen[got] = True
        return np.flatnonzero(seen).astype(np.int32)
    return np.unique(got).astype(np.int32, copy=False)


def release_pages(ds) -> None:
    """Unmap the pages of a dataset's pkl that this process touched (they stay in the page
    cache; ``ltpa.io.release_pages``).

    The whole file mapping behind the index's ``ids`` is released; a dataset whose arrays
    are not memory-mapped, or a platform without ``MADV_DONTNEED``, is left as it is.

    Parameters
    ----------
    ds : ltpa.dataset.TrackDataset
        A dataset opened from its pkl (``ltpa.load_track_dataset``).
    """
    io.release_pages(ds.tracks_at_ijk.ids)

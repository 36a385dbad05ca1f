"""The compiled loops behind termination patterns (numba, cached like ``ltpa.kernels``).

``dilate`` marks every key-grid voxel whose sphere holds an indexed voxel (the scan's
centers). ``sphere_patterns`` walks the centers in order; for each it visits the sphere's
voxels, their streamline ids, and counts each streamline once per center with a "last seen
at center c" stamp per streamline (no sort, no set: O(ids gathered)). The connection ids a
center touched are kept in a short list, sorted (a handful per center) and emitted as one
CSR row, then their counters are reset through that list.
"""

from __future__ import annotations

import numpy as np

from ..kernels import _jit


@_jit
def dilate(voxels, d0, d1, d2, offsets, mark):
    """``mark[lin] = 1`` for every voxel within ``offsets`` of a voxel of ``voxels``
    (linear C-order numbers of a d0 x d1 x d2 grid), clipped to the grid."""
    n_off = offsets.shape[0]
    plane = d1 * d2
    for q in range(voxels.shape[0]):
        v = voxels[q]
        i = v // plane
        j = (v // d2) % d1
        k = v % d2
        for o in range(n_off):
            a = i + offsets[o, 0]
            b = j + offsets[o, 1]
            c = k + offsets[o, 2]
            if 0 <= a < d0 and 0 <= b < d1 and 0 <= c < d2:
                mark[(a * d1 + b) * d2 + c] = 1


@_jit
def _grow(arr, need):
    cap = arr.shape[0]
    while cap < need:
        cap *= 2
    out = np.empty(cap, dtype=arr.dtype)
    out[:arr.shape[0]] = arr
    return out


@_jit
def sphere_patterns(centers, base, d0, d1, d2, offsets, lut, indptr, ids, conn, stamp, acc,
                    touched):
    """Per center, the distinct streamlines of its sphere counted per connection id.

    ``lut[lin]``: position of voxel ``lin`` in the index (``indptr``/``ids``), -1 if empty;
    ``conn[s]``: connection id of streamline ``s``. ``stamp`` (one per streamline, never a
    value >= ``base``), ``acc`` (zeros) and ``touched`` (one per connection id) are the
    caller's, so that the centers can come in chunks: center ``ci`` of this call is number
    ``base + ci`` of the scan. Returns ``(indptr, connection_ids, counts)``: CSR rows in
    the order of ``centers``, ids sorted within a row.
    """
    n_c = centers.shape[0]
    n_off = offsets.shape[0]
    plane = d1 * d2
    out_ptr = np.zeros(n_c + 1, dtype=np.int64)
    cap = max(1024, 4 * n_c)
    out_conn = np.empty(cap, dtype=np.int32)
    out_cnt = np.empty(cap, dtype=np.int32)
    nnz = 0
    for ci in range(n_c):
        v = centers[ci]
        i = v // plane
        j = (v // d2) % d1
        k = v % d2
        nt = 0
        tag = base + ci
        for o in range(n_off):
            a = i + offsets[o, 0]
            b = j + offsets[o, 1]
            c = k + offsets[o, 2]
            if a < 0 or a >= d0 or b < 0 or b >= d1 or c < 0 or c >= d2:
                continue
            p = lut[(a * d1 + b) * d2 + c]
            if p < 0:
                continue
            if n_off == 1:  # one voxel: its ids are distinct already, no stamp needed
                for q in range(indptr[p], indptr[p + 1]):
                    lab = conn[ids[q]]
                    if acc[lab] == 0:
                        touched[nt] = lab
                        nt += 1
                    acc[lab] += 1
                continue
            for q in range(indptr[p], indptr[p + 1]):
                s = ids[q]
                if stamp[s] != tag:
                    stamp[s] = tag
                    lab = conn[s]
                    if acc[lab] == 0:
                        touched[nt] = lab
                        nt += 1
                    acc[lab] += 1
        if nnz + nt > out_conn.shape[0]:
            out_conn = _grow(out_conn, nnz + nt)
            out_cnt = _grow(out_cnt, nnz + nt)
        row = np.sort(touched[:nt])
        for x in range(nt):
            lab = row[x]
            out_conn[nnz] = lab
            out_cnt[nnz] = acc[lab]
            acc[lab] = 0
            nnz += 1
        out_ptr[ci + 1] = nnz
    return out_ptr, out_conn[:nnz].copy(), out_cnt[:nnz].copy()

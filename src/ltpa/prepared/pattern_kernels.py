"""The compiled loops behind termination patterns (numba, cached like ``ltpa.kernels``).

``dilate`` marks every key-grid voxel whose sphere holds an indexed voxel (the scan's
centers). ``sphere_patterns`` walks the centers in order; for each it visits the sphere's
voxels, their streamline ids, and counts each streamline once per center with a "last seen
at center c" stamp per streamline (no sort, no set: O(ids gathered)). A center's connection
ids then leave in sorted order one of two ways, whichever costs less for that center: a
bitmap over all connection ids, scanned word by word (cost: the bitmap's words plus the
ids present; the usual case, an atlas of a few hundred regions has a few thousand ids;
the counting is then free of data-dependent branches, which the CPU cannot predict),
or, when the center gathered few streamlines against many possible ids, the short list of
the ids it touched, sorted. The counters are reset as they are emitted.
"""

from __future__ import annotations

import numpy as np

from ..kernels import _jit


@_jit
def dilate(voxels, d0, d1, d2, offsets, mark):
    """``mark[lin] = 1`` for every voxel within ``offsets`` of a voxel of ``voxels``
    (linear C-order numbers of a d0 x d1 x d2 grid), clipped to the grid.

    Compiled (numba); nothing is returned, ``mark`` is filled in place (entries of voxels
    reached by no offset are left as they are).

    Parameters
    ----------
    voxels : numpy.ndarray
        int64 linear C-order numbers of the grid's voxels to dilate (the indexed voxels).
    d0, d1, d2 : int
        The grid's shape.
    offsets : numpy.ndarray
        (K, 3) int64 voxel offsets (the sphere, ``patterns.sphere_offsets``).
    mark : numpy.ndarray
        Flat array of ``d0 * d1 * d2`` entries (e.g. uint8 zeros), set to 1 in place.
    """
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


# count-trailing-zeros of a 64-bit word with one bit set, by de Bruijn multiplication
DE_BRUIJN = 0x03F79D71B4CB0A89
CTZ_TABLE = np.zeros(64, dtype=np.int64)
for _bit in range(64):
    CTZ_TABLE[((DE_BRUIJN << _bit) & 0xFFFFFFFFFFFFFFFF) >> 58] = _bit
del _bit


def work_arrays(n_streamlines, n_labels):
    """A kernel thread's work arrays: per streamline its last center (``stamp``), per
    connection id its counter (``acc``), the ids a center touched (``touched``) and the
    bitmap of the ids present (``bits``).

    Parameters
    ----------
    n_streamlines : int
        Streamlines of the scan.
    n_labels : int
        Number of connection ids (the largest id + 1).

    Returns
    -------
    stamp : numpy.ndarray
        int32 (n_streamlines,), all -1.
    acc : numpy.ndarray
        int32 (n_labels,), all 0.
    touched : numpy.ndarray
        int32 (n_labels,), uninitialized.
    bits : numpy.ndarray
        uint64 (ceil(n_labels / 64),), all 0.
    """
    return (np.full(n_streamlines, -1, dtype=np.int32),  # center numbers < 2**31
            np.zeros(n_labels, dtype=np.int32),
            np.empty(n_labels, dtype=np.int32),
            np.zeros((n_labels + 63) // 64, dtype=np.uint64))


@_jit
def sphere_patterns(centers, base, d0, d1, d2, offsets, lut, indptr, ids, conn, stamp, acc,
                    touched, bits, ctz, cap):
    """Per center, the distinct streamlines of its sphere counted per connection id.

    ``lut[lin]``: position of voxel ``lin`` in the index (``indptr``/``ids``), -1 if empty;
    ``conn[s]``: connection id of streamline ``s``. ``stamp``, ``acc``, ``touched`` and
    ``bits`` are the caller's (``work_arrays``; ``stamp`` never holds a value >= ``base``,
    ``acc`` and ``bits`` are zeros), so that the centers can come in chunks: center ``ci``
    of this call is number ``base + ci`` of the scan. ``ctz``: ``CTZ_TABLE``; ``cap``: the
    entries expected (the output grows past it, by doubling: a good guess saves the copies
    and the fresh pages). The result is CSR rows in the order of ``centers``, ids sorted
    within a row; the two entry arrays are views of the (larger) output buffers.

    Compiled (numba). ``stamp``, ``acc``, ``touched`` and ``bits`` are updated in place and
    left ready for the next chunk (``acc`` and ``bits`` zeros again).

    Parameters
    ----------
    centers : numpy.ndarray
        int64 linear C-order numbers of this chunk's center voxels.
    base : int
        Number of the chunk's first center in the scan (the stamp of center ``ci`` is
        ``base + ci``).
    d0, d1, d2 : int
        The key grid's shape.
    offsets : numpy.ndarray
        (K, 3) int64 voxel offsets of the sphere (``patterns.sphere_offsets``).
    lut : numpy.ndarray
        Flat (d0 * d1 * d2,) int32/int64: position of each voxel in the index, -1 if empty.
    indptr : numpy.ndarray
        int64 CSR pointers of the voxel index.
    ids : numpy.ndarray
        int32 streamline ids of the voxel index.
    conn : numpy.ndarray
        Connection id of each streamline (uint16 or int32), each < ``n_labels``.
    stamp : numpy.ndarray
        int32 per streamline: number of the last center that counted it.
    acc : numpy.ndarray
        int32 per connection id: the counter (zeros on entry).
    touched : numpy.ndarray
        int32 per connection id: scratch for the ids a center touched.
    bits : numpy.ndarray
        uint64 bitmap of the connection ids (zeros on entry).
    ctz : numpy.ndarray
        ``CTZ_TABLE``: int64 (64,) count-trailing-zeros table for ``DE_BRUIJN``.
    cap : int
        Entries expected; the output buffers start at ``max(1024, cap)``.

    Returns
    -------
    indptr : numpy.ndarray
        int64 (len(centers) + 1,): row ``ci``'s entries are ``indptr[ci]:indptr[ci + 1]``.
    connection_ids : numpy.ndarray
        int32 connection ids of each row, sorted within it (a view of a larger buffer).
    counts : numpy.ndarray
        int32 distinct streamlines of the row's sphere with that id (a view likewise).
    """
    n_c = centers.shape[0]
    n_off = offsets.shape[0]
    n_words = bits.shape[0]
    dedup = n_off > 1  # one voxel's ids are distinct already: no stamp needed
    plane = d1 * d2
    one = np.uint64(1)
    low6 = np.uint64(63)
    magic = np.uint64(DE_BRUIJN)
    top6 = np.uint64(58)
    voxels = np.empty(n_off, dtype=np.int64)
    out_ptr = np.zeros(n_c + 1, dtype=np.int64)
    cap = max(1024, cap)
    out_conn = np.empty(cap, dtype=np.int32)
    out_cnt = np.empty(cap, dtype=np.int32)
    nnz = 0
    for ci in range(n_c):
        v = centers[ci]
        i = v // plane
        j = (v // d2) % d1
        k = v % d2
        tag = base + ci
        n_vox = 0
        gathered = 0
        for o in range(n_off):
            a = i + offsets[o, 0]
            b = j + offsets[o, 1]
            c = k + offsets[o, 2]
            if a < 0 or a >= d0 or b < 0 or b >= d1 or c < 0 or c >= d2:
                continue
            p = lut[(a * d1 + b) * d2 + c]
            if p < 0:
                continue
            voxels[n_vox] = p
            n_vox += 1
            gathered += indptr[p + 1] - indptr[p]
        if nnz + gathered > out_conn.shape[0]:  # distinct ids <= ids gathered
            out_conn = _grow(out_conn, nnz + gathered)
            out_cnt = _grow(out_cnt, nnz + gathered)
        if 4 * gathered >= n_words:  # the bitmap: no branch on "first time seen"
            for x in range(n_vox):
                p = voxels[x]
                if dedup:  # branch-free: a streamline seen before adds 0 (its id's bit is set)
                    for q in range(indptr[p], indptr[p + 1]):
                        s = ids[q]
                        fresh = np.int32(stamp[s] != tag)
                        stamp[s] = tag
                        lab = conn[s]
                        acc[lab] += fresh
                        bits[lab >> 6] |= one << (np.uint64(lab) & low6)
                else:
                    for q in range(indptr[p], indptr[p + 1]):
                        lab = conn[ids[q]]
                        acc[lab] += 1
                        bits[lab >> 6] |= one << (np.uint64(lab) & low6)
            for w_at in range(n_words):
                w = bits[w_at]
                if w == 0:
                    continue
                bits[w_at] = 0
                while w != 0:
                    lowest = w & (~w + one)
                    lab = (w_at << 6) + ctz[(lowest * magic) >> top6]
                    out_conn[nnz] = lab
                    out_cnt[nnz] = acc[lab]
                    acc[lab] = 0
                    nnz += 1
                    w ^= lowest
        else:  # few streamlines, many possible ids: sort the ids touched
            nt = 0
            for x in range(n_vox):
                p = voxels[x]
                for q in range(indptr[p], indptr[p + 1]):
                    s = ids[q]
                    if dedup:
                        if stamp[s] == tag:
                            continue
                        stamp[s] = tag
                    lab = conn[s]
                    if acc[lab] == 0:
                        touched[nt] = lab
                        nt += 1
                    acc[lab] += 1
            row = np.sort(touched[:nt])
            for x in range(nt):
                lab = row[x]
                out_conn[nnz] = lab
                out_cnt[nnz] = acc[lab]
                acc[lab] = 0
                nnz += 1
        out_ptr[ci + 1] = nnz
    return out_ptr, out_conn[:nnz], out_cnt[:nnz]  # views: the caller keeps or compacts

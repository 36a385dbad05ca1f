"""The compiled loops behind reading, hashing, labeling and exporting (numba, ``cache=True``).

Why numba: hashing needs, per point, ``floor(voxmm / voxel_size)``, the key map and a
per-voxel bucket; in numpy that is a chain of whole-array temporaries plus a 40-60 M
element int64 sort (8 s and 2.2 GB at 10^6 streamlines). As loops they are one pass
(count) plus one scatter (fill): a counting sort by key voxel whose ids come out sorted
because streamlines are visited in order.

The .trk body is read into a small buffer a range at a time (``ltpa.formats.trk.TrkFile.walk``):
``walk_range`` finds the whole records in the buffer (``starts``/``counts`` relative to the
buffer), then one action kernel per step reads them while they are in cache:
``hash_range`` (the pkl), ``label_range`` (the npy), ``export_range`` (the key-grid trk),
``length_range`` (QC). ``words`` (float32) and ``ints`` (int32) are two views of the
buffer; streamline ``s`` of a range has ``counts[s]`` points, point ``p`` at
``words[starts[s] + p * stride : +3]``. Kernels allocate nothing per point and stop at
the first non-finite coordinate, returning the streamline so the caller can name it.

What an action needs comes as one named tuple (``LabelTables``, ``HashTables``, ``KeyShift``).

Compiled code is cached next to this file (``__pycache__``) or, when that folder is
read-only, in numba's user-wide cache (``NUMBA_CACHE_DIR`` or ~/.cache/numba); with
no writable location at all the kernels are compiled in memory for every process
(a few seconds) instead of failing.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections import namedtuple

import numba
import numpy as np


def _load_numba_numpy_support():
    """Import numba's numpy support without its BLAS probe.

    On the first compiled call numba imports ``numba.np.arraymath``, which imports
    scipy.linalg only to learn whether BLAS is there; no kernel here uses BLAS. Measured
    (numba 0.68, 2-core VM; CPU time of ``from ltpa import kernels`` plus the first call of
    a cached kernel, numpy already imported, 12 fresh processes each): median 0.32 s (0.28-0.36)
    with the probe hidden, 0.47 s (0.41-0.49) with ``LTPA_NUMBA_BLAS_PROBE=1``, i.e. ~0.15 s
    of CPU saved in every process that loads the kernels: the job server once, but also
    each per-scan QC job (qc_scan reads streamline lengths with a kernel), 25 CPU minutes
    at 10,000 scans. The probe is answered "no" by hiding ``scipy.linalg.cython_blas`` for
    that one import.
    The only effect on other numba code in the same process: numba's ``np.cov`` and
    ``np.corrcoef`` use a plain loop for their inner products. ``LTPA_NUMBA_BLAS_PROBE=1``
    keeps numba's default.
    """
    if "numba.np.arraymath" in sys.modules or os.environ.get("LTPA_NUMBA_BLAS_PROBE") == "1":
        return
    key = "scipy.linalg.cython_blas"
    hidden = key not in sys.modules
    if hidden:
        sys.modules[key] = None  # makes "import scipy.linalg.cython_blas" raise ImportError
    try:
        import numba.np.arraymath  # noqa: F401
    except ImportError:
        pass
    finally:
        if hidden and sys.modules.get(key, 0) is None:
            del sys.modules[key]


_load_numba_numpy_support()

_OPTIONS = dict(nogil=True, error_model="numpy", boundscheck=False)


def _jit(fn):
    try:
        return numba.njit(cache=True, **_OPTIONS)(fn)
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        warnings.warn(f"ltpa: numba cannot cache compiled code ({exc}); compiling in memory",
                      RuntimeWarning, stacklevel=2)
        return numba.njit(**_OPTIONS)(fn)


# rank: flat atlas (C order) of 0 = background, r + 1 = position of the label in the sorted
# region list; vs/adim/upper: the grid (see upper_thresholds); start: number of the first id
LabelTables = namedtuple("LabelTables", "vs adim upper rank n_regions start")
# the counting sort's state: per key voxel the last streamline counted (last) and the number
# of pairs (vcount); per pair its voxel (keys); per streamline its number of pairs
HashTables = namedtuple("HashTables", "vs sign shift kdim last vcount keys per_streamline")
# key-grid voxmm = voxmm * sign + shift (float32), per axis
KeyShift = namedtuple("KeyShift", "sign shift")

WALK_OK, WALK_NEGATIVE, WALK_PARTIAL = 0, 1, 2


@_jit
def walk_range(ints, w, w_end, stride, n_properties, starts, counts, n):
    """The whole records from word ``w`` up to ``w_end``: their starts and counts from ``n`` on.

    A record is ``[count, count * stride words, n_properties words]``. The result is
    ``(w, n, status)``: WALK_OK when ``w_end`` (or the capacity of ``counts``) is reached;
    WALK_NEGATIVE when the count at ``w`` is negative; WALK_PARTIAL when the record at
    ``w`` runs past ``w_end`` (the caller reads on, or reports a truncated file).

    Compiled (numba).

    Parameters
    ----------
    ints : numpy.ndarray
        int32 view of the buffer of body words.
    w : int
        Word of ``ints`` where a record starts.
    w_end : int
        End (exclusive) of the valid words of ``ints``.
    stride : int
        Words per point (3 plus the scalars per point).
    n_properties : int
        Property words at the end of each record.
    starts : numpy.ndarray
        int64 out: ``starts[i]`` is the word (in ``ints``) of record i's first point.
    counts : numpy.ndarray
        int64 out: points of record i; its length is the most records taken.
    n : int
        Index in ``starts``/``counts`` of the first record to write.

    Returns
    -------
    w : int
        Word after the last whole record taken (for WALK_NEGATIVE/WALK_PARTIAL: the word of
        the offending record's count).
    n : int
        ``n`` plus the number of records taken.
    status : int
        WALK_OK, WALK_NEGATIVE or WALK_PARTIAL.
    """
    cap = counts.shape[0]
    while w < w_end and n < cap:
        c = np.int64(ints[w])
        if c < 0:
            return w, n, WALK_NEGATIVE
        nxt = w + 1 + c * stride + n_properties
        if nxt > w_end:
            return w, n, WALK_PARTIAL
        starts[n] = w + 1
        counts[n] = c
        n += 1
        w = nxt
    return w, n, WALK_OK


@_jit
def hash_range(words, starts, counts, n, s_base, stride, t, nk):
    """Pass 1 of the counting sort for the ``n`` streamlines of a range (global ids from
    ``s_base``).

    For every point: its trk voxel ``v = floor(voxmm / vs)`` (float64), key = sign * v
    + shift; keys outside ``kdim`` are counted and skipped. A (key, streamline) pair
    is new when ``last[key] != s`` (consecutive repeats are skipped before touching
    ``last``); new pairs append the key's linear index to ``keys[nk:]`` and bump
    ``vcount[key]``; ``per_streamline[s]`` = number of new pairs of ``s``.
    The result is ``(nk, n_outside, bad)``; ``bad`` = first streamline (of the range) with a
    non-finite coordinate, or -1.

    Compiled (numba); ``t.last``, ``t.vcount``, ``t.keys`` and ``t.per_streamline`` are
    updated in place.

    Parameters
    ----------
    words : numpy.ndarray
        float32 buffer of body words (this machine's byte order).
    starts : numpy.ndarray
        int64 word (in ``words``) of each record's first point.
    counts : numpy.ndarray
        int64 points per record.
    n : int
        Number of records of the range.
    s_base : int
        File streamline number of the range's first record.
    stride : int
        Words per point (3 plus the scalars per point).
    t : HashTables
        The grid (``vs``, ``sign``, ``shift``, ``kdim``) and the counting sort's state.
    nk : int
        Pairs kept so far (the next free slot of ``t.keys``).

    Returns
    -------
    nk : int
        Pairs kept after this range.
    n_outside : int
        Points of the range whose key voxel lies outside ``kdim`` (up to ``bad``).
    bad : int
        Index within the range of the first streamline with a non-finite coordinate (its
        processing stops there), or -1.
    """
    v0, v1, v2 = t.vs[0], t.vs[1], t.vs[2]
    g0, g1, g2 = t.sign[0], t.sign[1], t.sign[2]
    h0, h1, h2 = t.shift[0], t.shift[1], t.shift[2]
    d0, d1, d2 = t.kdim[0], t.kdim[1], t.kdim[2]
    f0 = np.float64(d0)
    f1 = np.float64(d1)
    f2 = np.float64(d2)
    last = t.last
    vcount = t.vcount
    keys = t.keys
    n_out = 0
    for r in range(n):
        s = s_base + r
        o = starts[r]
        first = nk
        prev = np.int64(-1)
        sid = np.int32(s)
        for _ in range(counts[r]):
            x = np.float64(words[o])
            y = np.float64(words[o + 1])
            z = np.float64(words[o + 2])
            o += stride
            if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
                return nk, n_out, r
            a = g0 * np.floor(x / v0) + h0
            b = g1 * np.floor(y / v1) + h1
            c = g2 * np.floor(z / v2) + h2
            if not (a >= 0.0 and a < f0 and b >= 0.0 and b < f1 and c >= 0.0 and c < f2):
                n_out += 1
                continue
            lin = (np.int64(a) * d1 + np.int64(b)) * d2 + np.int64(c)
            if lin == prev:
                continue
            prev = lin
            if last[lin] == sid:
                continue
            last[lin] = sid
            vcount[lin] += 1
            keys[nk] = lin
            nk += 1
        t.per_streamline[s] = nk - first
    return nk, n_out, -1


@_jit
def hash_fill(keys, per_streamline, pos, ids):
    """Pass 2: scatter streamline ids into their voxels' slots (``pos`` = slot cursors).

    Compiled (numba); nothing is returned: ``ids`` is filled and ``pos`` advanced in place.

    Parameters
    ----------
    keys : numpy.ndarray
        int32/int64 linear key voxel of each kept pair, in streamline order (pass 1).
    per_streamline : numpy.ndarray
        int32 number of kept pairs of each streamline.
    pos : numpy.ndarray
        int64 per key voxel: the next slot of ``ids`` for that voxel (the CSR ``indptr``
        start of each non-empty voxel).
    ids : numpy.ndarray
        int32 out, one slot per pair: the streamline ids by voxel.
    """
    k = 0
    for s in range(per_streamline.shape[0]):
        sid = np.int32(s)
        for _ in range(per_streamline[s]):
            v = keys[k]
            ids[pos[v]] = sid
            pos[v] += 1
            k += 1


def upper_thresholds(dim, voxel_size) -> np.ndarray:
    """Per axis, the smallest float32 ``t`` with ``floor(float64(t) / voxel_size) >= dim``.

    Correctly rounded division is monotonic, so for a float32 coordinate ``x``:
    ``0 <= floor(x / vs) < dim``  <=>  ``0 <= x < t`` (``-0.0`` included, like floor).

    Parameters
    ----------
    dim : sequence of int
        The grid's shape (3 values).
    voxel_size : sequence of float
        Voxel sizes in mm (3 values, positive).

    Returns
    -------
    numpy.ndarray
        float32 (3,): the threshold ``t`` of each axis.
    """
    out = np.empty(3, dtype=np.float32)
    for ax in range(3):
        d = float(dim[ax])
        vs = float(voxel_size[ax])
        t = np.float32(d * vs)
        lo = np.float32(-np.inf)
        while t > lo and float(np.nextafter(t, lo)) / vs >= d:
            t = np.nextafter(t, lo)
        while float(t) / vs < d:
            t = np.nextafter(t, np.float32(np.inf))
        out[ax] = t
    return out


@_jit
def _rank_at(x, y, z, t):
    """Rank of the atlas voxel ``floor(voxmm / vs)`` of a point known to be inside the grid."""
    lin = ((np.int64(np.floor(np.float64(x) / t.vs[0])) * t.adim[1]
            + np.int64(np.floor(np.float64(y) / t.vs[1]))) * t.adim[2]
           + np.int64(np.floor(np.float64(z) / t.vs[2])))
    return t.rank[lin]


@_jit
def label_range(words, starts, counts, n, stride, t, out):
    """Connection ids of the ``n`` streamlines of a range into ``out[:n]``.

    Every point is checked for finiteness and for lying in the atlas grid by compares
    against ``t.upper`` (see ``upper_thresholds``; the count of points outside is
    returned); the voxel ``floor(voxmm / vs)`` is computed and its label looked up
    only from the front until the first nonzero label and from the back until the
    last one. With fewer than two labeled points the id is 0; otherwise, for ranks
    a, b of the first and last labels, the position of (min, max) in
    ``np.triu_indices(n_regions)`` plus ``start``. The result is ``(n_outside, bad)`` with
    ``bad`` as in ``hash_range``.

    Compiled (numba).

    Parameters
    ----------
    words : numpy.ndarray
        float32 buffer of body words (this machine's byte order).
    starts : numpy.ndarray
        int64 word (in ``words``) of each record's first point.
    counts : numpy.ndarray
        int64 points per record.
    n : int
        Number of records of the range.
    stride : int
        Words per point (3 plus the scalars per point).
    t : LabelTables
        The atlas grid and rank volume (``labels.labeling_tables``).
    out : numpy.ndarray
        int64 out, at least ``n`` entries: the connection id of each record.

    Returns
    -------
    n_outside : int
        Finite points of the range outside the atlas grid (up to ``bad``).
    bad : int
        Index within the range of the first streamline with a non-finite coordinate (its
        id and those after it are not written), or -1.
    """
    t0 = t.upper[0]
    t1 = t.upper[1]
    t2 = t.upper[2]
    zero = np.float32(0.0)
    n_out = 0
    for r in range(n):
        o0 = starts[r]
        c = counts[r]
        a_rank = 0
        a_pos = -1
        o = o0
        p = 0
        # up to the first nonzero label: look each inside point up
        while p < c:
            x = words[o]
            y = words[o + 1]
            z = words[o + 2]
            o += stride
            if x >= zero and x < t0 and y >= zero and y < t1 and z >= zero and z < t2:
                rk = _rank_at(x, y, z, t)
                if rk != 0:
                    a_rank = rk
                    a_pos = p
                    p += 1
                    break
            elif math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
                n_out += 1
            else:
                return n_out, r
            p += 1
        # the rest: only count the points outside the grid and the non-finite ones, without
        # branches (x - x is 0 for finite x, NaN otherwise)
        n_bad = 0
        if stride == 3:  # plain layout: a constant step lets LLVM vectorize
            for q in range(c - p):
                x = words[o + 3 * q]
                y = words[o + 3 * q + 1]
                z = words[o + 3 * q + 2]
                fin = (x - x == zero) & (y - y == zero) & (z - z == zero)
                ins = (x >= zero) & (x < t0) & (y >= zero) & (y < t1) & (z >= zero) & (z < t2)
                n_out += np.int64(fin & (not ins))
                n_bad += np.int64(not fin)
            p = c
        while p < c:
            x = words[o]
            y = words[o + 1]
            z = words[o + 2]
            o += stride
            fin = (x - x == zero) & (y - y == zero) & (z - z == zero)
            ins = (x >= zero) & (x < t0) & (y >= zero) & (y < t1) & (z >= zero) & (z < t2)
            n_out += np.int64(fin & (not ins))
            n_bad += np.int64(not fin)
            p += 1
        if n_bad:
            return n_out, r
        out[r] = _pair_id_from_back(words, o0, c, stride, a_pos, a_rank, t)
    return n_out, -1


@_jit
def _pair_id_from_back(words, o0, count, stride, a_pos, a_rank, t):
    """Connection id of a streamline whose first nonzero label (rank ``a_rank``) is at point
    ``a_pos``: scan back from its last point, stopping after ``a_pos``, for the last nonzero
    label; 0 when there is none (fewer than two labeled points) or ``a_pos < 0``."""
    if a_pos < 0:
        return 0
    zero = np.float32(0.0)
    t0 = t.upper[0]
    t1 = t.upper[1]
    t2 = t.upper[2]
    o = o0 + (count - 1) * stride
    for _ in range(count - 1, a_pos, -1):
        x = words[o]
        y = words[o + 1]
        z = words[o + 2]
        o -= stride
        if x >= zero and x < t0 and y >= zero and y < t1 and z >= zero and z < t2:
            rk = _rank_at(x, y, z, t)
            if rk != 0:
                lo = np.int64(min(a_rank, rk)) - 1
                hi = np.int64(max(a_rank, rk)) - 1
                return lo * t.n_regions - (lo * (lo - 1)) // 2 + (hi - lo) + t.start
    return 0


@_jit
def export_range(words, starts, counts, n, stride, k, out_f, out_i):
    """Records ``[n, x y z ...]`` of the ``n`` streamlines of a range, moved to the key grid.

    ``out_f``/``out_i`` are float32/int32 views of one output buffer; coordinates are
    ``v * sign + shift`` in float32 (as numpy computes ``pts * sign + shift``). The result is
    the number of words written, or ``-1 - r`` for a non-finite coordinate in ``r``.

    Compiled (numba). Scalars and properties of the input are dropped.

    Parameters
    ----------
    words : numpy.ndarray
        float32 buffer of body words (this machine's byte order).
    starts : numpy.ndarray
        int64 word (in ``words``) of each record's first point.
    counts : numpy.ndarray
        int64 points per record.
    n : int
        Number of records of the range.
    stride : int
        Words per point (3 plus the scalars per point).
    k : KeyShift
        float32 per-axis ``sign`` and ``shift``.
    out_f : numpy.ndarray
        float32 output buffer of at least ``n + 3 * counts.sum()`` words.
    out_i : numpy.ndarray
        int32 view of the same buffer (for the count words).

    Returns
    -------
    int
        Words written (records ``[count, x y z ...]``), or ``-1 - r`` when record ``r`` of
        the range has a non-finite coordinate.
    """
    g0, g1, g2 = k.sign[0], k.sign[1], k.sign[2]
    h0, h1, h2 = k.shift[0], k.shift[1], k.shift[2]
    w = 0
    for r in range(n):
        o = starts[r]
        out_i[w] = np.int32(counts[r])
        w += 1
        for _ in range(counts[r]):
            x = words[o]
            y = words[o + 1]
            z = words[o + 2]
            o += stride
            if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
                return -1 - r
            out_f[w] = x * g0 + h0
            out_f[w + 1] = y * g1 + h1
            out_f[w + 2] = z * g2 + h2
            w += 3
    return w


@_jit
def length_range(words, starts, counts, n, stride, out):
    """Length in mm (sum of point distances, float64) of the ``n`` streamlines of a range.

    Returns -1, or the first streamline with a non-finite coordinate.

    Compiled (numba). Distances are between the stored voxmm points (mm).

    Parameters
    ----------
    words : numpy.ndarray
        float32 buffer of body words (this machine's byte order).
    starts : numpy.ndarray
        int64 word (in ``words``) of each record's first point.
    counts : numpy.ndarray
        int64 points per record.
    n : int
        Number of records of the range.
    stride : int
        Words per point (3 plus the scalars per point).
    out : numpy.ndarray
        float64 out, at least ``n`` entries: the length of each record (0 for fewer than
        two points).

    Returns
    -------
    int
        -1, or the index within the range of the first streamline with a non-finite
        coordinate (its length and those after it are not written).
    """
    for r in range(n):
        o = starts[r]
        total = 0.0
        px = py = pz = 0.0
        for p in range(counts[r]):
            x = np.float64(words[o])
            y = np.float64(words[o + 1])
            z = np.float64(words[o + 2])
            if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
                return r
            if p:
                total += math.sqrt((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2)
            px, py, pz = x, y, z
            o += stride
        out[r] = total
    return -1

"""The compiled loops behind reading, hashing, labeling and exporting (numba, ``cache=True``).

Why numba: hashing needs, per point, ``floor(voxmm / voxel_size)``, the key map and a
per-voxel bucket; in numpy that is a chain of whole-array temporaries plus a 40-60 M
element int64 sort (8 s and 2.2 GB at 10^6 streamlines). As loops over the mapped
file they are one sequential pass (count) plus one scatter (fill): a counting sort by
key voxel whose ids come out sorted because streamlines are visited in order.

Every kernel reads the .trk body in place: ``words`` (float32) and ``ints`` (int32)
are two views of the same native-order words; streamline ``s`` has ``counts[s]``
points, point ``p`` at ``words[starts[s] + p * stride : +3]``. Kernels never
allocate per-point arrays and stop at the first non-finite coordinate, returning
the streamline's id so the caller can raise the error.

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

import numpy as np
import numba


def _load_numba_numpy_support():
    """Import numba's numpy support without its BLAS probe (saves ~0.25 s per process).

    On the first compiled call numba loads its numpy support; ``numba.np.arraymath``
    then imports scipy.linalg only to learn whether BLAS is there (``_HAVE_BLAS``),
    which costs a quarter of a second in every short-lived job. The kernels here
    use no BLAS, so the probe is answered "no" by hiding ``scipy.linalg.cython_blas``
    for that one import. The only effect on other numba code in the same process:
    the inner products of numba's ``np.cov``/``np.corrcoef`` use a plain loop
    (every other linear-algebra function checks for BLAS again when compiled).
    Set ``LTPA_NUMBA_BLAS_PROBE=1`` to keep numba's default.
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


@_jit
def walk_counts(ints, w, w_stop, stride, n_properties, counts, n):
    """Follow the int32 point counts from word ``w`` while ``w < w_stop``.

    Stores the counts in ``counts[n:]`` and stops early when ``counts`` is full.
    Returns ``(w, n, status, touched)``: status 0 = ok, 1 = negative count at
    ``counts[n]`` (which holds the bad value; ``n`` not advanced). Each count's
    position depends on the previous count, so the walk is a chain of dependent
    loads; reading one word per cache line a few KB ahead (``touched``, returned
    so the loads are kept) lets those misses overlap instead of queueing.
    """
    total = ints.shape[0]
    cap = counts.shape[0]
    stop = min(w_stop, total)
    ahead = w
    touched = 0
    while w < stop and n < cap:
        c = np.int64(ints[w])
        counts[n] = c
        if c < 0:
            return w, n, 1, touched
        n += 1
        w += 1 + c * stride + n_properties
        t = min(w + 4096, total)
        while ahead < t:
            touched += ints[ahead]
            ahead += 16
    return w, n, 0, touched


@_jit
def hash_count(words, starts, counts, s0, s1, stride, vs, sign, shift, kdim,
               last, vcount, keys, nk, per_streamline):
    """Pass 1 of the counting sort, for streamlines ``s0 .. s1-1``.

    For every point: native voxel ``floor(voxmm / vs)`` (float64), key = sign * native
    + shift; keys outside ``kdim`` are counted and skipped. A (key, streamline) pair
    is new when ``last[key] != s`` (consecutive repeats are skipped before touching
    ``last``); new pairs append the key's linear index to ``keys[nk:]``, bump
    ``vcount[key]``; ``per_streamline[s]`` = number of new pairs of ``s``.
    Returns ``(nk, n_outside, bad)``; ``bad`` = first streamline with a non-finite
    coordinate, or -1.
    """
    v0 = vs[0]
    v1 = vs[1]
    v2 = vs[2]
    g0 = sign[0]
    g1 = sign[1]
    g2 = sign[2]
    h0 = shift[0]
    h1 = shift[1]
    h2 = shift[2]
    d0 = kdim[0]
    d1 = kdim[1]
    d2 = kdim[2]
    f0 = np.float64(d0)
    f1 = np.float64(d1)
    f2 = np.float64(d2)
    n_out = 0
    for s in range(s0, s1):
        o = starts[s]
        n = counts[s]
        first = nk
        prev = np.int64(-1)
        sid = np.int32(s)
        for _ in range(n):
            x = np.float64(words[o])
            y = np.float64(words[o + 1])
            z = np.float64(words[o + 2])
            o += stride
            if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
                return nk, n_out, s
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
        per_streamline[s] = nk - first
    return nk, n_out, -1


@_jit
def hash_fill(keys, per_streamline, pos, ids):
    """Pass 2: scatter streamline ids into their voxels' slots (``pos`` = slot cursors)."""
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
def _rank_at(x, y, z, v0, v1, v2, d1, d2, rank):
    """Rank of the atlas voxel ``floor(voxmm / vs)`` of a point known to be inside the grid."""
    lin = ((np.int64(np.floor(np.float64(x) / v0)) * d1
            + np.int64(np.floor(np.float64(y) / v1))) * d2
           + np.int64(np.floor(np.float64(z) / v2)))
    return rank[lin]


@_jit
def _pair_id_from_back(words, o0, count, stride, a_pos, a_rank, t0, t1, t2, v0, v1, v2, d1, d2,
                       rank, n_regions, start):
    """Connection id of a streamline whose first nonzero label (rank ``a_rank``) is at point
    ``a_pos``: scan back from its last point, stopping after ``a_pos``, for the last nonzero
    label; 0 when there is none (fewer than two labeled points) or ``a_pos < 0``."""
    if a_pos < 0:
        return 0
    zero = np.float32(0.0)
    o = o0 + (count - 1) * stride
    for _ in range(count - 1, a_pos, -1):
        x = words[o]
        y = words[o + 1]
        z = words[o + 2]
        o -= stride
        if x >= zero and x < t0 and y >= zero and y < t1 and z >= zero and z < t2:
            r = _rank_at(x, y, z, v0, v1, v2, d1, d2, rank)
            if r != 0:
                lo = np.int64(min(a_rank, r)) - 1
                hi = np.int64(max(a_rank, r)) - 1
                return lo * n_regions - (lo * (lo - 1)) // 2 + (hi - lo) + start
    return 0


@_jit
def label_chunk(words, starts, counts, s0, s1, stride, vs, adim, upper, rank, n_regions,
                start, out):
    """Connection ids of streamlines ``s0 .. s1-1`` into ``out[s0:s1]``.

    ``rank`` is the flat (C order) atlas mapped to 0 = background, r + 1 = position
    of the label in the sorted region list. Every point is checked for finiteness
    and for lying in the atlas grid by compares against ``upper`` (see
    ``upper_thresholds``; the count of points outside is returned); the voxel
    ``floor(voxmm / vs)`` is computed and its label looked up only from the front
    until the first nonzero label and from the back until the last one.
    Returns ``(n_outside, bad)`` with ``bad`` as in ``hash_count``.
    """
    v0 = vs[0]
    v1 = vs[1]
    v2 = vs[2]
    d1 = adim[1]
    d2 = adim[2]
    t0 = upper[0]
    t1 = upper[1]
    t2 = upper[2]
    zero = np.float32(0.0)
    n_out = 0
    for s in range(s0, s1):
        o0 = starts[s]
        n = counts[s]
        a_rank = 0
        a_pos = -1
        o = o0
        for p in range(n):
            x = words[o]
            y = words[o + 1]
            z = words[o + 2]
            o += stride
            if x >= zero and x < t0 and y >= zero and y < t1 and z >= zero and z < t2:
                if a_pos < 0:
                    r = _rank_at(x, y, z, v0, v1, v2, d1, d2, rank)
                    if r != 0:
                        a_rank = r
                        a_pos = p
            elif math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
                n_out += 1
            else:
                return n_out, s
        out[s] = _pair_id_from_back(words, o0, n, stride, a_pos, a_rank, t0, t1, t2,
                                    v0, v1, v2, d1, d2, rank, n_regions, start)
    return n_out, -1


@_jit
def export_chunk(words, starts, counts, s0, s1, stride, sign, shift, out_f, out_i):
    """Records ``[n, x y z ...]`` of streamlines ``s0 .. s1-1`` moved to the key grid's voxmm.

    ``out_f``/``out_i`` are float32/int32 views of one output buffer; coordinates are
    ``v * sign + shift`` in float32 (as numpy computes ``pts * sign + shift``). Returns
    the number of words written, or ``-1 - s`` for a non-finite coordinate in ``s``.
    """
    g0 = sign[0]
    g1 = sign[1]
    g2 = sign[2]
    h0 = shift[0]
    h1 = shift[1]
    h2 = shift[2]
    w = 0
    for s in range(s0, s1):
        o = starts[s]
        n = counts[s]
        out_i[w] = np.int32(n)
        w += 1
        for _ in range(n):
            x = words[o]
            y = words[o + 1]
            z = words[o + 2]
            o += stride
            if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
                return -1 - s
            out_f[w] = x * g0 + h0
            out_f[w + 1] = y * g1 + h1
            out_f[w + 2] = z * g2 + h2
            w += 3
    return w


@_jit
def walk_label(ints, words, w, w_stop, stride, n_properties, ids, n, do_label, vs, adim,
               upper, rank, n_regions, start):
    """Walk the records from word ``w`` (like ``walk_counts``) and label each one on the way.

    One sweep over the body: the count word of a record is followed by its points, so
    the finiteness check, the outside-grid count and the first/last nonzero label scan
    of ``label_chunk`` are done while the record is in cache. ``ids[n:]`` receives the
    connection ids; stops early when ``ids`` is full. With ``do_label`` false only the
    counts are followed (``ids`` gets 0), after a non-finite coordinate was found.
    Returns ``(w, n, status, c, n_outside)``: status 0 = ok (``c`` = last count seen);
    1 = negative count ``c`` at streamline ``n`` (not advanced); 2 = streamline
    ``n - 1`` with ``c`` points runs past the end of the body (``w`` > body size);
    3 = non-finite coordinate in streamline ``n`` (not advanced, ``w`` at its count).
    """
    total = ints.shape[0]
    cap = ids.shape[0]
    stop = min(w_stop, total)
    v0 = vs[0]
    v1 = vs[1]
    v2 = vs[2]
    d1 = adim[1]
    d2 = adim[2]
    t0 = upper[0]
    t1 = upper[1]
    t2 = upper[2]
    zero = np.float32(0.0)
    n_out = 0
    c = np.int64(0)
    while w < stop and n < cap:
        c = np.int64(ints[w])
        if c < 0:
            return w, n, 1, c, n_out
        nxt = w + 1 + c * stride + n_properties
        if nxt > total:
            ids[n] = 0
            return nxt, n + 1, 2, c, n_out
        if not do_label:
            ids[n] = 0
            n += 1
            w = nxt
            continue
        o0 = w + 1
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
                r = _rank_at(x, y, z, v0, v1, v2, d1, d2, rank)
                if r != 0:
                    a_rank = r
                    a_pos = p
                    p += 1
                    break
            elif math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
                n_out += 1
            else:
                return w, n, 3, c, n_out
            p += 1
        # the rest: only count the points outside the grid and the non-finite ones,
        # without branches (x - x is 0 for finite x, NaN otherwise)
        n_bad = 0
        if stride == 3:  # plain layout: a constant step lets LLVM vectorize (-0.05 s at 10^6)
            for q in range(c - p):
                x = words[o + 3 * q]
                y = words[o + 3 * q + 1]
                z = words[o + 3 * q + 2]
                fin = (x - x == zero) & (y - y == zero) & (z - z == zero)
                ins = ((x >= zero) & (x < t0) & (y >= zero) & (y < t1) & (z >= zero) & (z < t2))
                n_out += np.int64(fin & (not ins))
                n_bad += np.int64(not fin)
            p = c
        while p < c:
            x = words[o]
            y = words[o + 1]
            z = words[o + 2]
            o += stride
            fin = (x - x == zero) & (y - y == zero) & (z - z == zero)
            ins = ((x >= zero) & (x < t0) & (y >= zero) & (y < t1) & (z >= zero) & (z < t2))
            n_out += np.int64(fin & (not ins))
            n_bad += np.int64(not fin)
            p += 1
        if n_bad:
            return w, n, 3, c, n_out
        ids[n] = _pair_id_from_back(words, o0, c, stride, a_pos, a_rank, t0, t1, t2,
                                    v0, v1, v2, d1, d2, rank, n_regions, start)
        n += 1
        w = nxt
    return w, n, 0, c, n_out

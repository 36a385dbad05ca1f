"""Connection ids: the one numbering rule, its inverse, counts per region pair, and the region
list a scan's ids are numbered over.

A connection id is the position of ``(min(a, b), max(a, b))`` (positions in the sorted
region list) in the enumeration of ``np.triu_indices(R)`` (diagonal included), plus
``start`` (``connection_ids_start_at``: 1 by default; 0 as dsi2's DSI2_CONN_START_AT_0). Id 0
is a streamline with fewer than two labeled points (with ``start`` 0 it is also the first
region's self-connection, and is left out of counts as unlabeled).

The region list is the atlas entry's graphml's, else its label table's (``region_list``);
the labeling job falls back to the atlas's own labels and records the list it used in the
npy's sidecar, which is what readers decode with.
"""

from __future__ import annotations

import numpy as np

from ..formats.regions import regions_from_graphml, regions_from_table


def pair_index(lo: np.ndarray, hi: np.ndarray, n_regions: int) -> np.ndarray:
    """Position of (lo, hi), lo <= hi, in the enumeration of np.triu_indices(n_regions)."""
    lo = lo.astype(np.int64)
    return lo * n_regions - (lo * (lo - 1)) // 2 + (hi.astype(np.int64) - lo)


def connection_id(a: int, b: int, n_regions: int, start: int = 1) -> int:
    """The connection id of the regions at positions ``a`` and ``b`` of the region list."""
    lo, hi = sorted((int(a), int(b)))
    return int(pair_index(np.array([lo]), np.array([hi]), n_regions)[0]) + int(start)


def decode_regions(ids, regions: np.ndarray, start: int):
    """(region_a, region_b) arrays (region ids from ``regions``) of connection ids.

    Id 0 (unlabeled; with ``start`` 0 also the first region's self-connection, left out as
    in the counts) and ids outside the numbering give -1.
    """
    ids = np.asarray(ids, dtype=np.int64)
    iu = np.triu_indices(regions.shape[0])
    k = ids - start
    ok = (k >= 0) & (k < iu[0].shape[0]) & (ids != 0)
    kk = np.where(ok, k, 0)
    return np.where(ok, regions[iu[0][kk]], -1), np.where(ok, regions[iu[1][kk]], -1)


def decode_pairs(ids: np.ndarray, n_regions: int, start: int = 1):
    """(a, b) positions in the region list of every labeled streamline's connection id.

    Ids below ``start`` (and id 0, which is "fewer than two labeled points" when
    ``start`` is 1, and ambiguous when it is 0) are left out.
    """
    ids = np.asarray(ids, dtype=np.int64)
    labeled = ids[(ids >= start) & (ids != 0)]
    pos = labeled - start
    n_pairs = n_regions * (n_regions + 1) // 2
    if pos.size and int(pos.max()) >= n_pairs:
        raise ValueError(f"connection id {int(pos.max()) + start} is beyond the {n_pairs} pairs of "
                         f"{n_regions} regions")
    rows, cols = np.triu_indices(n_regions)
    return rows[pos], cols[pos]


def pair_counts(ids: np.ndarray, n_regions: int, start: int = 1) -> np.ndarray:
    """Streamlines per region pair, in the order of ``np.triu_indices(n_regions)`` (int64).

    The same ids as :func:`decode_pairs` count (id 0 and ids below ``start`` are left
    out), with one ``np.bincount`` instead of decoding every id: the report sums this
    over thousands of scans.
    """
    ids = np.asarray(ids)
    n_pairs = n_regions * (n_regions + 1) // 2
    if ids.size == 0:
        return np.zeros(n_pairs, dtype=np.int64)
    if ids.dtype.kind not in "iu":
        ids = ids.astype(np.int64)
    if int(ids.min()) < 0:
        raise ValueError(f"negative connection id {int(ids.min())}")
    counts = np.bincount(ids, minlength=start + n_pairs)
    if counts.shape[0] > start + n_pairs:
        raise ValueError(f"connection id {counts.shape[0] - 1} is beyond the {n_pairs} pairs of "
                         f"{n_regions} regions")
    counts = counts[start:].astype(np.int64, copy=True)
    if start == 0 and n_pairs:
        counts[0] = 0  # id 0 is "fewer than two labeled points" as well (see decode_pairs)
    return counts


def pairs_to_matrix(counts: np.ndarray, n_regions: int) -> np.ndarray:
    """Symmetric (R, R) matrix of per-pair values given in ``np.triu_indices`` order."""
    counts = np.asarray(counts)
    m = np.zeros((n_regions, n_regions), dtype=counts.dtype)
    rows, cols = np.triu_indices(n_regions)
    m[rows, cols] = counts
    m[cols, rows] = counts
    return m


def connection_matrix(ids: np.ndarray, n_regions: int, start: int = 1) -> np.ndarray:
    """Symmetric (R, R) int64 streamline counts per region pair (diagonal: both ends alike)."""
    return pairs_to_matrix(pair_counts(ids, n_regions, start), n_regions)


def region_union(keys) -> np.ndarray:
    """Sorted int64 union of region lists (tuples of region ids)."""
    keys = list(keys)
    if not keys:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate([np.asarray(k, dtype=np.int64) for k in keys]))


def pairs_on_union(regions, union: np.ndarray) -> np.ndarray:
    """Where each pair of ``regions`` (in ``np.triu_indices`` order) stands among the pairs
    of ``union`` (a sorted superset), as positions in ``union``'s ``np.triu_indices`` order."""
    pos = np.searchsorted(union, np.asarray(regions, dtype=np.int64))
    rows, cols = np.triu_indices(len(regions))
    a, b = pos[rows], pos[cols]  # a <= b: both lists are sorted
    return a * union.size - a * (a - 1) // 2 + (b - a)


def regions_reached(ids: np.ndarray, region_ids, start: int = 1) -> np.ndarray:
    """Region ids that at least one streamline's connection reaches."""
    region_ids = np.asarray(region_ids, dtype=np.int64)
    a, b = decode_pairs(ids, region_ids.shape[0], start)
    return region_ids[np.unique(np.concatenate([a, b]))]


def region_list(graphml_path=None, labels_path=None):
    """The region list an atlas entry declares and where it comes from: ``(regions,
    "graphml")`` or ``(regions, "labels_path")``; ``(None, None)`` when it declares none."""
    if graphml_path:
        return regions_from_graphml(graphml_path), "graphml"
    if labels_path:
        return regions_from_table(labels_path), "labels_path"
    return None, None

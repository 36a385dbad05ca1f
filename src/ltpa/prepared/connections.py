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
    """Position of (lo, hi), lo <= hi, in the enumeration of np.triu_indices(n_regions).

    Parameters
    ----------
    lo : numpy.ndarray
        Integer positions of the first region in the region list (each <= its ``hi``).
    hi : numpy.ndarray
        Integer positions of the second region, same shape as ``lo``.
    n_regions : int
        Number of regions R in the list.

    Returns
    -------
    numpy.ndarray
        int64 pair positions, ``lo * R - lo * (lo - 1) // 2 + (hi - lo)``, in
        ``0 .. R * (R + 1) / 2 - 1`` for valid input (not checked).
    """
    lo = lo.astype(np.int64)
    return lo * n_regions - (lo * (lo - 1)) // 2 + (hi.astype(np.int64) - lo)


def connection_id(a: int, b: int, n_regions: int, start: int = 1) -> int:
    """The connection id of the regions at positions ``a`` and ``b`` of the region list.

    Parameters
    ----------
    a, b : int
        Positions (0-based) of the two regions in the sorted region list, in either order.
    n_regions : int
        Number of regions in the list.
    start : int, optional
        The id of the first pair (``connection_ids_start_at``); default 1.

    Returns
    -------
    int
        The position of ``(min(a, b), max(a, b))`` in ``np.triu_indices(n_regions)`` plus
        ``start``.
    """
    lo, hi = sorted((int(a), int(b)))
    return int(pair_index(np.array([lo]), np.array([hi]), n_regions)[0]) + int(start)


def decode_regions(ids, regions: np.ndarray, start: int):
    """(region_a, region_b) arrays (region ids from ``regions``) of connection ids.

    Id 0 (unlabeled; with ``start`` 0 also the first region's self-connection, left out as
    in the counts) and ids outside the numbering give -1.

    Parameters
    ----------
    ids : array_like
        Connection ids (any shape; cast to int64).
    regions : numpy.ndarray
        The sorted region list (region ids, int64) the ids are numbered over.
    start : int
        The id of the first pair (``connection_ids_start_at``).

    Returns
    -------
    region_a : numpy.ndarray
        Region id of the pair's first (lower-position) region, same shape as ``ids``; -1
        where the id is 0 or outside the numbering.
    region_b : numpy.ndarray
        Region id of the pair's second region, likewise.
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

    Parameters
    ----------
    ids : array_like
        Connection ids (cast to int64; flattened by the selection).
    n_regions : int
        Number of regions R in the region list.
    start : int, optional
        The id of the first pair (``connection_ids_start_at``); default 1.

    Returns
    -------
    a : numpy.ndarray
        int64 position (0-based) in the region list of each kept id's first region.
    b : numpy.ndarray
        int64 position of its second region (``a <= b``); one entry per kept id, in the
        order of ``ids``.

    Raises
    ------
    ValueError
        If an id is beyond the ``R * (R + 1) / 2`` pairs of the region list.
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

    Parameters
    ----------
    ids : array_like
        Connection ids (non-integer dtypes are cast to int64).
    n_regions : int
        Number of regions R in the region list.
    start : int, optional
        The id of the first pair (``connection_ids_start_at``); default 1.

    Returns
    -------
    numpy.ndarray
        int64 array of ``R * (R + 1) / 2`` counts, one per pair in ``np.triu_indices(R)``
        order. With ``start`` 0 the first pair's count is 0 (id 0 is unlabeled).

    Raises
    ------
    ValueError
        If an id is negative or beyond the pairs of the region list.
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
    """Symmetric (R, R) matrix of per-pair values given in ``np.triu_indices`` order.

    Parameters
    ----------
    counts : array_like
        ``R * (R + 1) / 2`` values, one per pair in ``np.triu_indices(R)`` order.
    n_regions : int
        Number of regions R.

    Returns
    -------
    numpy.ndarray
        (R, R) array of the dtype of ``counts``; entry (i, j) and (j, i) hold the value of
        pair (min, max).
    """
    counts = np.asarray(counts)
    m = np.zeros((n_regions, n_regions), dtype=counts.dtype)
    rows, cols = np.triu_indices(n_regions)
    m[rows, cols] = counts
    m[cols, rows] = counts
    return m


def connection_matrix(ids: np.ndarray, n_regions: int, start: int = 1) -> np.ndarray:
    """Symmetric (R, R) int64 streamline counts per region pair (diagonal: both ends alike).

    Parameters
    ----------
    ids : array_like
        Connection ids, one per streamline.
    n_regions : int
        Number of regions R in the region list.
    start : int, optional
        The id of the first pair (``connection_ids_start_at``); default 1.

    Returns
    -------
    numpy.ndarray
        (R, R) int64 counts (``pair_counts`` put into ``pairs_to_matrix``); unlabeled ids are
        not counted.

    Raises
    ------
    ValueError
        If an id is negative or beyond the pairs of the region list (``pair_counts``).
    """
    return pairs_to_matrix(pair_counts(ids, n_regions, start), n_regions)


def region_union(keys) -> np.ndarray:
    """Sorted int64 union of region lists (tuples of region ids).

    Parameters
    ----------
    keys : iterable of sequence of int
        Region lists.

    Returns
    -------
    numpy.ndarray
        int64 region ids in any of the lists, unique and sorted; empty when there are no
        lists.
    """
    keys = list(keys)
    if not keys:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate([np.asarray(k, dtype=np.int64) for k in keys]))


def pairs_on_union(regions, union: np.ndarray) -> np.ndarray:
    """Where each pair of ``regions`` (in ``np.triu_indices`` order) stands among the pairs
    of ``union`` (a sorted superset), as positions in ``union``'s ``np.triu_indices`` order.

    Parameters
    ----------
    regions : array_like
        A sorted region list (region ids) of R regions.
    union : numpy.ndarray
        A sorted int64 region list of U regions that contains every id of ``regions`` (not
        checked).

    Returns
    -------
    numpy.ndarray
        int64 array of ``R * (R + 1) / 2`` pair positions among the ``U * (U + 1) / 2`` pairs
        of ``union``, one per pair of ``regions`` in ``np.triu_indices(R)`` order.
    """
    pos = np.searchsorted(union, np.asarray(regions, dtype=np.int64))
    rows, cols = np.triu_indices(len(regions))
    a, b = pos[rows], pos[cols]  # a <= b: both lists are sorted
    return a * union.size - a * (a - 1) // 2 + (b - a)


def regions_reached(ids: np.ndarray, region_ids, start: int = 1) -> np.ndarray:
    """Region ids that at least one streamline's connection reaches.

    Parameters
    ----------
    ids : array_like
        Connection ids, one per streamline.
    region_ids : array_like
        The region list the ids are numbered over (sorted region ids).
    start : int, optional
        The id of the first pair (``connection_ids_start_at``); default 1.

    Returns
    -------
    numpy.ndarray
        int64 region ids that are an end of at least one labeled streamline's pair, in the
        order of ``region_ids`` (unique).

    Raises
    ------
    ValueError
        If an id is beyond the pairs of the region list (``decode_pairs``).
    """
    region_ids = np.asarray(region_ids, dtype=np.int64)
    a, b = decode_pairs(ids, region_ids.shape[0], start)
    return region_ids[np.unique(np.concatenate([a, b]))]


def region_list(graphml_path=None, labels_path=None):
    """The region list an atlas entry declares and where it comes from: ``(regions,
    "graphml")`` or ``(regions, "labels_path")``; ``(None, None)`` when it declares none.

    Parameters
    ----------
    graphml_path : str or os.PathLike, optional
        The atlas entry's graphml; used first when given.
    labels_path : str or os.PathLike, optional
        The atlas entry's label table; used when there is no graphml.

    Returns
    -------
    regions : numpy.ndarray or None
        int64 region ids, unique and sorted; None when neither path is given.
    source : str or None
        "graphml", "labels_path" or None: which field the list came from.

    Raises
    ------
    InputError
        If the graphml or the label table does not exist or is not a usable region list
        (``regions_from_graphml``, ``regions_from_table``).
    """
    if graphml_path:
        return regions_from_graphml(graphml_path), "graphml"
    if labels_path:
        return regions_from_table(labels_path), "labels_path"
    return None, None

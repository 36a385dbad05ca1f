"""Group differences of connection counts, per atlas: the QC table
``qc/group_differences/<atlas>.tsv`` and what the report's group-difference plot reads.

For every region pair, each scan's **share** of streamlines is its streamline count for
the pair over all its streamlines (the npy's length, unlabeled ones included), so scans
tracked with more or fewer streamlines compare. Per pair and comparison the table gives
**Welch's t** of the group's shares against the reference group's,

    t = (mean_g - mean_r) / sqrt(var_g / n_g + var_r / n_r)     (var: sample variance)

with the Welch-Satterthwaite degrees of freedom, a two-sided p from Student's t, and
Benjamini-Hochberg q-values over the comparison's tested pairs.

Why Welch's t and not a Poisson z of pooled counts: the Poisson z assumes that the only
difference between two scans of a group is the sampling of streamlines, one rate per
group. Real subjects differ well beyond that (anatomy, head size, tracking), so a Poisson
z grows with the number of streamlines and calls every well-sampled pair "different".
Welch's t measures each group's spread from its own scans, whatever its source, and does
not assume equal variances or equal group sizes; when the counts are Poisson (the demo)
it agrees with the Poisson z. Its costs: it needs two scans per group, and with few scans
its degrees of freedom are few (the p-values account for that, so pairs are ranked by p).

Left out: pairs with fewer than ``MIN_MEAN_COUNT`` streamlines per scan on average over
the two groups' scans (mostly zeros: the difference rests on a handful of streamlines and
t is far from Student's), and pairs whose shares do not vary in either group. Scans
without a ``scan_group`` and groups of fewer than two scans take no part. With more than
two groups, each group is compared with one reference (config ``reference_group``, by
default the first in sorted order): k - 1 comparisons rather than every pair of groups.

One pass over the npys (:class:`ltpa.qc.tables.AtlasCounts`): per group, running means and sums
of squared deviations (Welford's update, merged over region lists with Chan's formula), so
memory does not grow with the number of scans.
"""

from __future__ import annotations

import logging

import numpy as np

from ..prepared.connections import pairs_on_union, region_union
from .tables import AtlasCounts, write_tsv

log = logging.getLogger("ltpa")

MIN_MEAN_COUNT = 5.0  # streamlines per scan, on average over the two groups' scans
FDR = 0.05  # flag of pairs with a Benjamini-Hochberg q below it
COLUMNS = [
    "group", "reference", "rank", "region_a", "region_b", "name_a", "name_b", "connection_id",
    "n_scans_group", "n_scans_reference", "mean_count_group", "mean_count_reference",
    "mean_share_group", "mean_share_reference", "sd_share_group", "sd_share_reference",
    "ratio", "welch_t", "df", "p", "q", "flag",
]


def welch_t(mean_a, var_a, n_a, mean_b, var_b, n_b):
    """(t, degrees of freedom) of Welch's test of mean_a - mean_b, elementwise.

    ``var_*``: sample variances (ddof 1); ``n_*``: sample sizes (>= 2). Where both
    variances are 0, t and df are nan.

    Parameters
    ----------
    mean_a : array_like
        The first sample's means.
    var_a : array_like
        The first sample's variances (ddof 1).
    n_a : array_like
        The first sample's sizes (>= 2).
    mean_b : array_like
        The second sample's means.
    var_b : array_like
        The second sample's variances (ddof 1).
    n_b : array_like
        The second sample's sizes (>= 2).

    Returns
    -------
    t : numpy.ndarray
        Welch's t, float64, the arguments' broadcast shape; nan where both variances are 0.
    df : numpy.ndarray
        The Welch-Satterthwaite degrees of freedom, same shape; nan where t is.
    """
    va = np.asarray(var_a, dtype=np.float64) / n_a
    vb = np.asarray(var_b, dtype=np.float64) / n_b
    se2 = va + vb
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se2 > 0, (np.asarray(mean_a) - np.asarray(mean_b)) / np.sqrt(se2), np.nan)
        df = np.where(se2 > 0, se2 ** 2 / (va ** 2 / (np.asarray(n_a) - 1)
                                          + vb ** 2 / (np.asarray(n_b) - 1)), np.nan)
    return t, df


def two_sided_p(t, df):
    """P(|T| >= |t|) for Student's T with ``df`` degrees of freedom (scipy.special's CDF:
    the same values as scipy.stats.t, a quarter of its import time).

    Parameters
    ----------
    t : array_like
        The t statistics.
    df : array_like
        Their degrees of freedom (broadcast with ``t``).

    Returns
    -------
    numpy.ndarray
        The two-sided p-values, in [0, 1]; nan where ``t`` or ``df`` is.
    """
    from scipy.special import stdtr

    return 2.0 * stdtr(df, -np.abs(t))


def bh_q(p) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p) of ``p``, in its order.

    Parameters
    ----------
    p : array_like
        The p-values, 1-D.

    Returns
    -------
    numpy.ndarray
        float64 q-values, one per p and in the same order, at most 1 (empty for empty ``p``).
    """
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * p.size / np.arange(1, p.size + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty_like(q)
    out[order] = np.minimum(q, 1.0)
    return out


class _Moments:
    """Per region pair: number of scans, mean share, sum of squared deviations (Welford),
    summed counts."""

    def __init__(self, n_pairs):
        self.n = np.zeros(n_pairs, dtype=np.int64)
        self.mean = np.zeros(n_pairs)
        self.m2 = np.zeros(n_pairs)
        self.counts = np.zeros(n_pairs, dtype=np.int64)

    def add(self, counts, n_streamlines):
        share = counts / n_streamlines if n_streamlines else np.zeros(counts.shape)
        self.n += 1
        delta = share - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (share - self.mean)
        self.counts += counts

    def merge_into(self, other: "_Moments", where) -> None:
        """Add these pairs to ``other``'s pairs at positions ``where`` (Chan et al.)."""
        n_a, n_b = other.n[where], self.n
        n = n_a + n_b
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = self.mean - other.mean[where]
            other.mean[where] += np.where(n > 0, delta * n_b / n, 0.0)
            other.m2[where] += self.m2 + np.where(n > 0, delta ** 2 * n_a * n_b / n, 0.0)
        other.n[where] = n
        other.counts[where] += self.counts


def comparisons(group_sizes: dict, reference: str | None = None) -> list[tuple[str, str]]:
    """(group, reference) pairs: every group of 2+ scans against ``reference`` (config
    ``reference_group``), by default the first such group in sorted order; [] when fewer
    than two groups have 2+ scans, or the reference has fewer than 2. Scans without a group
    (``""`` or None) take no part.

    Parameters
    ----------
    group_sizes : dict
        Group -> its number of scans.
    reference : str, optional
        The reference group; None: the first group of 2+ scans in sorted order.

    Returns
    -------
    list of tuple of (str, str)
        (group, reference) for every other group of 2+ scans, in sorted order.
    """
    groups = sorted(g for g, n in group_sizes.items() if g and n >= 2)
    if reference is None:
        return [(g, groups[0]) for g in groups[1:]]
    if reference not in groups:
        return []
    return [(g, reference) for g in groups if g != reference]


def group_differences(items, *, min_mean_count=MIN_MEAN_COUNT, fdr=FDR, reference=None) -> dict:
    """The rows of the group-difference table of one atlas (``COLUMNS``), ranked per
    comparison by p (then |t|).

    ``items``: [(scan_id, scan_group, numpy_path)]. Returns {"rows", "comparisons":
    [(group, reference)], "tested": {comparison: number of pairs tested}, "n_pairs",
    "n_scans", "left_out": [scan_id], "regions": union of the region ids}.

    Parameters
    ----------
    items : iterable of tuple
        (scan_id, scan_group, numpy_path) per scan of the atlas; scans without a group, or
        whose npy has no usable sidecar, take no part.
    min_mean_count : float, optional
        Test only pairs with at least this many streamlines per scan on average over the
        two groups' scans (default ``MIN_MEAN_COUNT``).
    fdr : float, optional
        Flag pairs with a q below it ("q<fdr" in the flag column; default ``FDR``).
    reference : str, optional
        The reference group (config ``reference_group``); None: the first group of 2+
        scans in sorted order. A reference without 2+ scans: no comparison.

    Returns
    -------
    dict
        "rows": the table's rows (dicts over ``COLUMNS``; connection_id None unless every
        scan has the same region list and first connection id; ratio nan where the
        reference's mean share is 0); "comparisons": [(group, reference)]; "tested":
        comparison -> pairs tested; "n_pairs": the region pairs of the union (U (U + 1) / 2);
        "n_scans": group -> its number of scans; "left_out": scan ids left out; "regions":
        the sorted int64 union of region ids.
    """
    scans = AtlasCounts(items, purpose="the group comparison")
    per_key = {}  # (group, region list) -> _Moments over that list's pairs
    for _, group, key, counts, n_streamlines in scans:
        if not group:
            continue
        slot = per_key.get((group, key))
        if slot is None:
            slot = per_key[(group, key)] = _Moments(counts.shape[0])
        slot.add(counts, n_streamlines)
    union = region_union(key for _, key in per_key)
    n_pairs = union.size * (union.size + 1) // 2
    groups = {}
    for (group, key), moments in per_key.items():
        moments.merge_into(groups.setdefault(group, _Moments(n_pairs)), pairs_on_union(key, union))
    n_scans = {g: int(m.n.max()) if m.n.size else 0 for g, m in groups.items()}
    pairs = comparisons(n_scans, reference)
    if not pairs:
        ref = f"reference group {reference!r}, " if reference is not None else ""
        log.warning("fewer than two groups with 2 or more scans (%s%s): no group comparison",
                    ref, ", ".join(f"{g or '(no group)'}: {n}" for g, n in n_scans.items())
                    or "none")
    names = scans.names(union)
    rows_of, cols_of = np.triu_indices(union.size)
    one_list = len({key for _, key in per_key}) == 1 and len(scans.starts) == 1
    start = next(iter(scans.starts)) if one_list else None
    rows, tested = [], {}
    for group, ref in pairs:
        g, r = groups[group], groups[ref]
        ok = (g.n >= 2) & (r.n >= 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_count_g = g.counts / g.n
            mean_count_r = r.counts / r.n
            ok &= (g.counts + r.counts) / (g.n + r.n) >= min_mean_count
            var_g, var_r = g.m2 / (g.n - 1), r.m2 / (r.n - 1)
        t, df = welch_t(g.mean, var_g, g.n, r.mean, var_r, r.n)
        ok &= np.isfinite(t)
        idx = np.flatnonzero(ok)
        p = two_sided_p(t[idx], df[idx])
        q = bh_q(p)
        order = np.lexsort((-np.abs(t[idx]), p))
        tested[(group, ref)] = int(idx.size)
        log.info("%s vs %s (%d and %d scans): %d of %d pairs tested (%g+ streamlines per scan), "
                 "%d with q < %g", group, ref, n_scans[group], n_scans[ref], idx.size, n_pairs,
                 min_mean_count, int((q < fdr).sum()), fdr)
        for rank, k in enumerate(order, start=1):
            i = int(idx[k])
            a, b = int(union[rows_of[i]]), int(union[cols_of[i]])
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = g.mean[i] / r.mean[i] if r.mean[i] > 0 else float("nan")
            rows.append({
                "group": group, "reference": ref, "rank": rank, "region_a": a, "region_b": b,
                "name_a": names.get(a, str(a)), "name_b": names.get(b, str(b)),
                "connection_id": None if start is None else i + start,
                "n_scans_group": int(g.n[i]), "n_scans_reference": int(r.n[i]),
                "mean_count_group": float(mean_count_g[i]),
                "mean_count_reference": float(mean_count_r[i]),
                "mean_share_group": float(g.mean[i]), "mean_share_reference": float(r.mean[i]),
                "sd_share_group": float(np.sqrt(var_g[i])),
                "sd_share_reference": float(np.sqrt(var_r[i])),
                "ratio": float(ratio), "welch_t": float(t[i]), "df": float(df[i]),
                "p": float(p[k]), "q": float(q[k]), "flag": f"q<{fdr:g}" if q[k] < fdr else "",
            })
    return {"rows": rows, "comparisons": pairs, "tested": tested, "n_pairs": n_pairs,
            "n_scans": n_scans, "left_out": scans.left_out, "regions": union}


def write_group_differences(items, out_tsv, **kwargs) -> dict:
    """Write :func:`group_differences` of one atlas's npys as a TSV (``COLUMNS``).

    Parameters
    ----------
    items : iterable of tuple
        (scan_id, scan_group, numpy_path) per scan of the atlas.
    out_tsv : str or os.PathLike
        The table to write (``qc/group_differences/<atlas>.tsv``); written with only its
        header when there is no comparison.
    **kwargs
        ``min_mean_count``, ``fdr`` and ``reference``, passed to :func:`group_differences`.

    Returns
    -------
    dict
        :func:`group_differences`'s result.
    """
    result = group_differences(items, **kwargs)
    write_tsv(out_tsv, result["rows"], COLUMNS)
    log.info("wrote %s: %d rows, %d comparisons", out_tsv, len(result["rows"]),
             len(result["comparisons"]))
    return result

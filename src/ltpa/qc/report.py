"""Plots of the study's QC for the Snakemake report (matplotlib, no display needed)."""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from ..errors import LtpaError
from ..prepared.connections import pairs_on_union, pairs_to_matrix, region_union
from ..study import sidecar
from .tables import (
    AtlasCounts,
    number_or_none,
    read_length_histogram,
    read_tsv,
    unlabeled_outliers,
)

log = logging.getLogger("ltpa")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _group_colors(groups):
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return {g: cmap(i % 10) for i, g in enumerate(OrderedDict.fromkeys(groups))}


def _group_label(group) -> str:
    return group if group else "(no group)"


def _save(fig, out_png, dpi=100) -> None:
    plt = _plt()
    fig.savefig(out_png, dpi=dpi, bbox_inches="tight")  # no label cut at the edges
    plt.close(fig)
    log.info("wrote %s", out_png)


# ---------------------------------------------------------------- share unlabeled

MAX_NAMED_OUTLIERS = 6  # per group and atlas on the plot; qc/summary.tsv lists every one
MAX_STRIP_POINTS = 150  # per group and atlas: more scans are shown by a rank-spaced subsample


def _rank_spaced(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of at most ``k`` of ``values``, evenly spaced in rank (keeps min, max and
    the shape of the distribution)."""
    if values.size <= k:
        return np.arange(values.size)
    order = np.argsort(values, kind="stable")
    return np.unique(order[np.linspace(0, values.size - 1, k).round().astype(np.int64)])


def _spread(ys, gap, hi):
    """``ys`` (sorted) moved apart to at least ``gap``, and down where they pass ``hi``."""
    out = list(ys)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + gap)
    over = out[-1] - hi if out else 0
    if over > 0:
        out = [y - over for y in out]
        for i in range(len(out) - 2, -1, -1):
            out[i] = min(out[i], out[i + 1] - gap)
    return out


def share_unlabeled_figure(rows):
    """(figure, info) of the share unlabeled per group, one panel per atlas.

    ``rows``: the study summary's rows. Per group a box (quartiles, whiskers at 1.5 IQR)
    and a strip of the scans (at most ``MAX_STRIP_POINTS`` per group, evenly spaced in
    rank, plus every outlier); the outliers (``ltpa.qc.tables.unlabeled_outliers``) are named,
    most extreme first, up to ``MAX_NAMED_OUTLIERS`` per group with "+N more".
    ``info``: {"named": {(atlas, group): [scan_id]}, "more": {(atlas, group): N},
    "shown": {(atlas, group): points drawn}, "outliers": {(atlas, group): [scan_id]}}.

    Parameters
    ----------
    rows : list of dict
        The study summary's rows (``qc/summary.tsv`` as read by ``ltpa.qc.tables.read_tsv``);
        rows without an atlas or a share_unlabeled are left out.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure, one panel per atlas (a single empty panel "no atlas" without rows).
    info : dict
        What was drawn: "named", "more", "shown" and "outliers", each keyed by
        (atlas, group) as above; groups without scans of an atlas have no key.
    """
    plt = _plt()
    rows = [r for r in rows
            if r.get("atlas") and number_or_none(r.get("share_unlabeled")) is not None]
    flags = unlabeled_outliers(rows)
    atlases = list(OrderedDict.fromkeys(r["atlas"] for r in rows)) or [""]
    groups = list(OrderedDict.fromkeys(r.get("scan_group") or "" for r in rows))
    colors = _group_colors(groups)
    cells = {}
    for row, flag in zip(rows, flags):
        cells.setdefault((row["atlas"], row.get("scan_group") or ""), []).append(
            (row["scan_id"], float(row["share_unlabeled"]), flag))
    info = {"named": {}, "more": {}, "shown": {}, "outliers": {}}
    fig, axes = plt.subplots(len(atlases), 1, squeeze=False,
                             figsize=(max(6.5, 2.2 * len(groups) + 2.5), 3.6 * len(atlases) + 0.6))
    jitter = np.random.default_rng(0)
    for ax, atlas in zip(axes[:, 0], atlases):
        ticks, pending = [], []
        for x, g in enumerate(groups):
            cell = cells.get((atlas, g), [])
            ticks.append(f"{_group_label(g)}\n{len(cell)} scan{'' if len(cell) == 1 else 's'}")
            if not cell:
                continue
            values = np.array([v for _, v, _ in cell])
            out = np.array([f != "" for _, _, f in cell])
            ax.boxplot(values, positions=[x], widths=0.5, whis=1.5, showfliers=False,
                       patch_artist=True, medianprops={"color": "black"},
                       boxprops={"facecolor": colors[g], "alpha": 0.3})
            inside = np.flatnonzero(~out)
            pick = inside[_rank_spaced(values[inside], MAX_STRIP_POINTS)]
            ax.scatter(x + jitter.uniform(-0.18, 0.18, pick.size), values[pick], s=9,
                       color=colors[g], alpha=0.7, linewidths=0, zorder=3)
            far = np.flatnonzero(out)
            ax.scatter(np.full(far.size, x), values[far], s=22, color=colors[g],
                       edgecolors="black", linewidths=0.8, zorder=4)
            median = float(np.median(values))
            far = far[np.argsort(-np.abs(values[far] - median), kind="stable")]
            named = far[:MAX_NAMED_OUTLIERS]
            key = (atlas, g)
            info["outliers"][key] = [cell[i][0] for i in far]
            info["named"][key] = [cell[i][0] for i in named]
            info["more"][key] = int(far.size - named.size)
            info["shown"][key] = int(pick.size + far.size)
            pending.append((x, [(cell[i][0], values[i]) for i in named], far.size - named.size))
        ax.set_xticks(range(len(groups)), ticks)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel("share unlabeled (id 0)")
        ax.set_title(f"atlas {atlas}" if atlas else "no atlas")
        lo, hi = ax.get_ylim()
        gap = 0.075 * (hi - lo)
        for x, named, more in pending:
            named = sorted(named, key=lambda t: t[1])
            texts = [s for s, _ in named] + ([f"+{more} more"] if more else [])
            ys = [v for _, v in named] + ([named[-1][1] if named else lo] if more else [])
            for i, (text, y) in enumerate(zip(texts, _spread(ys, gap, hi))):
                point = (x, named[i][1]) if i < len(named) else None
                ax.annotate(text, xy=point or (x + 0.3, y), xytext=(x + 0.3, y), fontsize=7,
                            va="center", annotation_clip=False,
                            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4"}
                            if point else None)
    fig.text(0.01, 0.005, "box: quartiles, whiskers to 1.5 IQR; scans beyond them are outliers "
             f"of their group (named, most extreme first, up to {MAX_NAMED_OUTLIERS} per group; "
             "all in qc/summary.tsv, column share_unlabeled_outlier); dots: up to "
             f"{MAX_STRIP_POINTS} scans per group, evenly spaced in rank", fontsize=7,
             va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig, info


def plot_share_unlabeled(summary_tsv, out_png) -> None:
    """Share of streamlines with connection id 0 per group (see :func:`share_unlabeled_figure`).

    Parameters
    ----------
    summary_tsv : str or os.PathLike
        The study summary (``qc/summary.tsv``).
    out_png : str or os.PathLike
        The PNG to write (100 dpi).
    """
    fig, info = share_unlabeled_figure(read_tsv(summary_tsv))
    n = sum(len(v) for v in info["outliers"].values())
    log.info("share unlabeled: %d outlier rows (%d named on the plot)", n,
             sum(len(v) for v in info["named"].values()))
    _save(fig, out_png)


# ---------------------------------------------------------------- streamline lengths

def length_summary(items) -> dict:
    """Per group, the spread over its scans of each scan's length distribution.

    ``items``: [(scan_id, scan_group, lengths_tsv)] (histograms written by ``ltpa.qc.tables``).
    Each scan's histogram becomes its share of streamlines per bin; per group and bin,
    the 10th, 50th and 90th percentiles over the group's scans and the pooled share
    (all the group's streamlines together). Returns {"width", "edges", "groups":
    {group: {"n_scans", "p10", "median", "p90", "pooled"}}, "without": [scan_id]}
    (``without``: no histogram, e.g. the trk was not on disk).

    Parameters
    ----------
    items : iterable of tuple
        (scan_id, scan_group, lengths_tsv) per scan; a histogram whose bin width differs
        from the first one read is left out with a warning (its scan in ``without``).

    Returns
    -------
    dict
        "width": the bin width in mm (0.0 when no scan has a histogram); "edges": the
        bins' edges in mm, float array of n_bins + 1 from 0; "groups": group -> {"n_scans":
        int, and "p10", "median", "p90", "pooled": float arrays of n_bins shares}, in the
        order groups first appear; "without": the scan ids left out.

    Raises
    ------
    ValueError
        If a histogram's bins are not of one width (``ltpa.qc.tables.read_length_histogram``).
    OSError
        If a histogram file cannot be read.
    """
    per_group = OrderedDict()
    width, without = None, []
    for scan_id, group, path in items:
        hist = read_length_histogram(path)
        if hist is None or not hist[1].sum():
            without.append(scan_id)
            continue
        w, counts = hist
        if width is None:
            width = w
        elif not np.isclose(w, width):
            log.warning("%s: length bins of %g mm, not %g mm; left out", path, w, width)
            without.append(scan_id)
            continue
        per_group.setdefault(group, []).append(counts)
    n_bins = max((c.size for hs in per_group.values() for c in hs), default=0)
    groups = OrderedDict()
    for group, hists in per_group.items():
        counts = np.zeros((len(hists), n_bins), dtype=np.int64)
        for i, c in enumerate(hists):
            counts[i, :c.size] = c
        shares = counts / counts.sum(axis=1, keepdims=True)
        p10, median, p90 = np.percentile(shares, [10, 50, 90], axis=0)
        total = counts.sum(axis=0)
        groups[group] = {"n_scans": len(hists), "p10": p10, "median": median, "p90": p90,
                         "pooled": total / total.sum()}
    width = width or 0.0
    return {"width": width, "edges": np.arange(n_bins + 1) * width, "groups": groups,
            "without": without}


def lengths_figure(items):
    """(figure, :func:`length_summary`): per group the median share per length bin over its
    scans, with the band from the 10th to the 90th percentile.

    The x axis ends a little past the length below which 99.5 % of all streamlines lie;
    without any histogram the panel says so.

    Parameters
    ----------
    items : iterable of tuple
        (scan_id, scan_group, lengths_tsv) per scan, as :func:`length_summary` takes.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure (one panel).
    summary : dict
        :func:`length_summary` of ``items``.
    """
    plt = _plt()
    summary = length_summary(items)
    groups, edges = summary["groups"], summary["edges"]
    colors = _group_colors(groups)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for g, s in groups.items():
        ax.stairs(s["p90"], edges, baseline=s["p10"], fill=True, color=colors[g], alpha=0.25,
                  linewidth=0)
        ax.stairs(s["median"], edges, color=colors[g], linewidth=1.6,
                  label=f"{_group_label(g)} ({s['n_scans']} scans)")
    if groups:
        pooled = np.sum([s["pooled"] * s["n_scans"] for s in groups.values()], axis=0)
        reach = np.searchsorted(np.cumsum(pooled) / pooled.sum(), 0.995) + 1  # the long tail off
        ax.set_xlim(0, edges[min(reach + 2, edges.size - 1)])
        ax.legend(title="scan_group: median, 10-90% of scans", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no streamline lengths (no trk on disk)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("streamline length (mm)")
    ax.set_ylabel(f"share of the scan's streamlines per {summary['width']:g} mm")
    note = f"; {len(summary['without'])} scans without lengths" if summary["without"] else ""
    ax.set_title(f"streamline length per group{note}", fontsize=10)
    fig.tight_layout()
    return fig, summary


def plot_lengths(items, out_png) -> None:
    """Streamline length per group (see :func:`lengths_figure`).

    ``items``: [(scan_id, scan_group, lengths_tsv)] (bins written by ltpa.qc.tables).

    Parameters
    ----------
    items : iterable of tuple
        (scan_id, scan_group, lengths_tsv) per scan.
    out_png : str or os.PathLike
        The PNG to write (100 dpi).
    """
    fig, summary = lengths_figure(items)
    if summary["without"]:
        log.info("%d scans without a length histogram: %s", len(summary["without"]),
                 ", ".join(summary["without"][:20]) + (" ..." if len(summary["without"]) > 20
                                                        else ""))
    _save(fig, out_png)


# ---------------------------------------------------------------- connectivity

MAX_TICK_LABELS = 45  # per axis of a connectivity panel: every k-th region is named beyond


def _region_axis(ids, names):
    """(tick positions, tick labels, axis label, font size) of a matrix over region ``ids``:
    named from ``names`` (ids where it names none), every k-th region when there are more
    than ``MAX_TICK_LABELS``."""
    import math

    step = max(1, math.ceil(len(ids) / MAX_TICK_LABELS))
    ticks = list(range(0, len(ids), step))
    labels = [names.get(int(ids[i]), str(int(ids[i]))) for i in ticks]
    named = any(int(r) in names for r in ids)
    nth = f"{step}{ {2: 'nd', 3: 'rd'}.get(step, 'th')}"
    axis = ("region" if named else "region id") + (f" (every {nth} named)" if step > 1 else "")
    return ticks, labels, axis, 7 if len(ticks) <= 30 else 5


def connectivity_panels(items, report_scan) -> dict:
    """Connection counts of one atlas: the chosen scan's and each group's mean per scan.

    ``items``: [(scan_id, scan_group, numpy_path)]. The region lists come from the npys'
    sidecars (scans without one are left out); scans whose lists differ are placed on
    the union of the region ids. One pass over the npys (``ltpa.qc.tables.AtlasCounts``), summing
    per-pair counts per group, so memory does not grow with the number of scans. Returns
    {"panels": [(title, (U, U) matrix)], "regions": union of region ids, "names": {id:
    name}, "n_scans", "left_out": [scan_id]}.

    Parameters
    ----------
    items : iterable of tuple
        (scan_id, scan_group, numpy_path) per scan of the atlas.
    report_scan : str or None
        The scan shown alone in the first panel; None, or a scan not among those read: no
        such panel.

    Returns
    -------
    dict
        "panels": [(title, float64 (U, U) symmetric matrix of streamlines per region pair)],
        the chosen scan's counts first, then each group's mean per scan in the order
        groups first appear; "regions": the sorted int64 union of the U region ids;
        "names": {region id: name} from the region lists; "n_scans": the scans read;
        "left_out": the scan ids left out.
    """
    sums = OrderedDict()  # group -> {region list: [summed pair counts, n scans]}
    chosen, n_scans = None, 0
    scans = AtlasCounts(items)
    for scan_id, group, key, counts, _ in scans:
        slot = sums.setdefault(group, {}).setdefault(key, [np.zeros_like(counts), 0])
        slot[0] += counts
        slot[1] += 1
        n_scans += 1
        if scan_id == report_scan:
            chosen = (scan_id, group, key, counts)
    union = region_union(k for per_key in sums.values() for k in per_key)

    def on_union(key, counts):
        pairs = np.zeros(union.size * (union.size + 1) // 2, dtype=np.float64)
        pairs[pairs_on_union(key, union)] = counts
        return pairs_to_matrix(pairs, union.size)

    panels = []
    if chosen is not None:
        scan_id, group, key, counts = chosen
        panels.append((f"scan {scan_id} ({_group_label(group)})", on_union(key, counts)))
    for group, per_key in sums.items():
        n = sum(c for _, c in per_key.values())
        total = sum(on_union(k, s) for k, (s, _) in per_key.items())
        panels.append((f"group {_group_label(group)}: mean of {n} scan{'s' if n > 1 else ''}",
                       total / n))
    return {"panels": panels, "regions": union, "names": scans.names(union), "n_scans": n_scans,
            "left_out": scans.left_out}


def connectivity_figure(atlas, items, report_scan):
    """(figure, info): :func:`connectivity_panels` on one logarithmic colour scale.

    Only the regions some panel reaches are drawn; one ``LogNorm`` (from the smallest
    to the largest nonzero value of all panels) and one colorbar serve every panel;
    empty cells are blank. Axes are named from the graphml (ids where it names none),
    every k-th region when there are more than ``MAX_TICK_LABELS``. ``info`` adds
    "keep" (the drawn region ids), "ticks" (positions) and "labels" to the panels'.

    Parameters
    ----------
    atlas : str
        The atlas key, for the title.
    items : iterable of tuple
        (scan_id, scan_group, numpy_path) per scan of the atlas.
    report_scan : str or None
        The scan shown alone in the first panel (None: none).

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure: up to three panels per row, two rows of two for four panels.
    info : dict
        :func:`connectivity_panels`'s dict plus "keep" (int64 region ids drawn), "ticks"
        (tick positions), "labels" (tick labels) and "norm" (the shared
        ``matplotlib.colors.LogNorm``).
    """
    import math

    from matplotlib.colors import LogNorm

    plt = _plt()
    info = connectivity_panels(items, report_scan)
    panels, union, names = info["panels"], info["regions"], info["names"]
    reached = np.zeros(union.size, dtype=bool)
    for _, mat in panels:
        reached |= mat.sum(axis=0) > 0
    keep = np.flatnonzero(reached)
    subs = [(title, mat[np.ix_(keep, keep)]) for title, mat in panels]
    positive = [s[s > 0] for _, s in subs]
    positive = np.concatenate(positive) if positive else np.zeros(0)
    lo, hi = (float(positive.min()), float(positive.max())) if positive.size else (1.0, 10.0)
    norm = LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 10)
    n = max(len(subs), 1)
    ncols = 2 if n == 4 else min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(5.0 * ncols + 2.0, 5.0 * nrows + 1.2), layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    ticks, labels, axis, size = _region_axis(union[keep], names)
    images = []
    for ax, (_, sub) in zip(axes.ravel(), subs if keep.size else []):
        images.append(ax.imshow(np.where(sub > 0, sub, np.nan), cmap=cmap, norm=norm,
                                interpolation="nearest"))
    for ax, (title, _) in zip(axes.ravel(), subs):
        ax.set_title(title, fontsize=10)
    for ax in axes.ravel()[len(subs):]:
        ax.set_axis_off()
    used = max(len(subs), 1)
    for i, ax in enumerate(axes.ravel()[:used]):  # names left of the first column, under the last
        left, bottom = i % ncols == 0, i + ncols >= used
        ax.set_xticks(ticks, labels if bottom else [], rotation=90, fontsize=size)
        ax.set_yticks(ticks, labels if left else [], fontsize=size)
        if bottom:
            ax.set_xlabel(axis)
        if left:
            ax.set_ylabel(axis)
    if images:
        fig.colorbar(images[0], ax=axes.ravel().tolist(), shrink=0.6,
                     label="streamlines (groups: mean per scan), log scale")
    if not subs or not keep.size:
        axes[0, 0].text(0.5, 0.5, "no labeled streamlines", ha="center", va="center",
                        transform=axes[0, 0].transAxes)
    out = f"; {len(info['left_out'])} left out (see the log)" if info["left_out"] else ""
    fig.suptitle(f"connection counts, atlas {atlas}: the {keep.size} of {union.size} regions "
                 f"that streamlines reach, {info['n_scans']} scans{out}")
    info.update(keep=union[keep], ticks=ticks, labels=labels, norm=norm)
    return fig, info


def plot_connectivity(atlas, items, report_scan, out_png) -> None:
    """Connection-count matrices of one atlas: the chosen scan and each group's mean (see
    :func:`connectivity_figure`). ``items``: [(scan_id, scan_group, numpy_path)].

    Parameters
    ----------
    atlas : str
        The atlas key, for the title.
    items : iterable of tuple
        (scan_id, scan_group, numpy_path) per scan of the atlas.
    report_scan : str or None
        The scan shown alone in the first panel (None: none).
    out_png : str or os.PathLike
        The PNG to write (110 dpi).
    """
    fig, info = connectivity_figure(atlas, items, report_scan)
    log.info("%s: %d panels from %d scans", out_png, len(info["panels"]), info["n_scans"])
    _save(fig, out_png, dpi=110)


# ---------------------------------------------------------------- group differences

MAX_RANKED = 15  # pairs named on the ranked plot of each comparison
MAX_MARKED = 3  # of them, outlined and numbered on the matrix
MIN_T_SCALE = 4.0  # the colour scale reaches at least |t| 4: noise alone stays pale


def group_differences_figure(atlas, rows):
    """(figure, info) of one atlas's group-difference table (``ltpa.qc.groupdiff``): per
    comparison, the matrix of Welch's t over the regions of the tested pairs (diverging
    colours, limits symmetric and shared by every comparison; untested pairs blank) with
    the ``MAX_MARKED`` top-ranked pairs outlined and numbered, and the ``MAX_RANKED``
    top-ranked pairs (by p) as a dot plot of t named "name_a -- name_b", with the ratio of
    mean shares beside it; filled dots have a q below the table's FDR. ``rows``: the table's rows
    (strings). ``info``: {"comparisons": [(group, reference)], "ranked": {comparison:
    [(label, t, ratio, flag)]}, "regions": {comparison: region ids}, "limit": |t| of the
    colour scale}.

    Parameters
    ----------
    atlas : str
        The atlas key, for the title.
    rows : list of dict
        The rows of ``qc/group_differences/<atlas>.tsv`` as strings (``read_tsv``): group,
        reference, rank, region_a, region_b, name_a, name_b, welch_t, ratio and flag are
        read. No rows: one blank panel that says there is no comparison.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure: one row of two panels (matrix, ranked pairs) per comparison.
    info : dict
        "comparisons": the (group, reference) pairs in table order; "ranked": comparison
        -> [("name_a -- name_b", t, ratio or None, flag)] of the pairs drawn; "regions":
        comparison -> sorted int region ids of its matrix; "limit": the colour scale's
        |t| (at least ``MIN_T_SCALE``).
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    plt = _plt()
    comps = OrderedDict()
    for r in rows:
        comps.setdefault((r["group"], r["reference"]), []).append(r)
    t_all = [abs(float(r["welch_t"])) for r in rows]
    limit = max([MIN_T_SCALE] + t_all)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.93")
    n = max(len(comps), 1)
    fig, axes = plt.subplots(n, 2, squeeze=False, figsize=(13.0, 6.4 * n + 0.5),
                             gridspec_kw={"width_ratios": [1.15, 1]}, layout="constrained")
    info = {"comparisons": list(comps), "ranked": {}, "regions": {}, "limit": limit}
    for (ax_m, ax_r), (comp, crows) in zip(axes, comps.items()):
        group, ref = comp
        crows = sorted(crows, key=lambda r: int(r["rank"]))
        a = np.array([int(r["region_a"]) for r in crows])
        b = np.array([int(r["region_b"]) for r in crows])
        t = np.array([float(r["welch_t"]) for r in crows])
        ids = np.unique(np.concatenate([a, b]))
        names = {int(r["region_a"]): r["name_a"] for r in crows}
        names.update({int(r["region_b"]): r["name_b"] for r in crows})
        pa, pb = np.searchsorted(ids, a), np.searchsorted(ids, b)
        mat = np.full((ids.size, ids.size), np.nan)
        mat[pa, pb] = t
        mat[pb, pa] = t
        image = ax_m.imshow(mat, cmap=cmap, norm=norm, interpolation="nearest")
        for k in range(min(MAX_MARKED, len(crows))):
            for x, y in {(pa[k], pb[k]), (pb[k], pa[k])}:
                ax_m.add_patch(Rectangle((x - 1.5, y - 1.5), 3, 3, fill=False, lw=1.1,
                                         edgecolor="black"))
            ax_m.annotate(str(k + 1), (max(pa[k], pb[k]) + 1.6, min(pa[k], pb[k]) - 1.6),
                          fontsize=8, fontweight="bold", ha="left", va="bottom")
        ticks, labels, axis, size = _region_axis(ids, names)
        ax_m.set_xticks(ticks, labels, rotation=90, fontsize=size)
        ax_m.set_yticks(ticks, labels, fontsize=size)
        ax_m.set_xlabel(axis)
        ax_m.set_ylabel(axis)
        ax_m.set_title(f"{group} vs {ref}: {len(crows)} pairs tested", fontsize=11)
        fig.colorbar(image, ax=ax_m, shrink=0.7, pad=0.02).set_label(
            f"Welch's t ({group} - {ref})", fontsize=10)
        top = crows[:MAX_RANKED]
        y = np.arange(len(top))
        tt = t[:len(top)]
        flagged = np.array([bool(r["flag"]) for r in top], dtype=bool)
        colors = cmap(norm(tt)).reshape(-1, 4)
        ax_r.hlines(y, 0, tt, color=colors, lw=2)
        ax_r.scatter(tt[flagged], y[flagged], s=46, c=colors[flagged], edgecolors="black",
                     zorder=3)
        ax_r.scatter(tt[~flagged], y[~flagged], s=40, facecolors="white",
                     edgecolors=colors[~flagged], linewidths=1.4, zorder=3)
        labels_r = [f"{k + 1}. {r['name_a']} -- {r['name_b']}" for k, r in enumerate(top)]
        ax_r.set_yticks(y, labels_r, fontsize=10)
        ax_r.set_ylim(len(top) - 0.5, -0.5)
        ax_r.axvline(0, color="0.3", lw=0.8)
        span = max(float(np.abs(tt).max()) if tt.size else 1.0, 1.0) * 1.15
        ax_r.set_xlim(-span, span)
        column = ax_r.get_yaxis_transform()  # x: axes fraction, y: data
        ax_r.text(1.03, len(top) - 0.3, f"ratio\n{group} /\n{ref}", transform=column,
                  ha="left", va="top", fontsize=9)
        for yi, r in zip(y, top):
            ratio = number_or_none(r["ratio"])
            ax_r.text(1.03, yi, f"{ratio:.2f}" if ratio is not None else "", transform=column,
                      ha="left", va="center", fontsize=10)
        ax_r.set_xlabel(f"Welch's t ({group} - {ref})")
        fdr = next((r["flag"].split("<", 1)[1] for r in crows if r["flag"]), None)
        ax_r.set_title(f"top {len(top)} pairs by p"
                       + (f"; filled: q < {fdr} (Benjamini-Hochberg)" if fdr else ""), fontsize=10)
        ax_r.grid(axis="x", color="0.9")
        info["ranked"][comp] = [(lab.split(". ", 1)[1], float(v), number_or_none(r["ratio"]),
                                 r["flag"]) for lab, v, r in zip(labels_r, tt, top)]
        info["regions"][comp] = ids
    if not comps:
        for ax in axes[0]:
            ax.set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no group comparison: fewer than two groups of 2+ scans, or "
                        "no pair with enough streamlines", ha="center", va="center",
                        transform=axes[0, 0].transAxes)
    fig.suptitle(f"group differences, atlas {atlas}: Welch's t of each scan's share of "
                 "streamlines per region pair", fontsize=13)
    return fig, info


def plot_group_differences(atlas, table_tsv, out_png) -> None:
    """Group differences of one atlas (see :func:`group_differences_figure`) from its table
    ``qc/group_differences/<atlas>.tsv``.

    Parameters
    ----------
    atlas : str
        The atlas key, for the title.
    table_tsv : str or os.PathLike
        The atlas's group-difference table (``ltpa.qc.groupdiff.write_group_differences``).
    out_png : str or os.PathLike
        The PNG to write (100 dpi).
    """
    fig, info = group_differences_figure(atlas, read_tsv(table_tsv))
    for comp, ranked in info["ranked"].items():
        if ranked:
            log.info("%s vs %s: top pair %s (t %.2f)", *comp, ranked[0][0], ranked[0][1])
    _save(fig, out_png, dpi=100)


# ---------------------------------------------------------------- study maps

MOSAIC_SLICES = 12  # axial slices of a map's mosaic
MOSAIC_COLUMNS = 6
MAX_MOSAIC_MARKS = 10  # top centers numbered on the mosaic (the table has the same ranks)


def mosaic_slices(volume: np.ndarray, n: int = MOSAIC_SLICES) -> np.ndarray:
    """Up to ``n`` axial (k) slices, evenly spaced over the slices that hold a value.

    Parameters
    ----------
    volume : numpy.ndarray
        A 3-D map, NaN where it holds no value.
    n : int, optional
        The most slices to pick (default ``MOSAIC_SLICES``).

    Returns
    -------
    numpy.ndarray
        Sorted, distinct int64 indices along the third axis; the middle slice alone when
        no value is finite.
    """
    has = np.flatnonzero(np.isfinite(volume).any(axis=(0, 1)))
    if has.size == 0:
        return np.array([volume.shape[2] // 2])
    return np.unique(np.linspace(has[0], has[-1], min(n, has.size)).round().astype(np.int64))


def map_mosaic_figure(volume, affine, body: dict, extra: dict | None = None):
    """(figure, info) of a study map over the key grid: ``MOSAIC_SLICES`` axial slices (i
    across, j up, as stored; cropped to the centers that hold a value), NaN (no center) in
    light grey; a group difference in diverging colours symmetric about 0 with the centers
    of p_fwe <= 0.05 marked; every other statistic from its minimum to its maximum. The top
    centers of the sidecar's table (``body["top_centers"]``) are numbered on their slices.
    ``info``: {"slices", "limits", "marked": [(rank, ijk)]}.

    Parameters
    ----------
    volume : numpy.ndarray
        The map, 3-D, NaN where no center holds a value.
    affine : numpy.ndarray or None
        The map's 4x4 voxel-to-mm affine, for each slice's z in mm (None: k only).
    body : dict
        The map's sidecar: "stat", "name", "radius", "n_centers", "params" and
        "top_centers" (each with "ijk") are read.
    extra : dict, optional
        Further maps by name, each shaped like ``volume``; the centers where a "p_fwe" one is
        at most 0.05 are marked with squares.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The mosaic (``MOSAIC_COLUMNS`` slices per row).
    info : dict
        "slices": the k indices drawn (list of int); "limits": (low, high) of the colour
        scale; "marked": [(rank, (i, j, k))] of the top centers numbered.
    """
    plt = _plt()
    from matplotlib.colors import Normalize, TwoSlopeNorm

    stat = body.get("stat", "")
    finite = volume[np.isfinite(volume)]
    if stat == "group_difference":
        lim = max(float(np.abs(finite).max()) if finite.size else 1.0, 1.0)
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.93")
        limits = (-lim, lim)
    else:
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 1.0
        norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)
        cmap = plt.get_cmap("viridis").with_extremes(bad="0.93")
        limits = (lo, hi)
    slices = mosaic_slices(volume)
    cols = min(MOSAIC_COLUMNS, slices.size)
    rows = int(np.ceil(slices.size / cols))
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(2.3 * cols + 1.2, 2.6 * rows
                                                                 + 0.8), layout="constrained")
    p_fwe = (extra or {}).get("p_fwe")
    top = body.get("top_centers") or []
    marked = []
    image = None
    # crop every slice to the box of the centers that hold a value (a margin of 2 voxels)
    box = [np.flatnonzero(np.isfinite(volume).any(axis=axes_))
           for axes_ in ((1, 2), (0, 2))]
    (i0, i1), (j0, j1) = [(max(int(b[0]) - 2, 0), min(int(b[-1]) + 3, n)) if b.size
                          else (0, n) for b, n in zip(box, volume.shape[:2])]
    for ax, k in zip(axes.flat, slices):
        image = ax.imshow(volume[:, :, k].T, origin="lower", cmap=cmap, norm=norm,
                          interpolation="nearest")
        ax.set_xlim(i0 - 0.5, i1 - 0.5)
        ax.set_ylim(j0 - 0.5, j1 - 0.5)
        if p_fwe is not None:
            si, sj = np.nonzero(np.nan_to_num(p_fwe[:, :, k], nan=1.0) <= 0.05)
            ax.plot(si, sj, "s", ms=3, mfc="none", mec="black", mew=0.8)
        for rank, row in enumerate(top[:MAX_MOSAIC_MARKS], start=1):
            i, j, kk = row["ijk"]
            if kk == k:
                ax.plot(i, j, "o", ms=7, mfc="none", mec="magenta", mew=1.3)
                ax.annotate(str(rank), (i, j), xytext=(4, 4), textcoords="offset points",
                            fontsize=8, color="magenta", fontweight="bold")
                marked.append((rank, (i, j, kk)))
        z = float(affine[2, :3] @ np.array([0.0, 0.0, k]) + affine[2, 3]) \
            if affine is not None else None
        ax.set_title(f"k {k}" + (f" (z {z:.0f} mm)" if z is not None else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[slices.size:]:
        ax.set_axis_off()
    params = (body.get("params") or {}).get("map", {})
    groups = params.get("groups") or ["A", "B"]
    label = {"group_difference": f"Welch's t ({groups[1]} - {groups[0]})", "coverage": "scans",
             "streamlines": "streamlines per scan", "connections": "connections per scan",
             "similarity": "mean cosine similarity"}.get(stat, stat)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, pad=0.01).set_label(label)
    what = f"map {body.get('name', '')!r}: {stat}, radius {body.get('radius')}"
    if stat == "group_difference":
        what += (f", connection {params.get('connection')}, groups "
                 f"{' -> '.join(map(str, params.get('groups') or []))}")
        if p_fwe is not None:
            what += "; squares: p_fwe <= 0.05"
    fig.suptitle(what + f"; {body.get('n_centers', 0):,} centers", fontsize=11)
    return fig, {"slices": slices.tolist(), "limits": limits, "marked": marked}


def plot_map(map_path, out_png) -> None:
    """A study map's mosaic (see :func:`map_mosaic_figure`) from the NIfTI and its sidecar.

    The extra maps the sidecar names (``extra_map_files``, e.g. p_fwe) are read from the
    map's folder.

    Parameters
    ----------
    map_path : str or os.PathLike
        The study map (NIfTI) with its sidecar.
    out_png : str or os.PathLike
        The PNG to write (90 dpi).

    Raises
    ------
    LtpaError
        If the map has no sidecar that can be read, or its sidecar is not of kind
        "study_map".
    """
    import os

    import nibabel as nib

    body, why = sidecar.read(map_path)
    if body is None or body.get("kind") != "study_map":
        raise LtpaError(f"map {str(map_path)!r}: {why or 'its sidecar is not a study map'}")
    img = nib.load(str(map_path))
    volume = np.asarray(img.dataobj, dtype=np.float64)
    folder = os.path.dirname(os.path.abspath(map_path))
    extra = {name: np.asarray(nib.load(os.path.join(folder, f)).dataobj, dtype=np.float64)
             for name, f in (body.get("extra_map_files") or {}).items()}
    fig, info = map_mosaic_figure(volume, img.affine, body, extra)
    log.info("map %s: slices %s, colour limits %.4g..%.4g", body.get("name"), info["slices"],
             *info["limits"])
    _save(fig, out_png, dpi=90)

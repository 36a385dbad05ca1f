"""Plots of the study's QC for the Snakemake report (matplotlib, no display needed)."""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from .sidecar import read as _read_sidecar
from .qc import (number_or_none, pair_counts, pairs_to_matrix, read_length_histogram,
                 read_tsv, unlabeled_outliers)

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
    fig.savefig(out_png, dpi=dpi)
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
    rank, plus every outlier); the outliers (``ltpa.qc.unlabeled_outliers``) are named,
    most extreme first, up to ``MAX_NAMED_OUTLIERS`` per group with "+N more".
    ``info``: {"named": {(atlas, group): [scan_id]}, "more": {(atlas, group): N},
    "shown": {(atlas, group): points drawn}, "outliers": {(atlas, group): [scan_id]}}.
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
    """Share of streamlines with connection id 0 per group (see :func:`share_unlabeled_figure`)."""
    fig, info = share_unlabeled_figure(read_tsv(summary_tsv))
    n = sum(len(v) for v in info["outliers"].values())
    log.info("share unlabeled: %d outlier rows (%d named on the plot)", n,
             sum(len(v) for v in info["named"].values()))
    _save(fig, out_png)


# ---------------------------------------------------------------- streamline lengths

def length_summary(items) -> dict:
    """Per group, the spread over its scans of each scan's length distribution.

    ``items``: [(scan_id, scan_group, lengths_tsv)] (histograms written by ``ltpa.qc``).
    Each scan's histogram becomes its share of streamlines per bin; per group and bin,
    the 10th, 50th and 90th percentiles over the group's scans and the pooled share
    (all the group's streamlines together). Returns {"width", "edges", "groups":
    {group: {"n_scans", "p10", "median", "p90", "pooled"}}, "without": [scan_id]}
    (``without``: no histogram, e.g. the trk was not on disk).
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
    scans, with the band from the 10th to the 90th percentile."""
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

    ``items``: [(scan_id, scan_group, lengths_tsv)] (bins written by ltpa.qc).
    """
    fig, summary = lengths_figure(items)
    if summary["without"]:
        log.info("%d scans without a length histogram: %s", len(summary["without"]),
                 ", ".join(summary["without"][:20]) + (" ..." if len(summary["without"]) > 20
                                                        else ""))
    _save(fig, out_png)


# ---------------------------------------------------------------- connectivity

NAME_ATTRIBUTES = ("dn_name", "name", "label", "dn_fsname")  # dn_*: the Connectome Mapper's
MAX_TICK_LABELS = 45  # per axis of a connectivity panel: every k-th region is named beyond


def region_names(graphml) -> dict:
    """{region id: name} from a graphml's node attribute (the first of ``NAME_ATTRIBUTES``
    that some node has), read by networkx as ``ltpa.regions`` reads the ids; {} when it
    names none or cannot be read (the plot then shows ids)."""
    import xml.etree.ElementTree as ET

    import networkx as nx

    try:
        nodes = list(nx.read_graphml(str(graphml)).nodes(data=True))
    except (nx.NetworkXError, ET.ParseError, OSError, KeyError, ValueError, LookupError,
            TypeError, IndexError, AttributeError, RecursionError) as exc:
        log.warning("%s: region names not read (%s); the plot shows region ids", graphml, exc)
        return {}
    for attr in NAME_ATTRIBUTES:
        names = {}
        for node, data in nodes:
            name = str(data.get(attr, "")).strip()
            try:
                if name:
                    names[int(str(node).strip())] = name
            except ValueError:
                pass
        if names:
            return names
    return {}


def _graphml_of(side, npy):
    """The graphml a labeling read (from its sidecar), or None."""
    from pathlib import Path

    rec = (side.get("inputs") or {}).get("graphml_path")
    if not rec:
        return None
    path = Path(rec["path"])
    if not path.exists() and rec.get("relpath"):
        path = Path(npy).parent / rec["relpath"]
    return path if path.exists() else None


def connectivity_panels(items, report_scan) -> dict:
    """Connection counts of one atlas: the chosen scan's and each group's mean per scan.

    ``items``: [(scan_id, scan_group, numpy_path)]. The region lists come from the npys'
    sidecars (scans without one are left out); scans whose lists differ are placed on
    the union of the region ids. One pass over the npys, summing per-pair counts per
    group, so memory does not grow with the number of scans. Returns {"panels":
    [(title, (U, U) matrix)], "regions": union of region ids, "names": {id: name},
    "n_scans", "left_out": [scan_id]}.
    """
    sums = OrderedDict()  # group -> {region list: [summed pair counts, n scans]}
    chosen, left_out, graphmls, n_scans = None, [], OrderedDict(), 0
    for scan_id, group, npy in items:
        side = _read_sidecar(npy)[0] or {}
        regions = side.get("region_ids")
        if regions is None:
            log.warning("%s: no sidecar with the region list; left out of the plot", npy)
            left_out.append(scan_id)
            continue
        try:
            counts = pair_counts(np.load(npy), len(regions),
                                 int(side.get("connection_ids_start_at", 1)))
        except (OSError, ValueError) as exc:
            log.warning("%s: left out of the plot (%s)", npy, exc)
            left_out.append(scan_id)
            continue
        key = tuple(int(r) for r in regions)
        slot = sums.setdefault(group, {}).setdefault(key, [np.zeros_like(counts), 0])
        slot[0] += counts
        slot[1] += 1
        n_scans += 1
        if scan_id == report_scan:
            chosen = (scan_id, group, key, counts)
        graphml = _graphml_of(side, npy)
        if graphml is not None:
            graphmls.setdefault(str(graphml), graphml)
    keys = {k for per_key in sums.values() for k in per_key}
    union = np.unique(np.concatenate([np.asarray(k, dtype=np.int64) for k in keys])) \
        if keys else np.zeros(0, dtype=np.int64)

    def on_union(key, counts):
        pos = np.searchsorted(union, np.asarray(key, dtype=np.int64))
        out = np.zeros((union.size, union.size), dtype=np.float64)
        out[np.ix_(pos, pos)] = pairs_to_matrix(counts, len(key))
        return out

    panels = []
    if chosen is not None:
        scan_id, group, key, counts = chosen
        panels.append((f"scan {scan_id} ({_group_label(group)})", on_union(key, counts)))
    for group, per_key in sums.items():
        n = sum(c for _, c in per_key.values())
        total = sum(on_union(k, s) for k, (s, _) in per_key.items())
        panels.append((f"group {_group_label(group)}: mean of {n} scan{'s' if n > 1 else ''}",
                       total / n))
    names = {}
    for graphml in graphmls.values():  # a study has one graphml per atlas, or a few copies
        for rid, name in region_names(graphml).items():
            names.setdefault(rid, name)
        if all(int(r) in names for r in union):
            break
    return {"panels": panels, "regions": union, "names": names, "n_scans": n_scans,
            "left_out": left_out}


def connectivity_figure(atlas, items, report_scan):
    """(figure, info): :func:`connectivity_panels` on one logarithmic colour scale.

    Only the regions some panel reaches are drawn; one ``LogNorm`` (from the smallest
    to the largest nonzero value of all panels) and one colorbar serve every panel;
    empty cells are blank. Axes are named from the graphml (ids where it names none),
    every k-th region when there are more than ``MAX_TICK_LABELS``. ``info`` adds
    "keep" (the drawn region ids), "ticks" (positions) and "labels" to the panels'.
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
    step = max(1, math.ceil(keep.size / MAX_TICK_LABELS))
    ticks = list(range(0, keep.size, step))
    labels = [names.get(int(union[keep[i]]), str(int(union[keep[i]]))) for i in ticks]
    named = any(int(union[k]) in names for k in keep)
    images = []
    for ax, (_, sub) in zip(axes.ravel(), subs if keep.size else []):
        images.append(ax.imshow(np.where(sub > 0, sub, np.nan), cmap=cmap, norm=norm,
                                interpolation="nearest"))
    for ax, (title, _) in zip(axes.ravel(), subs):
        ax.set_title(title, fontsize=10)
    for ax in axes.ravel()[len(subs):]:
        ax.set_axis_off()
    size = 7 if len(ticks) <= 30 else 5
    nth = f"{step}{ {2: 'nd', 3: 'rd'}.get(step, 'th')}"
    axis = ("region" if named else "region id") + (f" (every {nth} named)" if step > 1 else "")
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
    :func:`connectivity_figure`). ``items``: [(scan_id, scan_group, numpy_path)]."""
    fig, info = connectivity_figure(atlas, items, report_scan)
    log.info("%s: %d panels from %d scans", out_png, len(info["panels"]), info["n_scans"])
    _save(fig, out_png, dpi=110)


# ---------------------------------------------------------------- viewing the report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--hide-scrollbars", "--virtual-time-budget=10000"]


def find_chromium():
    """Path of a Chromium (or Chrome) binary, or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def open_report(report_html, *, show=None, category=None, subcategory=None, screenshot=None,
                window_size=(1400, 900), chromium=None, timeout=120) -> str:
    """Open a Snakemake report in headless Chromium, as a user would, and return the DOM.

    The report is a JavaScript app: a copy of it gets a few lines that, once the
    app has started, open the ``category``/``subcategory`` in the menu and show
    the result ``show`` (its path in the report, e.g. ``results/report/lengths.png``),
    like clicking them. With ``screenshot``, a PNG of the window is saved there.
    """
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium binary on PATH")
    html = Path(report_html).read_text(encoding="utf-8")
    view = {}
    if category:
        view.update(navbarMode="subcategory" if subcategory else "category", category=category)
        if subcategory:
            view["subcategory"] = subcategory
    driver = ("<script>(function () {"
              f"var view = {json.dumps(view)}; var show = {json.dumps(show)};"
              "function go() { if (typeof app === 'undefined' || !app) { return setTimeout(go, 50); }"
              " if (show) { var r = results[show]; view.content = 'img'; view.contentPath = r.data_uri;"
              " view.resultPath = show; }"
              " if (Object.keys(view).length) { app.setView(view); } }"
              " window.addEventListener('load', function () { setTimeout(go, 100); });"
              "})();</script>")
    i = html.rfind("</body>")
    html = html[:i] + driver + html[i:] if i >= 0 else html + driver
    with tempfile.TemporaryDirectory(prefix="ltpa-report-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        base = [chromium, *CHROMIUM_FLAGS, f"--window-size={window_size[0]},{window_size[1]}"]
        dom = subprocess.run(base + [f"--user-data-dir={tmp}/profile", "--dump-dom",
                                     page.as_uri()],
                             capture_output=True, text=True, timeout=timeout, check=True).stdout
        if screenshot:
            subprocess.run(base + [f"--user-data-dir={tmp}/profile2",
                                   f"--screenshot={Path(screenshot).resolve()}", page.as_uri()],
                           capture_output=True, text=True, timeout=timeout, check=True)
    return dom


def rendered_part(dom: str) -> str:
    """The DOM without <script> and <style> contents: what the app rendered."""
    import re

    dom = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)
    return re.sub(r"<style\b.*?</style>", "", dom, flags=re.S)


if __name__ == "__main__":  # python -m ltpa.report REPORT.html OUT.png: the README screenshot
    import sys

    open_report(sys.argv[1], category="Plots", subcategory="connection counts",
                show=sys.argv[3] if len(sys.argv) > 3 else None, screenshot=sys.argv[2])

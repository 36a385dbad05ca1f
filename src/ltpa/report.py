"""Plots of the study's QC for the Snakemake report (matplotlib, no display needed)."""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from .sidecar import read as _read_sidecar
from .qc import connection_matrix, read_tsv

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


def plot_share_unlabeled(summary_tsv, out_png) -> None:
    """Bars: share of streamlines with connection id 0 per scan, one panel per atlas, by group."""
    plt = _plt()
    rows = [r for r in read_tsv(summary_tsv) if r.get("atlas")]
    atlases = list(OrderedDict.fromkeys(r["atlas"] for r in rows)) or [""]
    colors = _group_colors(r["scan_group"] for r in rows)
    fig, axes = plt.subplots(len(atlases), 1, figsize=(max(6, 0.5 * len(rows) / len(atlases) + 3),
                                                        2.8 * len(atlases)), squeeze=False)
    for ax, atlas in zip(axes[:, 0], atlases):
        mine = sorted((r for r in rows if r["atlas"] == atlas),
                      key=lambda r: (list(colors).index(r["scan_group"]), r["scan_id"]))
        x = np.arange(len(mine))
        ax.bar(x, [float(r["share_unlabeled"]) for r in mine],
               color=[colors[r["scan_group"]] for r in mine])
        ax.set_xticks(x, [r["scan_id"] for r in mine], rotation=90 if len(mine) > 12 else 0)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share unlabeled (id 0)")
        ax.set_title(f"atlas {atlas}" if atlas else "no atlas")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    if handles:
        axes[0, 0].legend(handles, list(colors), title="scan_group", loc="upper right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    log.info("wrote %s", out_png)


def plot_connectivity(atlas, items, report_scan, out_png) -> None:
    """Connection-count matrices of one atlas: the chosen scan and each group's mean.

    ``items``: [(scan_id, scan_group, numpy_path)]. Region lists are taken from the
    npys' sidecars; scans whose lists differ are placed on the union of region ids.
    """
    plt = _plt()
    loaded = []
    for scan_id, group, npy in items:
        side = _read_sidecar(npy)[0] or {}
        regions = side.get("region_ids")
        if regions is None:
            log.warning("%s: no sidecar with the region list; left out of the plot", npy)
            continue
        m = connection_matrix(np.load(npy), len(regions), int(side.get("connection_ids_start_at", 1)))
        loaded.append((scan_id, group, np.asarray(regions, dtype=np.int64), m))
    union = np.unique(np.concatenate([r for _, _, r, _ in loaded])) if loaded else np.zeros(0, int)

    def on_union(regions, m):
        pos = np.searchsorted(union, regions)
        out = np.zeros((union.size, union.size), dtype=np.float64)
        out[np.ix_(pos, pos)] = m
        return out

    panels = []
    chosen = [x for x in loaded if x[0] == report_scan]
    if chosen:
        scan_id, group, regions, m = chosen[0]
        panels.append((f"scan {scan_id} ({group})", on_union(regions, m), "streamlines"))
    groups = list(OrderedDict.fromkeys(g for _, g, _, _ in loaded))
    for g in groups:
        mats = [on_union(r, m) for _, gg, r, m in loaded if gg == g]
        panels.append((f"group {g}: mean of {len(mats)} scan{'s' if len(mats) > 1 else ''}",
                       np.mean(mats, axis=0), "mean streamlines"))
    # only the regions some streamline of some scan reaches: the rest are empty rows
    reached = np.zeros(union.size, dtype=bool)
    for _, mat, _ in panels:
        reached |= mat.sum(axis=0) > 0
    keep = np.flatnonzero(reached)
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.4), squeeze=False)
    for ax, (title, mat, unit) in zip(axes[0], panels):
        sub = mat[np.ix_(keep, keep)]
        im = ax.imshow(np.where(sub > 0, sub, np.nan), cmap="viridis", interpolation="nearest",
                       vmin=0)
        ax.set_title(title, fontsize=10)
        if keep.size <= 40:
            ticks = [str(v) for v in union[keep]]
            ax.set_xticks(range(keep.size), ticks, rotation=90, fontsize=8)
            ax.set_yticks(range(keep.size), ticks, fontsize=8)
        ax.set_xlabel("region id")
        ax.set_ylabel("region id")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=unit)
    if not panels or not keep.size:
        axes[0, 0].text(0.5, 0.5, "no labeled streamlines", ha="center", va="center")
    fig.suptitle(f"connection counts, atlas {atlas}: the {keep.size} of {union.size} regions "
                 f"that streamlines reach")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    log.info("wrote %s: %d panels from %d scans", out_png, len(panels), len(loaded))


def plot_lengths(items, out_png) -> None:
    """Streamline length histograms: one line per scan, coloured by group.

    ``items``: [(scan_id, scan_group, lengths_tsv)] (bins written by ltpa.qc).
    """
    plt = _plt()
    colors = _group_colors(g for _, g, _ in items)
    fig, ax = plt.subplots(figsize=(7, 4))
    seen = set()
    for scan_id, group, path in items:
        rows = read_tsv(path)
        if not rows:
            continue
        lo = np.array([float(r["length_mm_from"]) for r in rows])
        hi = np.array([float(r["length_mm_to"]) for r in rows])
        count = np.array([int(r["count"]) for r in rows], dtype=float)
        share = count / max(count.sum(), 1)
        ax.stairs(share, np.concatenate([lo, hi[-1:]]), color=colors[group], alpha=0.8,
                  label=group if group not in seen else None)
        seen.add(group)
    ax.set_xlabel("streamline length (mm)")
    ax.set_ylabel("share of the scan's streamlines")
    ax.set_title("streamline length per scan")
    if seen:
        ax.legend(title="scan_group")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    log.info("wrote %s", out_png)


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

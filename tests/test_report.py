"""The report's plots against independent computations from the QC tables (fast, on
generated tables), and `snakemake --report` after a full run, opened in headless Chromium."""

import base64
import csv
import math
import os
import re
import shutil
import statistics

import numpy as np
import pytest

from conftest import run_snakemake, study_folder
from ltpa.formats.regions import region_names
from ltpa.qc.report import (
    MAX_NAMED_OUTLIERS,
    MAX_STRIP_POINTS,
    MAX_TICK_LABELS,
    connectivity_figure,
    length_summary,
    lengths_figure,
    share_unlabeled_figure,
)
from ltpa.qc.tables import write_summary
from ltpa.study import sidecar
from qc_study import built_study, write_graphml_with_names, write_synthetic_qc
from tools.browser import find_chromium, open_report, rendered_part

GROUPS = ("control", "patient", "sibling")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """240 scans in 3 groups: every 7th scan's share unlabeled far up, every 61st down."""
    folder = tmp_path_factory.mktemp("synthetic_qc")
    data = write_synthetic_qc(folder, 240, npy_atlases=("scale33",), n_streamlines=400,
                              groups=GROUPS, seed=3, high_every=7, low_every=61)
    write_summary(data["qc_tsvs"], folder / "summary.tsv", data["scans"])
    return folder, data


def _tukey_outliers(values):
    """{index: "high"/"low"} beyond 1.5 IQR (statistics' inclusive quartiles = numpy's)."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    return {i: "high" if v > hi else "low" for i, v in enumerate(values) if v > hi or v < lo}


def test_share_unlabeled_names_exactly_the_iqr_outliers_of_each_group(synthetic):
    folder, _ = synthetic
    with open(folder / "summary.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    fig, info = share_unlabeled_figure(rows)
    cells = {}
    for r in rows:
        cells.setdefault((r["atlas"], r["scan_group"]), []).append(r)
    assert len(cells) == 6 and all(len(c) == 80 for c in cells.values())
    n_more = 0
    for key, cell in cells.items():
        values = [float(r["share_unlabeled"]) for r in cell]
        expected = _tukey_outliers(values)
        # the summary lists every outlier, with its side
        assert {i: r["share_unlabeled_outlier"] for i, r in enumerate(cell)
                if r["share_unlabeled_outlier"]} == expected, key
        assert sorted(info["outliers"][key]) == sorted(cell[i]["scan_id"] for i in expected)
        # the plot names the most extreme ones (farthest from the group's median), "+N more"
        median = statistics.median(values)
        ranked = sorted(expected, key=lambda i: -abs(values[i] - median))
        assert info["named"][key] == [cell[i]["scan_id"] for i in ranked[:MAX_NAMED_OUTLIERS]]
        assert info["more"][key] == max(0, len(expected) - MAX_NAMED_OUTLIERS)
        n_more += info["more"][key] > 0
        # a readable strip: at most MAX_STRIP_POINTS ordinary scans, and every outlier
        assert info["shown"][key] == min(80 - len(expected), MAX_STRIP_POINTS) + len(expected)
    assert n_more  # every 7th scan up: more outliers than are named
    panels = [ax for ax in fig.axes if ax.get_title().startswith("atlas ")]
    assert [ax.get_title() for ax in panels] == ["atlas scale33", "atlas scale60"]
    for ax in panels:
        atlas = ax.get_title().split()[1]
        texts = sorted(t.get_text() for t in ax.texts)
        want = [s for g in GROUPS for s in info["named"][(atlas, g)]]
        want += [f"+{info['more'][(atlas, g)]} more" for g in GROUPS if info["more"][(atlas, g)]]
        assert texts == sorted(want)
        # one box and one strip per group, not one mark per scan on the axis
        assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == list(GROUPS)
        drawn = sum(len(c.get_offsets()) for c in ax.collections)
        assert drawn == sum(info["shown"][(atlas, g)] for g in GROUPS)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _read_hist(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return {round(float(r["length_mm_from"]) / 2.0): int(r["count"]) for r in rows}


def test_length_summary_per_group_equals_numpy_over_the_scan_tables(synthetic, tmp_path):
    _, data = synthetic
    empty = tmp_path / "no_trk.tsv"  # what qc_scan writes without the trk
    empty.write_text("length_mm_from\tlength_mm_to\tcount\n")
    items = data["lengths"] + [("sub-archived", "patient", str(empty))]
    got = length_summary(items)
    assert got["without"] == ["sub-archived"]
    hists = {sid: _read_hist(p) for sid, _, p in data["lengths"]}
    n_bins = 1 + max(b for h in hists.values() for b in h)
    np.testing.assert_allclose(got["edges"], 2.0 * np.arange(n_bins + 1))
    assert list(got["groups"]) == list(GROUPS)
    for g in GROUPS:
        mine = [hists[sid] for sid, gg, _ in data["lengths"] if gg == g]
        counts = np.array([[h.get(b, 0) for b in range(n_bins)] for h in mine], dtype=float)
        shares = counts / counts.sum(axis=1)[:, None]
        s = got["groups"][g]
        assert s["n_scans"] == len(mine) == 80
        np.testing.assert_allclose(s["median"], np.median(shares, axis=0), atol=1e-12)
        np.testing.assert_allclose(s["p10"], np.quantile(shares, 0.1, axis=0), atol=1e-12)
        np.testing.assert_allclose(s["p90"], np.quantile(shares, 0.9, axis=0), atol=1e-12)
        np.testing.assert_allclose(s["pooled"], counts.sum(axis=0) / counts.sum(), atol=1e-12)
    # the figure: per group a band and a median line, not one line per scan
    fig, _ = lengths_figure(items)
    from matplotlib.patches import StepPatch

    steps = [p for p in fig.axes[0].patches if isinstance(p, StepPatch)]
    assert len(steps) == 2 * len(GROUPS)
    lines = [p for p in steps if not p.get_fill()]
    for p, g in zip(lines, GROUPS):
        np.testing.assert_allclose(p.get_data().values, got["groups"][g]["median"])
    import matplotlib.pyplot as plt

    plt.close(fig)


def _slow_matrix(ids, n):
    """Counts per region pair from the triu enumeration, one streamline at a time."""
    pairs = [(a, b) for a in range(n) for b in range(a, n)]
    m = np.zeros((n, n))
    for i in ids.tolist():
        if i > 0:
            a, b = pairs[i - 1]
            m[a, b] += 1
            if a != b:
                m[b, a] += 1
    return m


def _check_one_log_scale(fig, panels):
    from matplotlib.colors import LogNorm

    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == len(panels)
    assert all(im.norm is images[0].norm for im in images) and isinstance(images[0].norm, LogNorm)
    positive = np.concatenate([m[m > 0] for m in panels])
    assert images[0].norm.vmin == pytest.approx(positive.min())
    assert images[0].norm.vmax == pytest.approx(positive.max())
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1
    return images


def test_connectivity_panels_share_one_log_scale_and_name_regions_from_the_graphml(
        synthetic, tmp_path):
    folder, data = synthetic
    items = data["npys"]["scale33"][:30]
    lost = tmp_path / "lost.npy"  # an npy without its sidecar: left out, named in the log
    shutil.copy(items[0][2], lost)
    items = items + [("sub-lost", "control", str(lost))]
    report_scan = items[4][0]
    fig, info = connectivity_figure("scale33", items, report_scan)
    assert info["left_out"] == ["sub-lost"] and info["n_scans"] == 30
    n = 83
    want = [("scan", _slow_matrix(np.load(items[4][2]), n))]
    for g in GROUPS:
        mats = [_slow_matrix(np.load(p), n) for _, gg, p in items[:30] if gg == g]
        want.append((g, np.mean(mats, axis=0)))
    assert [t for t, _ in info["panels"]] == [f"scan {report_scan} (patient)"] + [
        f"group {g}: mean of 10 scans" for g in GROUPS]
    for (_, got), (_, ref) in zip(info["panels"], want):
        np.testing.assert_allclose(got, ref, atol=1e-12)
    reached = np.flatnonzero(sum(m for _, m in want).sum(axis=0) > 0)
    np.testing.assert_array_equal(info["keep"], reached + 1)
    images = _check_one_log_scale(fig, [m[np.ix_(reached, reached)] for _, m in want])
    # axes named from the graphml's dn_name (not dn_fsname), every k-th region when many
    names = data["names"]["scale33"]
    step = math.ceil(reached.size / MAX_TICK_LABELS)
    assert step > 1
    labels = [names[int(r) + 1] for r in reached[::step]]
    first = images[0].axes
    assert [t.get_text() for t in first.get_yticklabels()] == labels
    bottom = [im.axes for im in images if im.axes.get_xlabel()]
    assert bottom and all([t.get_text() for t in ax.get_xticklabels()] == labels for ax in bottom)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_connectivity_shows_region_ids_when_the_graphml_names_none(synthetic, tmp_path):
    _, data = synthetic
    nameless = tmp_path / "nameless.graphml"
    write_graphml_with_names(nameless, 83, names=False)
    assert region_names(nameless) == {}
    assert region_names(data["graphml"]["scale33"]) == data["names"]["scale33"]  # dn_name
    npy = tmp_path / "s.npy"
    ids = np.array([0, 1, 1, 5, 84, 84, 84, 3486])  # (0,0) twice, (0,4), (1,1) x3, (82,82)
    np.save(npy, ids)
    sidecar.write(npy, "connection_ids", inputs={"graphml_path": sidecar.file_record(nameless)},
                  params={}, region_ids=list(range(1, 84)), connection_ids_start_at=1)
    fig, info = connectivity_figure("scale33", [("s", "", str(npy))], "s")
    assert [t for t, _ in info["panels"]] == ["scan s ((no group))",
                                              "group (no group): mean of 1 scan"]
    assert info["keep"].tolist() == [1, 2, 5, 83]
    assert info["labels"] == ["1", "2", "5", "83"]
    images = _check_one_log_scale(fig, [np.array([2.0, 1.0, 1.0, 3.0, 1.0])] * 2)
    assert images[0].norm.vmin == 1 and images[0].norm.vmax == 3
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------------ the report of a full run

PLOTS = ["report/share_unlabeled.png", "report/lengths.png",
         "report/connectivity/scale33.png", "report/connectivity/scale60.png"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work, local_data, _ = built_study(tmp_path_factory)
    results = study_folder(local_data)
    for p in PLOTS:
        assert (results / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = work / "report.html"
    run_snakemake(work, "--report", str(html), local_data=local_data, qc=True)
    return html, results


@pytest.mark.slow
def test_report_holds_description_summary_and_plots(report):
    report, results = report
    text = report.read_text()
    assert "Local Tract Population Analysis" in text  # workflow.rst
    for name in ["qc/summary.tsv"] + PLOTS:
        assert f'"{results / name}"' in text, name
    for p in PLOTS:  # each plot's own image is embedded, byte for byte
        png = (results / p).read_bytes()
        assert png.startswith(b"\x89PNG"), p
        assert base64.b64encode(png).decode() in text, p


# CI sets LTPA_REQUIRE_CHROMIUM=1 (and installs it): there, a missing browser fails the test
@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None and not os.environ.get("LTPA_REQUIRE_CHROMIUM"),
                    reason="headless Chromium not installed (Debian: apt-get install -y chromium); "
                           "CI installs it")
def test_report_renders_in_chromium_with_the_plots(report, tmp_path):
    report, results = report
    # the start page: the app ran, shows the workflow description and the result categories
    start = rendered_part(open_report(report))
    assert "Snakemake" in start and "Local Tract Population Analysis" in start
    assert ">Plots<" in start and ">QC<" in start
    # each plot, opened as a user would (menu, then the result): an <img> with PNG data
    for path, sub, label in [
            ("report/connectivity/scale33.png", "connection counts", "connection counts"),
            ("report/share_unlabeled.png", "Other", "share unlabeled"),
            ("report/lengths.png", "Other", "streamline length")]:
        path = str(results / path)
        dom = rendered_part(open_report(report, category="Plots", subcategory=sub, show=path))
        assert label in dom
        assert re.search(r'<img src="data:image/png[^"]*;base64,iVBORw0KGgo', dom), path


@pytest.mark.slow
def test_connectivity_of_the_run_names_regions_from_its_graphml(tmp_path_factory):
    import json

    import matplotlib.pyplot as plt
    import networkx as nx

    _, local_data, study = built_study(tmp_path_factory)
    scans = json.loads(local_data.read_text())
    labs = [(s, s["track_labels"][0]) for s in scans]
    items = [(s["scan_id"], s["scan_group"], str(study / lab["numpy_path"])) for s, lab in labs]
    fig, info = connectivity_figure("first", items, scans[0]["scan_id"])
    graph = nx.read_graphml(str(study / labs[0][1]["graphml_path"]))
    names = {int(k): v.get("dn_name", k) for k, v in graph.nodes(data=True)}
    step = math.ceil(info["keep"].size / MAX_TICK_LABELS)
    assert info["labels"] == [names[int(r)] for r in info["keep"][::step]]
    assert info["n_scans"] == len(scans) and not info["left_out"]
    plt.close(fig)

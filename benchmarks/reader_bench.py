#!/usr/bin/env python3
"""The prepared data in use: a study of N scans of 10^6 streamlines queried from Python.

    python benchmarks/reader_bench.py                   # N = 50 and 200 (make bench runs this)
    python benchmarks/reader_bench.py --sizes 50 --repeat 3
    python benchmarks/reader_bench.py --baseline-all    # run the pickle.load baseline at 200 too

What is measured, each as its own process (a fresh interpreter, run by this script's Python,
which must import ltpa), for each study size N:

  * reader: ``ltpa.TrackDataSource(local_data.json).query_ijk(ROI)``: opening the study (the
    JSON validated, paths resolved, the staleness verdicts of ``ltpa status``) and a query of
    a 10x10x10 voxel cube (1,000 voxels) at the centre of the MNI key grid in every scan.
    Run twice; the second run is reported ("warm": the page cache holds what it reads).
  * connection matrices: ``change_atlas`` + ``connection_matrices()`` (83 regions), warm.
  * baseline (what dsi2 did): plain ``pickle.load`` of each scan's pkl (the whole file read and
    its arrays copied into memory), then ``get_tracks_by_ijks`` over the same voxels. dsi2
    kept every loaded scan in memory (N x ~0.9 GB here); this baseline drops each scan after
    its query, so its peak memory is one scan's. It runs for N <= --baseline-max (default 50);
    larger N are extrapolated linearly from the largest N run (marked ~).

Wall = time.perf_counter() around the whole child process (interpreter start-up and imports
included); "in process" = the child's own time from before ``TrackDataSource(...)`` to the
last result; cpu = the child's user + system time (steadier than wall on a shared machine);
peak RSS = the child's ru_maxrss. The ids found are compared between
the reader and the baseline (per scan count, and the ids of the first and last scan).

The study is built once and reused (benchmarks/out/reader/, git-ignored): the synthetic
benchmarks/data/synth_<n>.trk (made by make_data.py when missing) is indexed and labeled
once with ``ltpa index`` / ``ltpa label``, and every scan's pkl and npy are hard links to
those two files (no extra disk; all scans share one page-cache copy, so "warm" is warm for
every scan). Each link gets its own sidecar (the base sidecar with that scan's parameters),
so the study is up to date and the staleness checks take their full path, as in a real
study.

Targets (issue #14): N = 50: wall <= 3 s and peak RSS <= 1 GB; N = 200: within 2x of
those (<= 6 s, <= 2 GB). The table also gives the 200/50 ratios and x baseline.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CUBE = 10  # voxels per side of the query ROI
TARGET_S, TARGET_MB = 3.0, 1024.0


# --------------------------------------------------------------------------- children


def roi_voxels(dim):
    import numpy as np

    lo = np.asarray(dim) // 2 - CUBE // 2
    g = np.mgrid[0:CUBE, 0:CUBE, 0:CUBE].reshape(3, -1).T + lo
    return g


def child(kind, json_path):
    import numpy as np

    from ltpa.formats.grids import MNI_DIM

    voxels = roi_voxels(MNI_DIM)
    t0 = time.perf_counter()
    out = {}
    if kind == "reader":
        import warnings

        import ltpa

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the study must be up to date
            source = ltpa.TrackDataSource(json_path)
        t1 = time.perf_counter()
        results = source.query_ijk(voxels)
        t2 = time.perf_counter()
        ids = [q.ids for q in results]
        out.update(open_s=t1 - t0, query_s=t2 - t1)
    elif kind == "matrices":
        import ltpa

        source = ltpa.TrackDataSource(json_path)
        t1 = time.perf_counter()
        source.change_atlas("synth83")
        m = source.connection_matrices()
        t2 = time.perf_counter()
        ids = []
        out.update(open_s=t1 - t0, query_s=t2 - t1, matrix_shape=list(m.counts.shape),
                   matrix_total=int(m.counts.sum()))
    elif kind == "pickle":
        import pickle

        scans = json.loads(Path(json_path).read_text())
        root = Path(json_path).parent
        ijks = [tuple(int(x) for x in v) for v in voxels]
        ids = []
        load_s = 0.0
        for scan in scans:
            ta = time.perf_counter()
            with open(root / scan["pkl_path"], "rb") as fh:
                ds = pickle.load(fh)
            load_s += time.perf_counter() - ta
            ids.append(np.asarray(ds.get_tracks_by_ijks(ijks)))
            del ds
        t2 = time.perf_counter()
        out.update(open_s=load_s, query_s=t2 - t0 - load_s)
    else:
        raise SystemExit(f"unknown child {kind!r}")
    out["total_s"] = time.perf_counter() - t0
    out["counts"] = [int(a.shape[0]) for a in ids]
    out["ends"] = [a.tolist() for a in (ids[0], ids[-1])] if ids else []
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["rss_mb"] = ru.ru_maxrss / 1024.0
    out["cpu_s"] = ru.ru_utime + ru.ru_stime
    print("RESULT " + json.dumps(out))


def run_child(kind, json_path, timeout):
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(json_path)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SystemExit(f"{kind} on {json_path}: timed out after {timeout} s")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{kind} on {json_path} failed ({proc.returncode}):\n{err[-3000:]}")
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    res["wall"] = wall
    return res


# --------------------------------------------------------------------------- the study


def ltpa_cli(*args):
    cmd = [sys.executable, "-m", "ltpa", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")


def base_files(n, data, out):
    """The one indexed pkl and labeled npy every scan links to (made once)."""
    trk = data / f"synth_{n}.trk"
    atlas, graphml = data / "atlas83.nii.gz", data / "atlas83.graphml"
    if not (trk.exists() and atlas.exists() and graphml.exists()):
        print(f"making {trk} (benchmarks/make_data.py) ...", flush=True)
        subprocess.run([sys.executable, str(HERE / "make_data.py"), "--n", str(n), "--out",
                        str(data), "--no-tck", "--no-verify"], check=True)
    base = out / f"base_{n}"
    base.mkdir(parents=True, exist_ok=True)
    pkl, npy = base / "base.pkl", base / "base.npy"
    if not pkl.exists() or pkl.stat().st_mtime < trk.stat().st_mtime:
        print(f"indexing {trk} -> {pkl} ...", flush=True)
        ltpa_cli("index", trk, pkl, "--space", "qsdr", "--scan-id", "base")
    if not npy.exists() or npy.stat().st_mtime < trk.stat().st_mtime:
        print(f"labeling {trk} -> {npy} ...", flush=True)
        ltpa_cli("label", trk, atlas, npy, "--graphml", graphml, "--scan-id", "base")
    return trk, atlas, graphml, pkl, npy


def build_study(n_scans, n, data, out):
    """A study of ``n_scans`` scans whose pkl/npy are hard links to the base files."""
    from ltpa.study import sidecar
    from ltpa.study.config import default_config
    from ltpa.study.study import load_study

    trk, atlas, graphml, pkl, npy = base_files(n, data, out)
    folder = out / f"study_{n}_{n_scans}"
    local_data = folder / "local_data.json"
    marker = folder / "built.json"
    key = {"pkl": [pkl.stat().st_ino, pkl.stat().st_mtime_ns],
           "npy": [npy.stat().st_ino, npy.stat().st_mtime_ns]}
    if marker.exists() and json.loads(marker.read_text()) == key:
        return local_data
    folder.mkdir(parents=True, exist_ok=True)
    scans = []
    for s in range(n_scans):
        sid = f"sub-{s + 1:04d}"
        (folder / sid).mkdir(exist_ok=True)
        for src, name in ((pkl, f"{sid}.pkl"), (npy, "synth83.npy")):
            dst = folder / sid / name
            if dst.exists():
                dst.unlink()
            os.link(src, dst)  # a copy would need n_scans x 0.9 GB
        scans.append({
            "scan_id": sid, "subject_id": f"subj{s + 1}",
            "scan_group": ("control", "patient")[s % 2], "study": "reader-bench",
            "attributes": {"age": 20 + s % 50}, "trk_space": "qsdr", "trk_file": str(trk),
            "pkl_path": f"{sid}/{sid}.pkl",
            "track_labels": [{"name": "synth83", "parameters": {"regions": 83},
                              "graphml_path": str(graphml), "volume_path": str(atlas),
                              "numpy_path": f"{sid}/synth83.npy"}],
        })
    local_data.write_text(json.dumps(scans, indent=1))
    config = default_config()
    study = load_study(local_data, config, check_inputs_of_jobs=False, strict=False)
    bases = {"index": sidecar.read(pkl)[0], "label": sidecar.read(npy)[0]}
    for t in study.targets:
        spec = t.spec(config)
        body = dict(bases[spec.step])
        body["output"] = dict(body["output"], path=str(t.output))
        body.update(params=spec.params(), scan_id=spec.scan_id, atlas=spec.atlas)
        Path(str(t.output) + ".json").write_text(json.dumps(body, indent=1))
    marker.write_text(json.dumps(key))
    return local_data


# --------------------------------------------------------------------------- report


def fmt(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="50,200", help="numbers of scans")
    ap.add_argument("--n", type=int, default=1_000_000, help="streamlines per scan")
    ap.add_argument("--repeat", type=int, default=1, help="warm runs per row (min wall)")
    ap.add_argument("--baseline-max", type=int, default=50,
                    help="run the pickle.load baseline up to this many scans; extrapolate above")
    ap.add_argument("--baseline-all", action="store_true", help="run the baseline at every size")
    ap.add_argument("--data", default=str(HERE / "data"), help="synthetic data folder")
    ap.add_argument("--out", default=str(HERE / "out" / "reader"), help="work and result folder")
    ap.add_argument("--timeout", type=float, default=3600, help="per child process, seconds")
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows, checks = [], []
    measured = {}
    per_scan_baseline = None
    for n_scans in sizes:
        local_data = build_study(n_scans, args.n, data, out)
        run_child("reader", local_data, args.timeout)  # the first run: warms the page cache
        reader = min((run_child("reader", local_data, args.timeout)
                      for _ in range(max(1, args.repeat))), key=lambda r: r["wall"])
        matrices = min((run_child("matrices", local_data, args.timeout)
                        for _ in range(max(1, args.repeat))), key=lambda r: r["wall"])
        measured[n_scans] = reader
        base = None
        if args.baseline_all or n_scans <= args.baseline_max:
            base = run_child("pickle", local_data, args.timeout)
            per_scan_baseline = (base["wall"], base["rss_mb"], n_scans)
            same = base["counts"] == reader["counts"] and base["ends"] == reader["ends"]
            checks.append((f"{n_scans} scans: reader ids == pickle.load baseline ids "
                           f"({sum(reader['counts'])} (scan, streamline) pairs)", same))
        rows.append((n_scans, "reader: open + 1,000-voxel query (warm)", reader, None))
        rows.append((n_scans, "reader: change_atlas + connection_matrices (warm)", matrices,
                     None))
        if base is not None:
            rows.append((n_scans, "baseline: pickle.load each pkl + query", base, None))
        elif per_scan_baseline is not None:
            wall, rss, n0 = per_scan_baseline
            rows.append((n_scans, f"baseline: pickle.load each pkl + query (~ from {n0})",
                         {"wall": wall * n_scans / n0, "rss_mb": rss, "total_s": None,
                          "open_s": None}, "~"))
    base_wall = {r[0]: r[2]["wall"] for r in rows if r[1].startswith("baseline")}
    lines = ["| scans | row | wall s | in process s | cpu s | peak RSS MB | x baseline | notes |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    for n_scans, name, r, mark in rows:
        ratio = r["wall"] / base_wall[n_scans] if n_scans in base_wall else None
        notes = []
        if r.get("open_s") is not None and name.startswith("reader: open"):
            notes.append(f"open {r['open_s']:.2f} s, query {r['query_s']:.2f} s, "
                         f"{sum(r['counts']) / len(r['counts']):.0f} streamlines/scan")
        elif name.startswith("reader: change"):
            notes.append(f"{'x'.join(map(str, r['matrix_shape']))} int32")
        elif r.get("open_s") is not None:
            notes.append(f"pickle.load {r['open_s']:.1f} s in all")
        if mark:
            notes.append("extrapolated (not run); dsi2 also kept every scan: ~N x one scan's "
                         "RSS")
        shown = fmt(ratio, 3) if ratio is not None and not name.startswith("base") else "-"
        lines.append(f"| {n_scans} | {name} | {'~' if mark else ''}{fmt(r['wall'])} | "
                     f"{fmt(r.get('total_s'))} | {fmt(r.get('cpu_s'))} | "
                     f"{'-' if mark else fmt(r['rss_mb'], 0)} | "
                     f"{shown} | {'; '.join(notes)} |")
    verdicts = []
    small = min(sizes)
    for n_scans, r in measured.items():
        factor = 1.0 if n_scans <= 50 else 2.0
        verdicts.append((f"{n_scans} scans: wall {r['wall']:.2f} s <= {TARGET_S * factor:g} s",
                         r["wall"] <= TARGET_S * factor))
        verdicts.append((f"{n_scans} scans: peak RSS {r['rss_mb']:.0f} MB <= "
                         f"{TARGET_MB * factor:g} MB", r["rss_mb"] <= TARGET_MB * factor))
    if len(measured) > 1:
        big = max(measured)
        tr = measured[big]["wall"] / measured[small]["wall"]
        mr = measured[big]["rss_mb"] / measured[small]["rss_mb"]
        lines.append("")
        lines.append(f"{big} vs {small} scans: wall x {tr:.2f}, in process x "
                     f"{measured[big]['total_s'] / measured[small]['total_s']:.2f}, peak RSS "
                     f"x {mr:.2f} (for {big / small:.0f}x the scans)")
    lines.append("")
    for text, ok in verdicts + checks:
        lines.append(f"{'PASS' if ok else 'FAIL'}: {text}")
    head = (f"reader bench {_dt.datetime.now().isoformat(timespec='seconds')}: "
            f"{args.n} streamlines per scan, ROI {CUBE}x{CUBE}x{CUBE} voxels, "
            f"{platform.python_version()} on {os.cpu_count()} cores; load "
            f"{os.getloadavg()[0]:.2f}")
    text = head + "\n\n" + "\n".join(lines)
    print(text)
    stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    (out / f"results_{stamp}.md").write_text(text + "\n")
    return 0 if all(ok for _, ok in verdicts + checks) else 1


if __name__ == "__main__":
    sys.exit(main())

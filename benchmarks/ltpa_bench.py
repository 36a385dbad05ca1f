#!/usr/bin/env python3
"""LTPA speed and memory, as ratios against anchors measured in the same run.

    python benchmarks/ltpa_bench.py                      # the issue's sizes
    python benchmarks/ltpa_bench.py --n 100000 --scans 50 --sample 100   # reduced

What is measured (each command in its own process; peak RSS = that process's ru_maxrss):

1. Per scan of ``--n`` streamlines (benchmarks/make_data.py's synthetic scan, indexed once):
   ``ltpa patterns PKL NPY OUT --radius 0`` and ``--radius 1`` against the anchor
   ``ltpa label`` of the same scan (targets: r=0 <= 1.0x, r=1 <= 3x; peak RSS <= 1.2 GB),
   each command's best of ``--repeats`` interleaved rounds.
2. The demo study (``ltpa demo``, 20 scans of ~20,000 streamlines; pkls, npys and r=1
   pattern files made by the workflow): the whole coverage map at r=1 (``run_ltpa``)
   against the per-center loop of ``TrackDataSource.query_ijk`` over the sphere's voxels,
   timed on ``--sample`` random centers and extrapolated to every center (target >= 1000x);
   and ``group_difference`` of the planted pair with 1,000 permutations (target <= 30 s).
3. A map over ``--scans`` scans of ``--n`` streamlines (hard links to one scan's pkl, npy
   and pattern file, as benchmarks/reader_bench.py builds its studies): coverage and
   similarity at r=1, peak RSS (target <= 2 GB) and time.

Results are printed as a table; ``--json FILE`` writes them too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def run(argv, timeout=3600) -> dict:
    """Run ``argv``; its wall time, CPU time and peak RSS (os.wait4 of the process)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n"
                         f"{err[-3000:]}")
    return {"wall": wall, "stdout": out}


def measured(argv, timeout=3600) -> dict:
    """``run`` through a tiny parent that reports the child's own ru_maxrss (MB)."""
    code = ("import json, os, resource, subprocess, sys, time\n"
            "t = time.perf_counter(); p = subprocess.Popen(sys.argv[1:])\n"
            "_, status, ru = os.wait4(p.pid, 0); w = time.perf_counter() - t\n"
            "print('RESULT ' + json.dumps({'status': status, 'wall': w, "
            "'rss_mb': ru.ru_maxrss / 1024, 'cpu': ru.ru_utime + ru.ru_stime}))\n"
            "sys.exit(0 if status == 0 else 1)\n")
    res = run([sys.executable, "-c", code, *map(str, argv)], timeout)
    line = [ln for ln in res["stdout"].splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def ltpa(*args):
    return [sys.executable, "-m", "ltpa", *map(str, args)]


# --------------------------------------------------------------------------- 1. per scan


def per_scan(n, data, out, threads, repeats=3) -> dict:
    """ltpa label, then ltpa patterns at r = 0 and 1 with one thread and with ``threads``
    (what the workflow's rule gives a patterns job), ``repeats`` rounds of all of them in
    turn (so that a busy moment of a shared machine hits each command alike); each
    command's best (least wall time) round is kept, with every round's time."""
    from reader_bench import base_files

    trk, atlas, graphml, pkl, npy = base_files(n, data, out)
    commands = {"label": ltpa("label", trk, atlas, out / f"label_{n}.npy", "--graphml", graphml)}
    for r in (0, 1):
        for t in sorted({1, threads}):
            commands[f"patterns_r{r}_t{t}"] = ltpa(
                "patterns", pkl, npy, out / f"patterns_{n}_r{r}.npz", "--radius", r,
                "--threads", t)
    rounds = {name: [] for name in commands}
    for _ in range(max(1, int(repeats))):
        for name, argv in commands.items():
            rounds[name].append(measured(argv))
    res = {}
    for name, runs in rounds.items():
        res[name] = dict(min(runs, key=lambda x: x["wall"]))
        res[name]["walls"] = [round(x["wall"], 3) for x in runs]
    return res


# --------------------------------------------------------------------------- 2. the demo


def demo_study(out) -> Path:
    folder = out / "ltpa_demo"
    local_data = folder / "local_data.json"
    if not (folder / "TRUTH.md").exists():
        run(ltpa("demo", folder))
    cfg = out / "ltpa_demo_config.yaml"
    cfg.write_text(json.dumps({"patterns": {"radii": [1], "atlases": [
        {"name": "Lausanne2008", "parameters": {"scale": 33}}]}}))
    snakemake = str(Path(sys.executable).parent / "snakemake")
    run([snakemake, "-s", str(HERE.parent / "workflow" / "Snakefile"), "-d", str(out / "work"),
         "--cores", "2", "--configfile", str(cfg), "--config", f"local_data={local_data}",
         "qc=False"], timeout=3600)
    return local_data


def child_demo(local_data, sample) -> dict:
    import warnings

    import numpy as np

    import ltpa
    from ltpa.prepared.patterns import sphere_offsets

    warnings.simplefilter("error")  # the pattern files must be the workflow's, up to date
    source = ltpa.TrackDataSource(local_data)
    source.change_atlas("Lausanne2008", scale=33)
    t0 = time.perf_counter()
    cov = ltpa.run_ltpa("coverage", source, radius=1)
    map_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    gd = ltpa.run_ltpa("group_difference", source, radius=1,
                       connection=("lh.superiorfrontal", "lh.precuneus"),
                       groups=("control", "patient"), n_permutations=1000, seed=0)
    gd_s = time.perf_counter() - t0
    # the per-center loop: the sphere's voxels queried in every scan, coverage counted
    rng = np.random.default_rng(0)
    pick = rng.choice(len(cov), size=min(sample, len(cov)), replace=False)
    off = sphere_offsets(1)
    dim = np.asarray(cov.dim)
    t0 = time.perf_counter()
    loop = []
    for p in pick:
        vox = cov.centers[p] + off
        vox = vox[np.all((vox >= 0) & (vox < dim), axis=1)]
        loop.append(sum(q.ids.shape[0] > 0 for q in source.query_ijk(vox)))
    loop_s = time.perf_counter() - t0
    agree = bool(np.array_equal(np.array(loop), np.asarray(cov.values)[pick]))
    p = np.asarray(gd.p_fwe)
    return {"n_centers": len(cov), "map_s": map_s, "loop_sample": int(pick.size),
            "loop_sample_s": loop_s, "loop_agrees": agree,
            "loop_extrapolated_s": loop_s / pick.size * len(cov), "group_difference_s": gd_s,
            "gd_min_t": float(np.nanmin(gd.values)),
            "gd_centers_p_fwe_005": int(np.count_nonzero(p <= 0.05))}


# --------------------------------------------------------------------------- 3. a big study


def big_study(n, n_scans, data, out) -> Path:
    from reader_bench import base_files, build_study

    from ltpa.prepared.patterns import patterns_path

    _, _, _, pkl, npy = base_files(n, data, out)
    base_pat = out / f"patterns_{n}_r1.npz"
    if not base_pat.exists():
        run(ltpa("patterns", pkl, npy, base_pat, "--radius", 1))
    local_data = build_study(n_scans, n, data, out)
    for scan in json.loads(local_data.read_text()):
        dst = patterns_path(local_data.parent / scan["track_labels"][0]["numpy_path"], 1)
        if dst.exists():
            dst.unlink()
        os.link(base_pat, dst)  # the base scan's patterns, built from the same pkl and npy
    return local_data


def child_big(local_data, stat, block_size) -> dict:
    import warnings

    import ltpa

    warnings.simplefilter("error")  # every scan's pattern file read, none computed
    source = ltpa.TrackDataSource(local_data)
    source.change_atlas("synth83")
    t0 = time.perf_counter()
    opts = {"block_size": int(block_size)} if int(block_size) > 0 else {}
    res = ltpa.run_ltpa(stat, source, radius=1, **opts)
    return {"n_centers": len(res), "map_s": time.perf_counter() - t0}


def child(argv) -> dict:
    kind = argv[0]
    if kind == "demo":
        out = child_demo(argv[1], int(argv[2]))
    else:
        out = child_big(argv[1], argv[2], argv[3])
    print("CHILD " + json.dumps(out))


def proc_memory(pid) -> dict:
    """RssAnon (the process's own memory) and RssFile (file pages mapped, counted once per
    mapping: 50 memory maps of one hard-linked file count 50 times) in MB, from /proc."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for ln in fh:
                key = ln.split(":", 1)[0]
                if key in ("RssAnon", "RssFile", "VmRSS"):
                    out[key] = int(ln.split()[1]) / 1024
    except OSError:
        pass
    return out


def child_measured(*args, max_rss_mb=None) -> dict:
    """A child of this script: its result, its wall time, its peak RSS (ru_maxrss) and the
    peaks of its RssAnon and RssFile (polled every 0.1 s). With ``max_rss_mb`` it is killed
    once its RssAnon passes that, so a run that would exhaust a shared machine's memory stops
    with ``killed_over_mb``."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", *map(str, args)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    peaks = {}
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)  # reaped here: its own rusage
        if pid:
            break
        mem = proc_memory(proc.pid)
        for key, v in mem.items():
            peaks[key] = max(peaks.get(key, 0.0), v)
        if max_rss_mb and mem.get("RssAnon", 0.0) > max_rss_mb:
            proc.kill()
            killed = mem["RssAnon"]
        time.sleep(0.1)
    proc.returncode = status
    out = proc.stdout.read()
    err = proc.stderr.read()
    res = {"wall": time.perf_counter() - t0, "rss_mb": ru.ru_maxrss / 1024,
           "anon_mb": peaks.get("RssAnon"), "file_mb": peaks.get("RssFile")}
    if killed is not None:
        res["killed_over_mb"] = killed
        return res
    if status != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err[-3000:]}")
    res.update(json.loads([ln for ln in out.splitlines() if ln.startswith("CHILD ")][-1][6:]))
    return res


# --------------------------------------------------------------------------- report


def verdict(ok) -> str:
    return "ok" if ok else "MISSED"


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="streamlines per scan (1, 3)")
    ap.add_argument("--scans", type=int, default=50, help="scans of the big study (3)")
    ap.add_argument("--sample", type=int, default=200,
                    help="centers of the per-center query_ijk loop (2), extrapolated")
    ap.add_argument("--data", default=str(HERE / "data"))
    ap.add_argument("--out", default=str(HERE / "out" / "ltpa"))
    ap.add_argument("--block-size", type=int, default=0,
                    help="centers per block of the big study's maps (3); 0: run_ltpa's default")
    ap.add_argument("--max-rss-mb", type=float, default=4096,
                    help="kill a map (3) whose RSS passes this (protects a shared machine)")
    ap.add_argument("--threads", type=int, default=2,
                    help="ltpa patterns --threads besides 1 (default 2: the workflow rule's)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="rounds of the per-scan commands (1); each one's best is reported")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: scan,demo,big")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    data.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                          f"{platform.processor() or platform.platform()}",
               "n": args.n, "scans": args.scans}
    lines = []
    if "scan" not in skip:
        r = results["per_scan"] = per_scan(args.n, data, out, args.threads, args.repeats)
        lab = r["label"]["wall"]
        for (rad, target), t in ((rt, t) for rt in ((0, 1.0), (1, 3.0))
                                 for t in sorted({1, args.threads})):
            p = r[f"patterns_r{rad}_t{t}"]
            median = statistics.median(p["walls"]) / statistics.median(r["label"]["walls"])
            lines.append(f"per scan, {args.n:,} streamlines: ltpa patterns r={rad} --threads "
                         f"{t} {p['wall']:.2f} s = {p['wall'] / lab:.2f}x ltpa label ({lab:.2f} s)"
                         f" [target <= {target}x: {verdict(p['wall'] / lab <= target)}; "
                         f"medians: {median:.2f}x]; "
                         f"peak RSS {p['rss_mb']:.0f} MB [<= 1200: "
                         f"{verdict(p['rss_mb'] <= 1200)}]")
        lines.append(f"  (ltpa label peak RSS {r['label']['rss_mb']:.0f} MB; best of "
                     f"{args.repeats} interleaved rounds, every round's wall times in --json)")
    if "demo" not in skip:
        local_data = demo_study(out)
        d = results["demo"] = child_measured("demo", local_data, args.sample)
        ratio = d["loop_extrapolated_s"] / d["map_s"]
        lines.append(f"demo, coverage r=1 over {d['n_centers']:,} centers: run_ltpa "
                     f"{d['map_s']:.2f} s; per-center query_ijk loop {d['loop_sample_s']:.1f} s "
                     f"for {d['loop_sample']} random centers (same values: "
                     f"{d['loop_agrees']}), extrapolated to all: "
                     f"{d['loop_extrapolated_s']:,.0f} s = {ratio:,.0f}x [target >= 1000x: "
                     f"{verdict(ratio >= 1000)}]")
        lines.append(f"demo, group_difference of the planted pair with 1,000 permutations: "
                     f"{d['group_difference_s']:.1f} s [target <= 30 s: "
                     f"{verdict(d['group_difference_s'] <= 30)}]; min t "
                     f"{d['gd_min_t']:.2f}, {d['gd_centers_p_fwe_005']} centers with "
                     f"p_fwe <= 0.05")
    if "big" not in skip:
        local_data = big_study(args.n, args.scans, data, out)
        results["big"] = {}
        for stat in ("coverage", "similarity"):
            b = results["big"][stat] = child_measured("big", local_data, stat, args.block_size,
                                                      max_rss_mb=args.max_rss_mb)
            if "killed_over_mb" in b:
                lines.append(f"map over {args.scans} scans of {args.n:,} streamlines, {stat} "
                             f"r=1 (block size {args.block_size or 'default'}): killed when its "
                             f"own memory (RssAnon) passed {b['killed_over_mb']:.0f} MB after "
                             f"{b['wall']:.0f} s "
                             f"[<= 2048: MISSED]")
                continue
            lines.append(f"map over {args.scans} scans of {args.n:,} streamlines, {stat} r=1 "
                         f"(block size {args.block_size or 'default'}): "
                         f"{b['map_s']:.1f} s over {b['n_centers']:,} centers; peak RSS "
                         f"{b['rss_mb']:.0f} MB [<= 2048: {verdict(b['rss_mb'] <= 2048)}], of "
                         f"which its own memory (RssAnon) {b['anon_mb']:.0f} MB [<= 2048: "
                         f"{verdict(b['anon_mb'] <= 2048)}] and memory-mapped pattern files "
                         f"(RssFile, counted per scan's map) {b['file_mb']:.0f} MB")
    print(f"ltpa_bench {results['date']}, {results['machine']}")
    for line in lines:
        print(line)
    results["lines"] = lines
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

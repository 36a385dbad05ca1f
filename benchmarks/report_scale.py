#!/usr/bin/env python3
"""How the QC summary and the report's plots scale with the number of scans.

    .venv/bin/python benchmarks/report_scale.py                      # 300, 1,000, 3,000 scans
    .venv/bin/python benchmarks/report_scale.py --sizes 300,3000 --streamlines 20000
    .venv/bin/python benchmarks/report_scale.py --repeat 3           # min wall of 3 runs

What is measured: the package functions the QC rules call, each in a fresh interpreter
(``ltpa.qc.tables.write_summary`` for qc_summary, ``ltpa.qc.report.plot_share_unlabeled``,
``plot_lengths``, ``plot_connectivity`` for one atlas of 129 regions,
``ltpa.qc.groupdiff.write_group_differences`` and ``plot_group_differences`` for the same
atlas), on the first N scans of one generated study: per scan the tables the qc_scan rule
writes (``qc/scans/<scan>.tsv``, 2 atlases; ``qc/lengths/<scan>.tsv``, 2 mm bins) and one
atlas's connection-id npy (int64, ``--streamlines`` per scan) with its sidecar and a
graphml with region names (tests/qc_study.py ``write_synthetic_qc``, 3 groups). Wall time
is the call only (the interpreter's start and imports excluded; they are printed once);
peak RSS is the child's. The npys were just written, so they are read from the page
cache: plot_connectivity and qc_group_differences read every npy once (the MB column), so
on a cold network file system add that volume at the file system's rate.

Target: every step linear in the number of scans and well under a minute at 3,000 scans.
The study is cached in benchmarks/out/report_scale/ (git-ignored) and reused when its
marker matches; --regenerate rebuilds it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STEPS = ("qc_summary", "plot_share_unlabeled", "plot_lengths", "plot_connectivity",
         "qc_group_differences", "plot_group_differences")
ATLAS = "scale60"


def generate(folder: Path, n_scans: int, streamlines: int, regenerate: bool) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "src"))
    marker = folder / "study.json"
    want = {"n_scans": n_scans, "streamlines": streamlines, "version": 1}
    if marker.exists() and not regenerate:
        data = json.loads(marker.read_text())
        if data.get("want") == want:
            return data
    import shutil

    from qc_study import write_synthetic_qc

    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    out = write_synthetic_qc(folder, n_scans, npy_atlases=(ATLAS,), n_streamlines=streamlines,
                             groups=("control", "patient", "sibling"), seed=1, low_every=89)
    data = {"want": want, "scans": out["scans"], "qc_tsvs": out["qc_tsvs"],
            "lengths": out["lengths"], "npys": out["npys"][ATLAS],
            "seconds": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(data))
    return data


def child(step: str, n: int, folder: str) -> None:
    """Run one step on the first ``n`` scans; print {"seconds", "rss_mb", "mb_read"}."""
    import resource

    sys.path.insert(0, str(REPO / "src"))
    t_import = time.perf_counter()
    from ltpa.qc import report
    from ltpa.qc.groupdiff import write_group_differences
    from ltpa.qc.tables import write_summary

    report._plt()  # matplotlib imported before the clock starts
    t_import = time.perf_counter() - t_import
    folder = Path(folder)
    data = json.loads((folder / "study.json").read_text())
    out = folder / "out" / f"n{n}"
    out.mkdir(parents=True, exist_ok=True)
    mb = 0.0
    t0 = time.perf_counter()
    if step == "qc_summary":
        write_summary(data["qc_tsvs"][:n], out / "summary.tsv", data["scans"][:n])
    elif step == "plot_share_unlabeled":
        report.plot_share_unlabeled(out / "summary.tsv", out / "share_unlabeled.png")
    elif step == "plot_lengths":
        report.plot_lengths([tuple(x) for x in data["lengths"][:n]], out / "lengths.png")
    elif step == "plot_connectivity":
        items = [tuple(x) for x in data["npys"][:n]]
        report.plot_connectivity(ATLAS, items, items[0][0], out / f"{ATLAS}.png")
        mb = sum(os.path.getsize(p) for _, _, p in items) / 2**20
    elif step == "qc_group_differences":
        items = [tuple(x) for x in data["npys"][:n]]
        write_group_differences(items, out / f"group_differences_{ATLAS}.tsv")
        mb = sum(os.path.getsize(p) for _, _, p in items) / 2**20
    elif step == "plot_group_differences":
        report.plot_group_differences(ATLAS, out / f"group_differences_{ATLAS}.tsv",
                                      out / f"group_differences_{ATLAS}.png")
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mb": rss, "mb_read": mb, "import_s": t_import}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="300,1000,3000")
    ap.add_argument("--streamlines", type=int, default=100_000,
                    help="streamlines per scan in the npys (default 100000)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "out" / "report_scale"))
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--child", nargs=3, metavar=("STEP", "N", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    folder = Path(args.out)
    t0 = time.perf_counter()
    generate(folder, max(sizes), args.streamlines, args.regenerate)  # the children read it
    print(f"study: {max(sizes)} scans x (2 atlases' QC rows, a length "
          f"histogram, one {ATLAS} npy of {args.streamlines} streamlines) in {folder} "
          f"({time.perf_counter() - t0:.1f} s)")
    results = {}
    import_s = None
    for n in sizes:
        for step in STEPS:  # in order: plot_share_unlabeled reads qc_summary's table
            best = None
            for _ in range(args.repeat):
                proc = subprocess.run([sys.executable, __file__, "--child", step, str(n),
                                       str(folder)], capture_output=True, text=True)
                if proc.returncode:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return 1
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                import_s = r["import_s"]
                if best is None or r["seconds"] < best["seconds"]:
                    best = r
            results[(n, step)] = best
    print(f"(each child's imports, matplotlib included, took {import_s:.2f} s; not counted)\n")
    print("| step | " + " | ".join(f"{n:,} scans" for n in sizes) + " | per 1,000 scans |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for step in STEPS:
        cells = [f"{results[(n, step)]['seconds']:.2f} s, {results[(n, step)]['rss_mb']:.0f} MB"
                 for n in sizes]
        lo, hi = results[(sizes[0], step)], results[(sizes[-1], step)]
        slope = (hi["seconds"] - lo["seconds"]) / max(sizes[-1] - sizes[0], 1) * 1000
        print(f"| {step} | " + " | ".join(cells) + f" | {slope:.2f} s |")
    total = {n: sum(results[(n, s)]["seconds"] for s in STEPS) for n in sizes}
    print("| total | " + " | ".join(f"{total[n]:.2f} s" for n in sizes) + " | |")
    print(f"\nplot_connectivity read {results[(sizes[-1], 'plot_connectivity')]['mb_read']:.0f} MB "
          f"of npys at {sizes[-1]:,} scans (page cache)")
    worst = max(total.values())
    print(f"target (< 60 s at {sizes[-1]:,} scans, all steps): "
          f"{'met' if total[sizes[-1]] < 60 else 'MISSED'} ({worst:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`ltpa init` over a generated BIDS-derivatives tree: 10,000 scans x 3 atlases (target: 10 s).

    python benchmarks/init_bench.py [--scans 10000] [--atlases 3] [--repeat 1] [--keep DIR]
                                    [--default-scans 1000]

The tree is 5,000 subjects x 2 sessions, each session a ``dwi/`` folder with one
``*_streamlines.trk`` and one ``*_dseg.nii.gz`` per atlas, plus a ``participants.tsv``
(group, age, sex) and one ``*_dseg.tsv`` region table per atlas. The files are empty: `ltpa
init` finds scans by their names (Snakemake's ``glob_wildcards``) and checks the study it
writes as ``ltpa validate`` does, but with ``--no-header-checks``: the JSON's schema, its
records, every path (resolved, collisions, outputs that are inputs) and what must be built;
not the inputs' headers (grids, region lists), which the first dry run checks and caches by
(path, size, mtime). The command is timed as a user runs it (a new process), against two
anchors measured in the same run: a plain ``os.walk`` of the tree and the start-up of
``ltpa --version``.

The default mode (header checks on: every trk header, every atlas's NIfTI header and label
set, every region list) is timed too, on a smaller tree of real, distinct files:
``--default-scans`` scans (default 1,000; 0: not run) and half as many, each scan a copy of
a demo study's trk and atlases (int16, 79 x 95 x 69, ~20 KB gzipped; distinct inodes, so
the input cache reads each once, as for a real study), with dseg.tsv region tables. Its
work is per file, so the figure for ``--scans`` scans is extrapolated linearly: the larger
run's time plus, per scan more, the time per scan between the two runs (which leaves out
the fixed cost: imports, the spec, the participants file).
Only the ``--no-header-checks`` figure decides the exit status (the default mode misses
the 10 s target at 10,000 scans: the atlases alone are 30,000 files to decompress).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TARGET_S = 10.0
SPEC = """\
tracks:
  - sub-{{subject}}/ses-{{session}}/dwi/sub-{{subject}}_ses-{{session}}_desc-qsdr_streamlines.trk
space: qsdr
participants: participants.tsv
group_column: group
atlases:
{atlases}
outputs: prepared
metadata: {{study: bench, software: DSI Studio, reconstruction: qsdr}}
"""
ATLAS = """\
  - name: atlas{k}
    volume: sub-{{subject}}/ses-{{session}}/dwi/sub-{{subject}}_ses-{{session}}_seg-a{k}_dseg.nii.gz
    regions: atlas-a{k}_dseg.tsv
"""


def demo_files(folder: Path) -> dict:
    """A demo study's files to copy into a tree of real files: a trk, the two atlases and
    their region tables (dseg.tsv written from the graphmls' names)."""
    from ltpa.demo.study import make_study_demo
    from ltpa.formats.regions import region_names

    demo = make_study_demo(folder, n_scans=4, n_streamlines=100).parent
    files = {"trk": demo / "s01" / "s01.trk", "volumes": [], "tables": []}
    for scale in ("scale33", "scale60"):
        files["volumes"].append(demo / "s01" / f"s01.{scale}.QSDR.nii.gz")
        names = region_names(demo / "atlases" / f"{scale}.graphml", "graphml")
        files["tables"].append("index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in
                                                         sorted(names.items())))
    return files


def make_tree(root: Path, n_scans: int, n_atlases: int, files: dict | None = None) -> None:
    """The tree; empty files, or with ``files`` (:func:`demo_files`) a copy of them for each
    scan (atlas k is the demo's scale33 for even k, scale60 for odd k)."""
    n_subjects = n_scans // 2
    rows = ["participant_id\tgroup\tage\tsex"]
    for s in range(1, n_subjects + 1):
        sub = f"{s:05d}"
        rows.append(f"sub-{sub}\t{'control' if s % 2 else 'patient'}\t{20 + s % 50}\t"
                    f"{'F' if s % 3 else 'M'}")
        for ses in ("1", "2"):
            d = root / f"sub-{sub}" / f"ses-{ses}" / "dwi"
            d.mkdir(parents=True)
            stem = f"sub-{sub}_ses-{ses}"
            trk = d / f"{stem}_desc-qsdr_streamlines.trk"
            if files:
                shutil.copyfile(files["trk"], trk)
            else:
                trk.touch()
            for k in range(n_atlases):
                vol = d / f"{stem}_seg-a{k}_dseg.nii.gz"
                if files:
                    shutil.copyfile(files["volumes"][k % 2], vol)
                else:
                    vol.touch()
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    for k in range(n_atlases):
        (root / f"atlas-a{k}_dseg.tsv").write_text(files["tables"][k % 2] if files else
                                                   "index\tname\n1\tA\n2\tB\n")


def timed(cmd, **kw) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return time.perf_counter() - t0, proc


def run_init(root, spec, out, *options) -> tuple[float, subprocess.CompletedProcess]:
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    return timed([str(BIN / "ltpa"), "init", str(root), "--spec", str(spec), "-o", str(out),
                  *options])


def default_mode(base: Path, spec: Path, n_scans: int, n_atlases: int,
                 target_scans: int) -> list[str] | None:
    """Table rows of ``ltpa init`` with its header checks, on trees of real files of
    ``n_scans`` and ``n_scans / 2`` scans, and the linear extrapolation to ``target_scans``."""
    files = demo_files(base / "demo")
    rows, times = [], {}
    for n in (n_scans // 2, n_scans):
        root = base / f"real-{n}"
        if not root.exists():
            make_tree(root, n, n_atlases, files)
        secs, proc = run_init(root, spec, base / f"real-study-{n}" / "local_data.json")
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return None
        times[n] = secs
        rows.append(f"| `ltpa init` (header checks), {n:,} scans x {n_atlases} atlases of "
                    f"real files | {secs:.2f} | {1000 * secs / n:.2f} ms per scan |")
    half = n_scans // 2
    per_scan = (times[n_scans] - times[half]) / (n_scans - half)
    rows.append(f"| the same, extrapolated to {target_scans:,} scans ({n_scans:,}-scan "
                f"time + {1000 * per_scan:.2f} ms per scan more) | "
                f"{times[n_scans] + (target_scans - n_scans) * per_scan:.0f} | |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=10_000)
    ap.add_argument("--atlases", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--keep", metavar="DIR", default=None,
                    help="make the tree in DIR and keep it (default: a temp folder)")
    ap.add_argument("--default-scans", type=int, default=1000, metavar="N",
                    help="also time the default mode (header checks) on trees of N and N/2 "
                         "scans of real files, extrapolated to --scans (0: not run)")
    args = ap.parse_args(argv)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ltpa-init-bench-"))
    root = base / "derivatives"
    try:
        if not root.exists():
            t0 = time.perf_counter()
            make_tree(root, args.scans, args.atlases)
            print(f"tree: {args.scans:,} scans x {args.atlases} atlases made in "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        spec = base / "init.yaml"
        spec.write_text(SPEC.format(atlases="".join(ATLAS.format(k=k)
                                                    for k in range(args.atlases))))
        t0 = time.perf_counter()
        n_files = sum(len(files) for _, _, files in os.walk(root))
        walk_s = time.perf_counter() - t0
        start_s, _ = timed([str(BIN / "ltpa"), "--version"])
        best = None
        for _ in range(args.repeat):
            out = base / "study" / "local_data.json"
            secs, proc = run_init(root, spec, out, "--no-header-checks")
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            best = secs if best is None else min(best, secs)
        print(proc.stdout.splitlines()[0])
        print("| what | s | x os.walk | x ltpa start-up |")
        print("|---|---:|---:|---:|")
        print(f"| os.walk of the tree ({n_files:,} files) | {walk_s:.2f} | 1.00 | "
              f"{walk_s / start_s:.2f} |")
        print(f"| `ltpa --version` (start-up) | {start_s:.2f} | {start_s / walk_s:.2f} | 1.00 |")
        print(f"| `ltpa init --no-header-checks`, {args.scans:,} scans x {args.atlases} "
              f"atlases | {best:.2f} | {best / walk_s:.2f} | {best / start_s:.2f} |")
        verdict = "met" if best <= TARGET_S else "MISSED"
        print(f"target (--no-header-checks): <= {TARGET_S:g} s: {verdict}")
        if args.default_scans:
            rows = default_mode(base, spec, args.default_scans, args.atlases, args.scans)
            if rows is None:
                return 1
            print("| default mode | s | |")
            print("|---|---:|---:|")
            print("\n".join(rows))
        return 0 if best <= TARGET_S else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

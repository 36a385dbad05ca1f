"""`ltpa init` over a generated BIDS-derivatives tree: 10,000 scans x 3 atlases (target: 10 s).

    python benchmarks/init_bench.py [--scans 10000] [--atlases 3] [--repeat 1] [--keep DIR]

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


def make_tree(root: Path, n_scans: int, n_atlases: int) -> None:
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
            (d / f"{stem}_desc-qsdr_streamlines.trk").touch()
            for k in range(n_atlases):
                (d / f"{stem}_seg-a{k}_dseg.nii.gz").touch()
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    for k in range(n_atlases):
        (root / f"atlas-a{k}_dseg.tsv").write_text("index\tname\n1\tA\n2\tB\n")


def timed(cmd, **kw) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return time.perf_counter() - t0, proc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=10_000)
    ap.add_argument("--atlases", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--keep", metavar="DIR", default=None,
                    help="make the tree in DIR and keep it (default: a temp folder)")
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
            shutil.rmtree(out.parent, ignore_errors=True)
            out.parent.mkdir(parents=True)
            secs, proc = timed([str(BIN / "ltpa"), "init", str(root), "--spec", str(spec),
                                "-o", str(out), "--no-header-checks"])
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
        print(f"target: <= {TARGET_S:g} s: {verdict}")
        return 0 if best <= TARGET_S else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fixed cost per job: a 100-small-scan study run at --cores 1, wall time / jobs (#12.4).

    python benchmarks/job_cost.py [--scans 100] [--repeat 1]

The study is the demo's structure with tiny scans (a few streamlines each, 2 atlases, a
pkl.trk: 4 jobs per scan, QC off), so a job's time is almost all fixed cost: Snakemake's
own bookkeeping plus whatever the job pays before and after its work. Measured in the same
run, each from a fresh copy of the study with no output:

  * ltpa          snakemake --cores 1 (jobs through the warm job server, ltpa-job)
  * fresh process the same with LTPA_JOB_SERVER=0: each job imports ltpa, numpy, nibabel,
                  numba in a new Python (what every job paid before the job server)
  * plain         a plain Snakefile with the same number of jobs, each `touch {output}`:
                  Snakemake's own cost per job, the floor

Per-job fixed cost = (wall - start-up) / jobs, start-up being the same command's dry run
with every output present. Target: <= 0.15 s per job for ltpa.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = REPO / ".venv" / "bin"
TARGET = 0.15


def run(cmd, env=None, cwd=None):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def n_jobs(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("total"):
            return int(line.split()[1])
    raise SystemExit("no job count in the dry run")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=100, help="scans in the study (default 100)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per variant, min taken (default 1)")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from ltpa.demo.small import make_demo

    root = Path(tempfile.mkdtemp(prefix="ltpa-jobcost-"))
    try:
        template = root / "template"
        make_demo(template, n_scans=a.scans, seed=2, n_per_side=2, n_background=1)
        env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
        snakemake = str(BIN / "snakemake")
        rows = {}

        def ltpa_run(name, extra_env):
            best = None
            for r in range(a.repeat):
                study = root / f"{name}{r}"
                shutil.copytree(template, study)
                cmd = [snakemake, "-s", str(REPO / "workflow" / "Snakefile"), "-d",
                       str(root / f"work_{name}{r}"), "--cores", "1", "--config",
                       f"local_data={study / 'local_data.json'}", "qc=False"]
                jobs = n_jobs(run(cmd + ["-n", "-q", "rules"], env=env)[1]) - 1  # less `all`
                wall, _ = run(cmd, env=dict(env, **extra_env))
                start, _ = run(cmd + ["-n"], env=env)
                per_job = (wall - start) / jobs
                if best is None or per_job < best[2]:
                    best = (wall, jobs, per_job, start)
            rows[name] = best

        # the first ltpa run also compiles nothing new: kernels are cached by numba
        ltpa_run("ltpa", {})
        ltpa_run("fresh process", {"LTPA_JOB_SERVER": "0"})
        # plain: the same number of jobs, each a touch
        plain = root / "plain"
        plain.mkdir()
        jobs = rows["ltpa"][1]
        (plain / "Snakefile").write_text(
            f"rule all:\n    input: expand('out/{{i}}.txt', i=range({jobs}))\n\n"
            "rule one:\n    output: 'out/{i}.txt'\n    shell: 'touch {output}'\n")
        best = None
        for _ in range(a.repeat):
            shutil.rmtree(plain / "out", ignore_errors=True)
            shutil.rmtree(plain / ".snakemake", ignore_errors=True)
            wall, _ = run([snakemake, "--cores", "1"], env=env, cwd=plain)
            start, _ = run([snakemake, "--cores", "1", "-n"], env=env, cwd=plain)
            per_job = (wall - start) / jobs
            if best is None or per_job < best[2]:
                best = (wall, jobs, per_job, start)
        rows["plain"] = best

        print(f"{a.scans} small scans, --cores 1, QC off ({os.cpu_count()} CPUs)")
        print(f"{'variant':<15} {'jobs':>5} {'wall s':>8} {'start s':>8} {'per job s':>10}")
        for name, (wall, jobs, per_job, start) in rows.items():
            print(f"{name:<15} {jobs:>5} {wall:>8.1f} {start:>8.1f} {per_job:>10.3f}")
        mine = rows["ltpa"][2]
        print(f"ltpa per job: {mine:.3f} s, {rows['fresh process'][2] / mine:.1f}x less than a "
              f"fresh process per job, {mine - rows['plain'][2]:.3f} s above Snakemake's own "
              f"(touch) cost; target <= {TARGET} s: {'PASS' if mine <= TARGET else 'FAIL'}")
        return 0 if mine <= TARGET else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

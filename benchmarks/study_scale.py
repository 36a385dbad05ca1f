#!/usr/bin/env python3
"""How the workflow's dry run and `ltpa status` scale with the number of scans.

    python benchmarks/study_scale.py                           # 100,1000,3000,10000 scans
    python benchmarks/study_scale.py --sizes 100,1000,3000 --timeout 600
    python benchmarks/study_scale.py --sizes 1000 --repeat 3   # min wall of 3 runs each
    python benchmarks/study_scale.py --rev HEAD                # the committed workflow, not
                                                               # the (changing) working tree

What is compared: the workflow (workflow/Snakefile, qc=False) against a plain Snakefile
with the same jobs, both dry runs of the same generated study, measured in the same run.
The workflow's rules have output patterns like ``{prefix}{scan}{suffix}`` whose wildcard
constraints are regex alternations over every output of the study (common.smk
``constraints()``, ltpa.study.targets ``pinned_alternation``), so each match costs O(outputs)
and a dry run O(N^2); the plain Snakefile's patterns (``{scan}/{scan}.pkl``, ...) cost
O(1) per match. Targets: workflow within 1.5x of the plain Snakefile at 1,000, 3,000 and
10,000 scans (start-up subtracted from both), peak RSS <= 2 GB at 10,000 scans, and
`ltpa status` linear in the number of scans.

Studies (cached under benchmarks/out/studies/N<scans>/, git-ignored; reused when their
study.json marker matches, --regenerate to rebuild): `ltpa demo` is run once (4 scans,
benchmarks/out/studies/demo/) for real small files; a study of N scans has one folder per
scan ``sub-00001/`` ... holding hard links (symbolic links if the file system refuses) to
a demo scan's .trk (``<scan>/<scan>.trk``) and atlases (``<scan>/<scan>.scale<k>.nii.gz``
for k in 33, 60, 125, 250, 500: the demo's scale33 atlas for 33, its scale60 atlas for the
others), and ``atlases/scale<k>.graphml`` links to the demo graphml. Its local_data.json
has the demo's structure (dsi2's field names) with N scans, pkl_path ``<scan>/<scan>.pkl``,
pkl_trk_path ``<scan>/<scan>.pkl.trk`` and 5 track_labels entries (Lausanne2008, numpy_path
``<scan>/scale<k>.npy``): 7 outputs per scan, 7N + 1 jobs with the target rule. No output
exists, so every job is to run. The plain Snakefile is written to ``<study>/plain.smk``
(scan ids read from the study's local_data.json; rules index, export and label, each
``touch {output}``) and run with ``-d <study>``.

Code measured: by default the live checkout (workflow/Snakefile of this repository, the ltpa
the venv imports); with --rev REV, workflow/, config/ and src/ of commit REV extracted with
git archive into benchmarks/out/trees/rev_<sha>/; with --snapshot, a copy of the checkout's
made at the start. With a copy the children run with PYTHONPATH=<copy>/src, so they import
its ltpa (checked, and reported). The report gives a fingerprint of the measured files at
the start and end of the run, and a note when they changed during it.

Measured, each run as its own subprocess (stdin closed), per size N:
  * start-up (once, on the 1-scan study N1, min of max(3, --repeat) runs): ``snakemake -n
    -q`` of the plain Snakefile and of the workflow, and ``ltpa status``: subtracted before
    ratios and per-scan times;
  * plain dry run:    snakemake -s <study>/plain.smk -d <study> -n -q --cores 1
  * workflow dry run: snakemake -s workflow/Snakefile -d <fresh empty work dir> -n -q
                      --cores 1 --config local_data=<study>/local_data.json qc=False
  * status:           ltpa status <study>/local_data.json --tsv  (exit code 1 = outputs
                      missing, expected; its line count is checked against 7N outputs)
  * jobs: the "total" line of the job stats of an extra, untimed dry run with
    ``-q rules`` (prints the job stats but not each job) for each Snakefile; the
    workflow's is skipped after a timed-out or failed workflow dry run, when that took
    longer than --count-max (default 300 s), or with --no-count.
Wall time = time.perf_counter() around the subprocess (interpreter start-up and imports
included); CPU time = user + system time of the subprocess and its children (os.wait4()
rusage), reported as a second ratio since other processes on the machine inflate wall times.
Peak RSS = GNU ``/usr/bin/time -f "%e %M"`` of the child (os.wait4()'s rusage if
/usr/bin/time is absent); not known for a killed run. A run longer than --timeout (default
1800 s) is killed (its process group) and reported as ">timeout"; once a command timed out,
the larger sizes are not run for it (reported as ">timeout", with a note).

Output: one markdown table (scans, jobs, plain and workflow dry-run seconds, their ratio with
start-up subtracted, the workflow's peak RSS, status seconds and ms per scan with start-up
subtracted) and the target checks, printed and written to
benchmarks/out/study_scale_<timestamp>.md. Exit status 0 unless this script itself fails
(a workflow error is reported in the table and its stderr saved next to the table).
Standard library only; the venv's executables are run (--bin, default /work/main/.venv/bin).
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from measure import measure  # benchmarks/measure.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCALES = (33, 60, 125, 250, 500)
OUTPUTS_PER_SCAN = 2 + len(SCALES)  # pkl, pkl.trk, one npy per atlas
GENERATOR_VERSION = 2  # 2: the demo's .tck and b0 scans are not linked

PLAIN_SMK = '''\
# Written by benchmarks/study_scale.py: the jobs of the ltpa workflow (qc=False) for this
# study, with plain output patterns. Run with: snakemake -s plain.smk -d <this folder>.
import json
import os

with open(os.path.join(workflow.basedir, "local_data.json")) as _fh:
    SCANS = [s["scan_id"] for s in json.load(_fh)]
SCALES = {scales!r}


wildcard_constraints:
    scan=r"[^/]+",
    k=r"\\d+",


rule all:
    input:
        expand("{{scan}}/{{scan}}.pkl", scan=SCANS),
        expand("{{scan}}/{{scan}}.pkl.trk", scan=SCANS),
        expand("{{scan}}/scale{{k}}.npy", scan=SCANS, k=SCALES),


rule index:
    input:
        trk="{{scan}}/{{scan}}.trk",
    output:
        "{{scan}}/{{scan}}.pkl",
    shell:
        "touch {{output}}"


rule export:
    input:
        trk="{{scan}}/{{scan}}.trk",
    output:
        "{{scan}}/{{scan}}.pkl.trk",
    shell:
        "touch {{output}}"


rule label:
    input:
        trk="{{scan}}/{{scan}}.trk",
        atlas="{{scan}}/{{scan}}.scale{{k}}.nii.gz",
    output:
        "{{scan}}/scale{{k}}.npy",
    shell:
        "touch {{output}}"
'''


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- studies
def ensure_demo(bin_dir: Path, studies: Path) -> Path:
    demo = studies / "demo"
    if (demo / "local_data.json").exists():
        return demo
    if demo.exists():
        shutil.rmtree(demo)
    argv = [str(bin_dir / "ltpa"), "demo", str(demo), "--scans", "4"]  # the fewest it makes
    log(f"[demo] {' '.join(argv)}")
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return demo


def _link(src: Path, dst: Path, counts: dict) -> None:
    """Hard link dst -> src; a symbolic link (absolute) if the file system refuses."""
    try:
        os.link(src, dst)
        counts["hard"] += 1
    except OSError:
        os.symlink(os.path.abspath(src), dst)
        counts["symbolic"] += 1


def _scale_of(label: dict):
    params = label.get("parameters") or {}
    return params.get("scale")


def scan_id_of(i: int, n: int) -> str:
    return f"sub-{i:0{max(5, len(str(n)))}d}"


def ensure_study(n: int, demo: Path, studies: Path, regenerate: bool = False) -> Path:
    """The N-scan study folder (made, or reused when its marker matches)."""
    dest = studies / f"N{n}"
    want = {"generator": GENERATOR_VERSION, "scans": n, "scales": list(SCALES)}
    marker = dest / "study.json"
    if not regenerate and marker.exists() and (dest / "local_data.json").exists():
        try:
            have = json.loads(marker.read_text())
        except ValueError:
            have = {}
        if all(have.get(k) == v for k, v in want.items()):
            write_plain_smk(dest)
            return dest
    t0 = time.perf_counter()
    tmp = studies / f"N{n}.tmp"
    for d in (tmp, dest):
        if d.exists():
            shutil.rmtree(d)
    tmp.mkdir(parents=True)
    demo_scans = json.loads((demo / "local_data.json").read_text())
    template = demo_scans[0]
    template_label = template["track_labels"][0]
    # per demo scan: its trk and its atlas for each scale (scale33 -> 33, scale60 -> the rest)
    sources = []
    for s in demo_scans:
        if not str(s.get("trk_file", "")).endswith(".trk") or s.get("fib_file"):
            continue  # the demo's .tck scan, and its b0 scan (atlases made by the workflow)
        by_scale = {_scale_of(lab): lab for lab in s["track_labels"]}
        small, big = by_scale[33], by_scale[60]
        sources.append({
            "trk": demo / s["trk_file"],
            "atlas": {k: demo / (small if k == 33 else big)["volume_path"] for k in SCALES},
        })
    first = {_scale_of(lab): lab for lab in template["track_labels"]}
    graphml = {k: demo / first[33 if k == 33 else 60]["graphml_path"] for k in SCALES}
    counts = {"hard": 0, "symbolic": 0}
    (tmp / "atlases").mkdir()
    for k in SCALES:
        _link(graphml[k], tmp / "atlases" / f"scale{k}.graphml", counts)
    groups = ["control", "patient"]
    scans = []
    for i in range(1, n + 1):
        sid = scan_id_of(i, n)
        src = sources[(i - 1) % len(sources)]  # spread the links over the demo's files
        (tmp / sid).mkdir()
        _link(src["trk"], tmp / sid / f"{sid}.trk", counts)
        labels = []
        for k in SCALES:
            _link(src["atlas"][k], tmp / sid / f"{sid}.scale{k}.nii.gz", counts)
            lab = copy.deepcopy(template_label)
            lab["parameters"] = dict(lab.get("parameters") or {}, scale=k)
            lab["graphml_path"] = f"atlases/scale{k}.graphml"
            lab["numpy_path"] = f"{sid}/scale{k}.npy"
            lab["volume_path"] = f"{sid}/{sid}.scale{k}.nii.gz"
            labels.append(lab)
        scan = copy.deepcopy(template)  # the demo's fields, in the demo's order
        scan.update({
            "scan_id": sid,
            "subject_id": f"subj{i}",
            "scan_group": groups[(i - 1) % 2],
            "trk_file": f"{sid}/{sid}.trk",
            "pkl_path": f"{sid}/{sid}.pkl",
            "pkl_trk_path": f"{sid}/{sid}.pkl.trk",
            "track_labels": labels,
        })
        if isinstance(scan.get("attributes"), dict):
            scan["attributes"] = dict(scan["attributes"], age=20 + i % 60,
                                      sex="F" if i % 2 else "M")
        scans.append(scan)
    (tmp / "local_data.json").write_text(json.dumps(scans, indent=2) + "\n")
    (tmp / "study.json").write_text(json.dumps(dict(want, links=counts), indent=2) + "\n")
    tmp.rename(dest)
    write_plain_smk(dest)
    log(f"[study] N{n}: {n} scans in {dest} ({counts['hard']} hard links, "
        f"{counts['symbolic']} symbolic links; {time.perf_counter() - t0:.1f} s)")
    return dest


def write_plain_smk(study: Path) -> Path:
    path = study / "plain.smk"
    text = PLAIN_SMK.format(scales=list(SCALES))
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


# --------------------------------------------------------------------------- measuring
def run_cmd(argv, timeout, repeat, ok_rc=(0,), **kw):
    runs = []
    for _ in range(repeat):
        r = measure(argv, timeout, **kw)
        runs.append(r)
        if r["timed_out"] or r["rc"] not in ok_rc:
            return r
    r = dict(min(runs, key=lambda x: x["wall"]))
    r["rss_mb"] = max(x["rss_mb"] for x in runs)
    r["cpu"] = min(x["cpu"] for x in runs)
    return r


def total_jobs(text):
    m = re.findall(r"^total\s+(\d+)\s*$", text, flags=re.M)
    return int(m[-1]) if m else None


class Commands:
    def __init__(self, bin_dir: Path, tree: Path, env, work_root: Path, keep_work: bool):
        self.snakemake = str(bin_dir / "snakemake")
        self.ltpa = str(bin_dir / "ltpa")
        self.python = str(bin_dir / "python")
        self.snakefile = str(tree / "workflow" / "Snakefile")
        self.env = env  # None: this environment; else PYTHONPATH=<tree>/src
        self.work_root = work_root
        self.keep_work = keep_work

    def plain(self, study, quiet=("-q",)):
        return [self.snakemake, "-s", str(study / "plain.smk"), "-d", str(study), "-n",
                *quiet, "--cores", "1"]

    def workflow(self, study, workdir, quiet=("-q",)):
        return [self.snakemake, "-s", self.snakefile, "-d", str(workdir), "-n", *quiet,
                "--cores", "1", "--config", f"local_data={study / 'local_data.json'}",
                "qc=False"]

    def status(self, study):
        return [self.ltpa, "status", str(study / "local_data.json"), "--tsv"]

    def workdir(self):
        self.work_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="wf_", dir=self.work_root))

    def done(self, workdir):
        if not self.keep_work:
            shutil.rmtree(workdir, ignore_errors=True)


def run_workflow(cmds, study, timeout, repeat, quiet=("-q",)):
    runs = []
    for _ in range(repeat):
        wd = cmds.workdir()  # fresh: no .snakemake records from an earlier run
        try:
            r = measure(cmds.workflow(study, wd, quiet), timeout, env=cmds.env)
        finally:
            cmds.done(wd)
        runs.append(r)
        if r["timed_out"] or r["rc"] != 0:
            return r
    r = dict(min(runs, key=lambda x: x["wall"]))
    r["rss_mb"] = max(x["rss_mb"] for x in runs)
    r["cpu"] = min(x["cpu"] for x in runs)
    return r


def run_status(cmds, study, timeout, repeat):
    with tempfile.TemporaryDirectory(prefix="ltpa_status_") as td:
        out = os.path.join(td, "status.tsv")
        r = run_cmd(cmds.status(study), timeout, repeat, ok_rc=(0, 1), stdout_path=out,
                    env=cmds.env)
        lines = 0
        if os.path.exists(out):
            with open(out, "rb") as fh:
                lines = sum(1 for _ in fh)
        r["outputs"] = max(lines - 1, 0)  # minus the header
    return r


# --------------------------------------------------------------------------- report
def ok(r):
    return r is not None and not r.get("timed_out") and not r.get("skipped") \
        and r["rc"] in r.get("ok_rc", (0,))


def fmt_s(r):
    if r is None:
        return "–"
    if r.get("timed_out") or r.get("skipped"):
        return f">{r['timeout']:g} (timeout{'*' if r.get('skipped') else ''})"
    if r["rc"] not in r.get("ok_rc", (0,)):
        return f"error (rc {r['rc']})"
    return f"{r['wall']:.2f}"


def fmt_mb(r):
    if r is None or r.get("skipped") or r.get("timed_out"):
        return "–"  # a killed run's peak is not known
    return f"{r['rss_mb']:.0f}"


def net(r, start):
    """Wall minus start-up (None if not measured; a lower bound for a timeout)."""
    if r is None or start is None or (not ok(r) and not (r.get("timed_out") or r.get("skipped"))):
        return None
    w = r["timeout"] if (r.get("timed_out") or r.get("skipped")) else r["wall"]
    return w - start["wall"]


def ratio_text(wf, plain, wf0, plain0):
    a, b = net(wf, wf0), net(plain, plain0)
    if a is None or b is None or not ok(plain):
        return "–", None
    if b < 0.05:
        return "n/a (plain ≈ start-up)", None
    x = a / b
    if not ok(wf):
        return f">{x:.1f}", (x, True)
    return f"{x:.2f}", (x, False)


def cpu_ratio_text(wf, plain, wf0, plain0):
    if not (ok(wf) and ok(plain)) or wf0 is None or plain0 is None:
        return "–"
    a, b = wf["cpu"] - wf0["cpu"], plain["cpu"] - plain0["cpu"]
    return "n/a" if b < 0.05 else f"{a / b:.2f}"


def exponent(n1, t1, n2, t2):
    if t1 is None or t2 is None or t1 <= 0.05 or t2 <= 0 or n1 == n2:
        return None
    return math.log(t2 / t1) / math.log(n2 / n1)


def git(*args):
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=60).stdout
    except OSError:
        return ""


def git_info():
    """(HEAD, a description of uncommitted changes under src/, workflow/ and config/)."""
    head = git("rev-parse", "--short", "HEAD").strip() or "?"
    dirty = [ln[3:] for ln in git("status", "--porcelain", "--", "src", "workflow",
                                  "config").splitlines() if ln.strip()]
    if not dirty:
        return head, "src/, workflow/ and config/ as committed"
    more = f", +{len(dirty) - 6} more" if len(dirty) > 6 else ""
    return head, f"uncommitted changes: {', '.join(dirty[:6])}{more}"


TREE_PARTS = ("workflow", "config", "src")


def tree_fingerprint(root: Path) -> str:
    """sha256 over the workflow's and the package's files (paths, sizes, contents)."""
    h = hashlib.sha256()
    for part in TREE_PARTS:
        for dirpath, dirnames, filenames in os.walk(root / part):
            dirnames[:] = sorted(d for d in dirnames
                                 if d != "__pycache__" and not d.endswith(".egg-info"))
            for name in sorted(filenames):
                f = Path(dirpath) / name
                if f.suffix in (".pyc", ".so"):
                    continue
                try:
                    data = f.read_bytes()
                except OSError:
                    continue
                h.update(str(f.relative_to(root)).encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:12]


def prepare_tree(a, trees: Path, stamp: str):
    """(root, description, env) of the workflow and package the runs use.

    live (default): this checkout as it is while the runs go (it may change under them);
    --snapshot: a copy of this checkout's workflow/, config/ and src/ made at the start;
    --rev REV: workflow/, config/ and src/ of commit REV (git archive). With a copy, the
    children run with PYTHONPATH=<copy>/src so that they import its ltpa, not this one.
    """
    if not a.rev and not a.snapshot:
        return REPO, "live checkout " + REPO.as_posix(), None
    if a.rev:
        sha = git("rev-parse", "--verify", f"{a.rev}^{{commit}}").strip()
        if not sha:
            raise SystemExit(f"study_scale: --rev {a.rev!r} is not a commit of {REPO}")
        dest = trees / f"rev_{sha[:12]}"
        what = f"commit {sha[:12]} (--rev {a.rev}), extracted to {dest}"
        if not (dest / "workflow" / "Snakefile").exists():
            tmp = trees / f"rev_{sha[:12]}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            p = subprocess.Popen(["git", "-C", str(REPO), "archive", "--format=tar", sha,
                                  *TREE_PARTS], stdout=subprocess.PIPE)
            with tarfile.open(fileobj=p.stdout, mode="r|") as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, filter="data")
                else:
                    tf.extractall(tmp)
            if p.wait() != 0:
                raise SystemExit(f"study_scale: git archive {sha} failed")
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
    else:
        dest = trees / f"snapshot_{stamp}"
        head, dirty = git_info()
        what = f"snapshot of the checkout at the start (HEAD {head}, {dirty}), in {dest}"
        for part in TREE_PARTS:
            shutil.copytree(REPO / part, dest / part, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(dest / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return dest, what, env


def imported_ltpa(cmds) -> str:
    """Where the children's ``import ltpa`` comes from."""
    try:
        r = subprocess.run([cmds.python, "-c", "import ltpa; print(ltpa.__file__)"],
                           capture_output=True, text=True, timeout=120, env=cmds.env)
        return r.stdout.strip() or f"? ({r.stderr.strip().splitlines()[-1:]})"
    except OSError as e:
        return f"? ({e})"


def snakemake_version(cmds):
    try:
        return subprocess.run([cmds.snakemake, "--version"], capture_output=True, text=True,
                              timeout=120).stdout.strip()
    except OSError:
        return "?"


def build_report(a, sizes, rows, start, cmds, started, notes, tree):
    L = []
    L.append(f"# Study scale: workflow dry run and `ltpa status` vs scans "
             f"({started:%Y-%m-%d %H:%M})")
    L.append("")
    L.append(f"- code: {tree['what']}; tree fingerprint {tree['start']} "
             + (f"at the start, {tree['end']} at the end" if tree["end"] != tree["start"]
                else "(unchanged during the run)")
             + f"; checkout HEAD {tree['head']} ({tree['dirty']}) at the start; "
             f"children import ltpa from {tree['ltpa']}")
    L.append(f"- snakemake {snakemake_version(cmds)}; Python {platform.python_version()} "
             f"(this script); {os.cpu_count()} cores; {platform.node()}; load average at the "
             f"end {tree['load']}")
    L.append(f"- `{' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}`: timeout {a.timeout:g} s "
             f"per run, repeat {a.repeat} (min wall, min CPU, max RSS); {len(SCALES)} atlases "
             f"per scan, {OUTPUTS_PER_SCAN} outputs per scan; studies in {a.studies}")
    s = start
    L.append(f"- start-up (1-scan study, min of {max(3, a.repeat)} runs, subtracted below): "
             f"plain {fmt_s(s['plain'])} s ({s['plain'].get('cpu', 0):.2f} s CPU, "
             f"{fmt_mb(s['plain'])} MB), workflow {fmt_s(s['workflow'])} s "
             f"({s['workflow'].get('cpu', 0):.2f} s CPU, {fmt_mb(s['workflow'])} MB), status "
             f"{fmt_s(s['status'])} s")
    L.append("")
    L.append("| scans | jobs | plain dry-run s | workflow dry-run s | ratio (− start-up) "
             "| ratio of CPU s (− start-up) | plain peak RSS MB | workflow peak RSS MB "
             "| status s | status ms/scan (− start-up) |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        r = rows[n]
        jobs = r.get("jobs_plain")
        jw = r.get("jobs_workflow")
        jtxt = "?" if jobs is None else f"{jobs:,}"
        if jw is not None and jw != jobs:
            jtxt += f" (workflow {jw:,})"
        rtxt, _ = ratio_text(r["workflow"], r["plain"], s["workflow"], s["plain"])
        st = net(r["status"], s["status"])
        per = "–" if st is None else f"{st / n * 1000:.2f}" + ("" if ok(r["status"]) else "+")
        ctxt = cpu_ratio_text(r["workflow"], r["plain"], s["workflow"], s["plain"])
        L.append(f"| {n:,} | {jtxt} | {fmt_s(r['plain'])} | {fmt_s(r['workflow'])} | {rtxt} "
                 f"| {ctxt} | {fmt_mb(r['plain'])} | {fmt_mb(r['workflow'])} "
                 f"| {fmt_s(r['status'])} | {per} |")
    L.append("")
    # growth exponents (start-up subtracted): 1 = linear, 2 = quadratic
    grow = []
    for key, label in (("plain", "plain"), ("workflow", "workflow"), ("status", "status")):
        parts = []
        for n1, n2 in zip(sizes, sizes[1:]):
            if not (ok(rows[n1][key]) and ok(rows[n2][key])):
                continue
            e = exponent(n1, net(rows[n1][key], s[key]), n2, net(rows[n2][key], s[key]))
            if e is not None:
                parts.append(f"{n1:,}→{n2:,}: {e:.2f}")
        if parts:
            grow.append(f"{label} " + ", ".join(parts))
    if grow:
        L.append("Growth exponent of (time − start-up) between sizes (1 = linear, 2 = "
                 "quadratic): " + "; ".join(grow) + ".")
        L.append("")
    L.append("Targets:")
    for n in sizes:
        if n < 1000:
            continue
        r = rows[n]
        rtxt, val = ratio_text(r["workflow"], r["plain"], s["workflow"], s["plain"])
        if val is None:
            unmeasured = (not ok(r["workflow"]) and not r["workflow"].get("timed_out")
                          and not r["workflow"].get("skipped"))
            verdict = "not measured" if unmeasured else "n/a"
            if r["workflow"] and (r["workflow"].get("timed_out") or r["workflow"].get("skipped")):
                verdict = "FAIL (timeout)"
        else:
            x, lower_bound = val
            verdict = "FAIL" if lower_bound or x > 1.5 else "PASS"
        L.append(f"- ratio ≤ 1.5 at {n:,} scans: {rtxt} → {verdict}")
    if 10000 in rows:
        w = rows[10000]["workflow"]
        if w.get("skipped"):
            L.append("- workflow peak RSS ≤ 2048 MB at 10,000 scans: not measured (skipped "
                     "after a timeout) → FAIL")
        else:
            verdict = "PASS" if ok(w) and w["rss_mb"] <= 2048 else "FAIL"
            L.append(f"- workflow peak RSS ≤ 2048 MB at 10,000 scans: {fmt_mb(w)} MB → {verdict}")
    else:
        big = [n for n in sizes if ok(rows[n]["workflow"])]
        extra = (f" (largest measured: {big[-1]:,} scans, "
                 f"{rows[big[-1]]['workflow']['rss_mb']:.0f} MB)" if big else "")
        L.append(f"- workflow peak RSS ≤ 2048 MB at 10,000 scans: not measured{extra}")
    lin = [n for n in sizes if n >= 1000 and ok(rows[n]["status"])]
    if len(lin) >= 2:
        lo, hi = lin[0], lin[-1]
        p_lo = net(rows[lo]["status"], s["status"]) / lo * 1000
        p_hi = net(rows[hi]["status"], s["status"]) / hi * 1000
        q = p_hi / p_lo if p_lo > 0 else float("inf")
        L.append(f"- `ltpa status` linear (ms/scan at {hi:,} within 2x of {lo:,}): "
                 f"{p_hi:.2f} vs {p_lo:.2f} ms/scan = {q:.2f}x → {'PASS' if q <= 2 else 'FAIL'}")
    else:
        L.append("- `ltpa status` linear: needs two sizes ≥ 1,000 with a status measurement")
    L.append("")
    L.append("Columns: wall seconds of the whole subprocess; ratio = (workflow − workflow "
             "start-up) / (plain − plain start-up), of wall times (the targets) and of CPU times "
             "(user + system: less sensitive to other processes on the machine); "
             "status ms/scan = (status − status start-up) / scans; "
             "jobs = \"total\" of the plain Snakefile's job stats (the "
             "workflow's when it differs); peak RSS = GNU time %M.")
    if any(rows[n][k] and rows[n][k].get("skipped") for n in sizes for k in rows[n]
           if isinstance(rows[n][k], dict)):
        L.append("\\* not run: the same command timed out at a smaller size.")
    if notes:
        L.append("")
        L.append("Notes:")
        L += [f"- {x}" for x in notes]
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,3000,10000",
                    help="comma-separated scan counts (default 100,1000,3000,10000)")
    ap.add_argument("--timeout", type=float, default=1800, help="per run, seconds (default 1800)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per measurement; min wall and max peak RSS are reported")
    ap.add_argument("--bin", default=str(REPO / ".venv" / "bin"),
                    help="folder with the snakemake and ltpa executables (default .venv/bin)")
    ap.add_argument("--out", default=str(HERE / "out"), help="where the table is written")
    ap.add_argument("--studies", default=None,
                    help="cache of generated studies (default <out>/studies)")
    ap.add_argument("--regenerate", action="store_true", help="rebuild the cached studies")
    ap.add_argument("--no-count", action="store_true",
                    help="do not count the workflow's jobs (the extra, untimed dry run)")
    ap.add_argument("--count-max", type=float, default=300,
                    help="count the workflow's jobs only when its timed dry run took at most "
                         "this many seconds (default 300; the count is a second dry run)")
    code = ap.add_mutually_exclusive_group()
    code.add_argument("--rev", default="",
                      help="measure workflow/, config/ and src/ of this commit (git archive "
                           "into <out>/trees/), e.g. --rev HEAD; default: the live checkout")
    code.add_argument("--snapshot", action="store_true",
                      help="measure a copy of the checkout's workflow/, config/ and src/ made "
                           "at the start (others may edit the checkout during the run)")
    ap.add_argument("--keep-work", action="store_true",
                    help="keep the workflow's work folders (<out>/work/wf_*)")
    ap.add_argument("--print-jobs", action="store_true",
                    help="time the dry runs as users run them, printing every job (no -q); "
                         "default: -q, which hides Snakemake's per-job printing")
    a = ap.parse_args(argv)
    quiet = () if a.print_jobs else ("-q",)

    sizes = sorted({int(x) for x in a.sizes.replace(" ", "").split(",") if x})
    if not sizes or sizes[0] < 1:
        ap.error("--sizes: positive scan counts")
    out = Path(a.out).resolve()
    a.studies = Path(a.studies).resolve() if a.studies else out / "studies"
    a.studies.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(a.bin)
    for exe in ("snakemake", "ltpa"):
        if not os.access(bin_dir / exe, os.X_OK):
            ap.error(f"{bin_dir / exe} is not an executable (see --bin)")
    started = _dt.datetime.now()
    stamp = started.strftime("%Y%m%d_%H%M%S")
    head, dirty = git_info()
    root, what, env = prepare_tree(a, out / "trees", stamp)
    cmds = Commands(bin_dir, root, env, out / "work", a.keep_work)
    tree = {"what": what, "head": head, "dirty": dirty, "start": tree_fingerprint(root),
            "ltpa": imported_ltpa(cmds)}
    if env is not None and not tree["ltpa"].startswith(str(root)):
        raise SystemExit(f"study_scale: with PYTHONPATH={root / 'src'} the children still "
                         f"import ltpa from {tree['ltpa']}")
    log(f"[code] {what}; ltpa from {tree['ltpa']}")
    err_dir = out / f"study_scale_{stamp}_errors"
    notes = []

    def save_error(name, r):
        err_dir.mkdir(parents=True, exist_ok=True)
        p = err_dir / f"{name}.stderr.txt"
        p.write_text(r["stderr"])
        tail = [ln for ln in r["stderr"].strip().splitlines() if ln.strip()][-15:]
        log(f"  !! {name}: rc {r['rc']}; stderr saved to {p}; last lines:\n    "
            + "\n    ".join(tail))
        return p

    def tag(r, timeout):
        r["timeout"] = timeout
        return r

    demo = ensure_demo(bin_dir, a.studies)
    one = ensure_study(1, demo, a.studies, a.regenerate)
    studies = {n: ensure_study(n, demo, a.studies, a.regenerate) for n in sizes}

    log(f"[start-up] 1-scan study {one}")
    k0 = max(3, a.repeat)  # cheap, and subtracted from everything: min of at least 3 runs
    start = {
        "plain": tag(run_cmd(cmds.plain(one, quiet), a.timeout, k0), a.timeout),
        "workflow": tag(run_workflow(cmds, one, a.timeout, k0, quiet), a.timeout),
        "status": tag(run_status(cmds, one, a.timeout, k0), a.timeout),
    }
    start["status"]["ok_rc"] = (0, 1)
    for k, r in start.items():
        log(f"  {k}: {fmt_s(r)} s, {fmt_mb(r)} MB")
        if not ok(r):
            if not r["timed_out"]:
                p = save_error(f"startup_{k}", r)
                notes.append(f"start-up {k} failed (rc {r['rc']}), stderr in {p}")
            start[k] = None

    rows = {}
    timed_out = {}  # command -> smallest size that timed out
    for n in sizes:
        study = studies[n]
        row = rows[n] = {}
        log(f"[N={n}] {study}")
        # jobs of the plain Snakefile (untimed; `-q rules` prints the job stats only)
        r = measure(cmds.plain(study, ("-q", "rules")), a.timeout)
        row["jobs_plain"] = total_jobs(r["stderr"] + r["stdout"])
        if row["jobs_plain"] != OUTPUTS_PER_SCAN * n + 1:
            notes.append(f"{n} scans: the plain Snakefile has {row['jobs_plain']} jobs, "
                         f"expected {OUTPUTS_PER_SCAN * n + 1}")
        for key, fn, ok_rc in (
            ("plain", lambda: run_cmd(cmds.plain(study, quiet), a.timeout, a.repeat), (0,)),
            ("workflow", lambda: run_workflow(cmds, study, a.timeout, a.repeat, quiet), (0,)),
            ("status", lambda: run_status(cmds, study, a.timeout, a.repeat), (0, 1)),
        ):
            if key in timed_out:
                row[key] = {"skipped": True, "timeout": a.timeout, "rc": None, "ok_rc": ok_rc,
                            "rss_mb": 0.0}
                log(f"  {key}: skipped (timed out at {timed_out[key]} scans)")
                continue
            r = tag(fn(), a.timeout)
            r["ok_rc"] = ok_rc
            row[key] = r
            log(f"  {key}: {fmt_s(r)} s, {fmt_mb(r)} MB")
            if r["timed_out"]:
                timed_out.setdefault(key, n)
            elif not ok(r):
                p = save_error(f"N{n}_{key}", r)
                tail = [ln for ln in r["stderr"].strip().splitlines() if ln.strip()][-3:]
                notes.append(f"{n} scans: {key} failed (rc {r['rc']}); stderr in {p}; last "
                             f"lines: " + " / ".join(f"`{t.strip()}`" for t in tail))
        if ok(row["status"]) and row["status"]["outputs"] != OUTPUTS_PER_SCAN * n:
            notes.append(f"{n} scans: `ltpa status` listed {row['status']['outputs']} outputs, "
                         f"expected {OUTPUTS_PER_SCAN * n}")
        if not a.no_count and ok(row["workflow"]) and row["workflow"]["wall"] <= a.count_max:
            wd = cmds.workdir()
            try:
                r = measure(cmds.workflow(study, wd, ("-q", "rules")), a.timeout, env=cmds.env)
            finally:
                cmds.done(wd)
            row["jobs_workflow"] = total_jobs(r["stderr"] + r["stdout"])
            log(f"  jobs: plain {row['jobs_plain']}, workflow {row['jobs_workflow']}")
            if row["jobs_workflow"] is not None and row["jobs_workflow"] != row["jobs_plain"]:
                notes.append(f"{n} scans: the workflow has {row['jobs_workflow']} jobs, the "
                             f"plain Snakefile {row['jobs_plain']}")
        else:
            log(f"  jobs: plain {row['jobs_plain']} (the workflow's not counted)")

    for k, v in start.items():
        if v is None:
            start[k] = {"wall": 0.0, "rss_mb": 0.0, "rc": 0, "timeout": a.timeout}
            notes.append(f"the start-up {k} run failed: 0 s subtracted for {k}")
    tree["end"] = tree_fingerprint(root)
    if tree["end"] != tree["start"]:
        notes.append("the measured workflow/, config/ or src/ changed during the run (someone "
                     "edited the checkout): the rows may measure different code; use "
                     "--snapshot or --rev")
    try:
        tree["load"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        tree["load"] = "?"
    uncounted = [n for n in sizes
                 if ok(rows[n]["workflow"]) and rows[n].get("jobs_workflow") is None]
    if uncounted and not a.no_count:
        notes.append("the workflow's jobs were not counted at "
                     + ", ".join(f"{n:,}" for n in uncounted)
                     + f" scans (its dry run took longer than --count-max {a.count_max:.0f} s)")
    report = build_report(a, sizes, rows, start, cmds, started, notes, tree)
    if a.snapshot and not a.keep_work:
        shutil.rmtree(root, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"study_scale_{stamp}.md"
    path.write_text(report)
    print(report)
    print(f"(written to {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

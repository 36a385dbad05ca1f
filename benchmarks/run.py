#!/usr/bin/env python3
"""Benchmark ltpa's hashing/labeling against competitors, each in its own process.

    python benchmarks/run.py                     # sizes 100000,1000000
    python benchmarks/run.py --quick             # 100000 only
    python benchmarks/run.py --sizes 100000 --only nib_load,dsi2_label,ltpa_label

For each size it makes sure the synthetic data exist (benchmarks/make_data.py), runs every
candidate as a separate subprocess and records wall time and peak RSS, then prints one
table and writes it to benchmarks/out/results_<timestamp>.md.  At 10^5 it also runs the
differential check ltpa vs the dsi2 reference loops (if ltpa is installed).

Measurement: peak RSS = max resident set size of the child process as reported by
GNU ``/usr/bin/time -f "%e %M"`` (ru_maxrss of the waited-for child); if /usr/bin/time is
absent, os.wait4()'s rusage of the child is used (same kernel number).  Wall time is
time.perf_counter() around the whole subprocess (interpreter start-up and imports
included).  This script itself only needs the standard library.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from measure import TIME_BIN, measure  # benchmarks/measure.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CANDS = HERE / "cands"
SKIP_RC = 3

ORDER = [
    "read_bytes", "nib_load", "dipy_mapping", "dsi2_hash", "ltpa_index",
    "ltpa_index_nowrite", "dsi2_label", "dipy_connectivity", "mrtrix_tck2connectome",
    "ltpa_label", "snakemake_startup", "snakemake_scan", "snakemake_scan_noslurm", "write_bytes",
]

SLURM_TOOLS = {"sinfo", "squeue", "sacct", "sacctmgr", "scontrol", "sbatch", "srun", "scancel",
               "sshare", "salloc", "sattach", "sstat", "sprio", "sreport", "sdiag", "strigger"}


# --------------------------------------------------------------------------- measuring
def parse_phases(stdout):
    for line in reversed(stdout.splitlines()):
        if line.startswith("PHASES "):
            try:
                return json.loads(line[7:])
            except ValueError:
                return None
    return None


def fmt_phases(ph):
    if not ph:
        return ""
    parts = []
    for k, v in ph.items():
        if isinstance(v, float):
            parts.append(f"{k} {v:.2f}s")
        elif k in ("dipy",):
            parts.append(f"dipy {v}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- ltpa
def find_ltpa(args):
    """Return (cmd list, python for load_track_dataset, reason-if-absent)."""
    venv = REPO / ".venv" / "bin"
    if args.ltpa:
        cmd = shlex.split(args.ltpa)
        py = args.ltpa_python or (str(venv / "python") if (venv / "python").exists()
                                  else sys.executable)
    elif (venv / "ltpa").exists():
        cmd, py = [str(venv / "ltpa")], str(venv / "python")
    elif (venv / "python").exists() and subprocess.run(
            [str(venv / "python"), "-c", "import ltpa.__main__"],
            capture_output=True, timeout=60).returncode == 0:
        cmd, py = [str(venv / "python"), "-m", "ltpa"], str(venv / "python")
    elif shutil.which("ltpa"):
        cmd, py = [shutil.which("ltpa")], args.ltpa_python or sys.executable
    else:
        return None, None, "n/a (ltpa not installed)"
    if args.ltpa_python:
        py = args.ltpa_python
    try:
        r = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    except OSError as e:
        return None, None, f"n/a (ltpa CLI not runnable: {e})"
    if r.returncode != 0:
        tail = ((r.stderr or r.stdout).strip().splitlines() or ["?"])[-1][:120]
        return None, None, (f"n/a (ltpa CLI broken: `{' '.join(cmd)} --help` "
                            f"rc={r.returncode}: {tail})")
    return cmd, py, None


def ltpa_supports(cmd, sub, flag):
    try:
        r = subprocess.run(cmd + [sub, "--help"], capture_output=True, text=True, timeout=120)
    except OSError:
        return False
    return r.returncode == 0 and flag in (r.stdout + r.stderr)


# --------------------------------------------------------------------------- main
def ensure_data(n, data_dir, want_tck, py):
    trk = data_dir / f"synth_{n}.trk"
    tck = data_dir / f"synth_{n}.tck"
    atlas = data_dir / "atlas83.nii.gz"
    gml = data_dir / "atlas83.graphml"
    if trk.exists() and atlas.exists() and gml.exists() and (tck.exists() or not want_tck):
        return trk, (tck if tck.exists() else None), atlas, gml
    argv = [py, str(HERE / "make_data.py"), "--n", str(n), "--out", str(data_dir)]
    if not want_tck:
        argv.append("--no-tck")
    print(f"[data] generating: {' '.join(argv)}", flush=True)
    subprocess.run(argv, check=True)
    return trk, (tck if tck.exists() else None), atlas, gml


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000",
                    help="comma-separated streamline counts (default 100000,1000000)")
    ap.add_argument("--quick", action="store_true", help="only 100000")
    ap.add_argument("--only", default="", help="comma-separated candidate names "
                    f"(default all: {','.join(ORDER)})")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for the Python candidates and make_data.py")
    ap.add_argument("--ltpa", default="", help="ltpa command line to use, e.g. "
                    "'/work/main/.venv/bin/python -m ltpa' (default: auto-detect)")
    ap.add_argument("--ltpa-python", default="",
                    help="python that can `import ltpa` (for the differential check)")
    ap.add_argument("--data", default=str(HERE / "data"))
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--timeout", type=float, default=1800, help="per run, seconds")
    ap.add_argument("--dsi2-max-est", type=float, default=60.0,
                    help="run dsi2_hash at a larger size only if its linear "
                         "extrapolation from the smaller size is below this (s)")
    ap.add_argument("--dsi2-full", action="store_true", help="always run dsi2_hash")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per candidate; report min wall and max peak RSS")
    ap.add_argument("--keep", action="store_true", help="keep outputs in out/work_<n>")
    a = ap.parse_args(argv)

    sizes = [100_000] if a.quick else sorted(int(s) for s in a.sizes.split(",") if s)
    only = [c for c in a.only.split(",") if c]
    bad = [c for c in only if c not in ORDER]
    if bad:
        ap.error(f"unknown candidates {bad}; choose from {ORDER}")
    wanted = only or ORDER
    data_dir, out_dir = Path(a.data), Path(a.out)
    data_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)

    tck2c = shutil.which("tck2connectome")
    mrtrix_ver = ""
    if tck2c:
        r = subprocess.run([tck2c, "-version"], capture_output=True, text=True)
        mrtrix_ver = (r.stdout.splitlines() or [""])[0].strip("= ").strip()
    ltpa_cmd, ltpa_py, ltpa_reason = find_ltpa(a)
    nowrite = bool(ltpa_cmd) and ltpa_supports(ltpa_cmd, "index", "--no-write")
    method = ("GNU /usr/bin/time %M (peak RSS of the child), wall = perf_counter around "
              "the subprocess" if TIME_BIN else
              "os.wait4 rusage ru_maxrss (peak RSS of the child), wall = perf_counter "
              "around the subprocess")
    print(f"timing: {method}")
    print(f"python: {a.python}")
    print(f"ltpa: {' '.join(ltpa_cmd) if ltpa_cmd else ltpa_reason}"
          + (f" (index --no-write: {'yes' if nowrite else 'no'})" if ltpa_cmd else ""))
    print(f"tck2connectome: {tck2c or 'absent'} {mrtrix_ver}", flush=True)

    rows = []       # dicts: size, cand, wall, rss, note, status
    checks = []     # (size, text)
    measured = {}   # (size, cand) -> row

    def add(size, cand, status, wall=None, rss=None, note="", cpu=None):
        row = dict(size=size, cand=cand, status=status, wall=wall, rss=rss, note=note, cpu=cpu)
        rows.append(row)
        measured[(size, cand)] = row
        w = f"{wall:8.2f}s" if wall is not None else "       -"
        r = f"{rss:8.0f}MB" if rss is not None else "         -"
        print(f"  {cand:24s} {w} {r}  {status} {note}", flush=True)
        return row

    def run_one(size, cand, argv, note=""):
        res = measure(argv, a.timeout)
        for _ in range(a.repeat - 1):
            if res["rc"] != 0 or res["timed_out"]:
                break
            r2 = measure(argv, a.timeout)
            if r2["rc"] != 0:
                res = r2
                break
            if r2["wall"] < res["wall"]:
                res["wall"], res["cpu"] = r2["wall"], r2["cpu"]
            res["rss_mb"] = max(res["rss_mb"], r2["rss_mb"])
        if a.repeat > 1:
            note = f"{note}; min of {a.repeat}" if note else f"min of {a.repeat}"
        ph = parse_phases(res["stdout"])
        if res["rc"] == SKIP_RC and "SKIP:" in res["stdout"]:
            reason = res["stdout"].split("SKIP:", 1)[1].strip().splitlines()[0]
            return add(size, cand, "skipped", note=reason)
        if res["timed_out"]:
            return add(size, cand, "TIMEOUT", res["wall"], res["rss_mb"],
                       f"killed after {a.timeout:.0f}s")
        if res["rc"] != 0:
            tail = (res["stderr"].strip().splitlines() or ["?"])[-1][:160]
            return add(size, cand, f"FAILED rc={res['rc']}", res["wall"], res["rss_mb"], tail)
        n = "; ".join(x for x in (note, fmt_phases(ph)) if x)
        return add(size, cand, "ok", res["wall"], res["rss_mb"], n, cpu=res["cpu"])

    for size in sizes:
        print(f"\n=== size {size} ===", flush=True)
        trk, tck, atlas, gml = ensure_data(size, data_dir, bool(tck2c), a.python)
        work = out_dir / f"work_{size}"
        work.mkdir(parents=True, exist_ok=True)
        py = a.python
        c = lambda name: str(CANDS / f"{name}.py")  # noqa: E731
        smaller = [s for s in sizes if s < size]
        for cand in ORDER:
            if cand not in wanted:
                continue
            if cand == "read_bytes":
                run_one(size, cand, [py, c(cand), str(trk)], "floor: read() whole file")
            elif cand == "nib_load":
                run_one(size, cand, [py, c(cand), str(trk)], "anchor")
            elif cand == "dipy_mapping":
                run_one(size, cand, [py, c(cand), str(trk)], "incl. nibabel load")
            elif cand == "dsi2_hash":
                base = next((measured.get((s, cand)) for s in reversed(smaller)
                             if measured.get((s, cand), {}).get("status") == "ok"), None)
                if base is not None and not a.dsi2_full:
                    est = base["wall"] * size / base["size"]
                    if est > a.dsi2_max_est:
                        add(size, cand, "extrapolated", est, None,
                            f"linear from {base['size']} ({base['wall']:.1f}s) > "
                            f"{a.dsi2_max_est:.0f}s limit; not run (--dsi2-full to run)")
                        continue
                elif base is None and smaller == [] and size > 100_000 and not a.dsi2_full:
                    add(size, cand, "skipped", note="no smaller size measured to "
                        "extrapolate from; use --dsi2-full to run it")
                    continue
                run_one(size, cand, [py, c(cand), str(trk), str(work / "dsi2_hash.pkl")],
                        "incl. 2013-style load + pickle")
            elif cand == "dsi2_label":
                run_one(size, cand, [py, c(cand), str(trk), str(atlas),
                                     str(work / "dsi2_label.npy")], "incl. load")
            elif cand == "dipy_connectivity":
                run_one(size, cand, [py, c(cand), str(trk), str(atlas)],
                        "end points only; incl. nibabel load")
            elif cand == "mrtrix_tck2connectome":
                if not tck2c:
                    add(size, cand, "skipped", note="tck2connectome not on PATH "
                        "(apt-get install mrtrix3)")
                elif tck is None:
                    add(size, cand, "skipped", note=f"no {trk.with_suffix('.tck').name}")
                else:
                    run_one(size, cand, [tck2c, "-nthreads", "2", "-force", "-quiet",
                                         str(tck), str(atlas), str(work / "mrtrix.csv")],
                            f"{mrtrix_ver}, -nthreads 2, default radial search; .tck input")
            elif cand == "ltpa_index":
                if not ltpa_cmd:
                    add(size, cand, ltpa_reason)
                else:
                    run_one(size, cand, ltpa_cmd + ["index", str(trk), str(work / "ltpa_index.pkl"),
                                                    "--space", "qsdr"], "--space qsdr, writes pkl")
            elif cand == "ltpa_index_nowrite":
                if not ltpa_cmd:
                    add(size, cand, ltpa_reason)
                elif not nowrite:
                    add(size, cand, "skipped", note="`ltpa index --no-write` not supported")
                else:
                    run_one(size, cand, ltpa_cmd + ["index", str(trk), str(work / "ltpa_nw.pkl"),
                                                    "--space", "qsdr", "--no-write"],
                            "--space qsdr --no-write")
            elif cand == "ltpa_label":
                if not ltpa_cmd:
                    add(size, cand, ltpa_reason)
                else:
                    run_one(size, cand, ltpa_cmd + ["label", str(trk), str(atlas),
                                                    str(work / "ltpa_label.npy"),
                                                    "--graphml", str(gml)],
                            "writes npy")

            elif cand == "snakemake_startup":
                smk = Path(ltpa_py or sys.executable).parent / "snakemake"
                if not smk.exists():
                    add(size, cand, "skipped", note=f"no {smk}")
                else:
                    run_one(size, cand, [str(smk), "--version"],
                            "`snakemake --version`: interpreter, snakemake and its plugins")
            elif cand in ("snakemake_scan", "snakemake_scan_noslurm"):
                run_scan(size, trk, data_dir, work, ltpa_cmd, ltpa_py, ltpa_reason,
                         run_one, add, hide_slurm=cand.endswith("noslurm"))
            elif cand == "write_bytes":
                nbytes = next((measured[(size, k)].get("out_bytes") for k in
                               ("snakemake_scan", "snakemake_scan_noslurm")
                               if measured.get((size, k), {}).get("out_bytes")), None)
                if not nbytes:
                    add(size, cand, "skipped",
                        note="needs an ok snakemake_scan row (its output bytes)")
                else:
                    run_one(size, cand, [py, c(cand), str(nbytes), str(work)],
                            f"{nbytes / 1e6:.0f} MB = the scan's outputs, 32 MB writes + fsync")

        # ---- differential check (only at 10^5 or smaller)
        if size <= 100_000:
            checks.extend((size, t) for t in differential(size, trk, work, ltpa_cmd, ltpa_py,
                                                          ltpa_reason, measured, a.timeout))
            for _, t in checks:
                if _ == size:
                    print(f"  check: {t}", flush=True)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    # ---- table
    anchors = {r["size"]: r["wall"] for r in rows
               if r["cand"] == "nib_load" and r["status"] == "ok"}
    header = ["size", "candidate", "wall s", "cpu s", "peak RSS MB", "x nib_load", "status / notes"]
    table = []
    for r in rows:
        wall = "-" if r["wall"] is None else (("~" if r["status"] == "extrapolated" else "")
                                              + f"{r['wall']:.2f}")
        rss = "-" if r["rss"] is None else f"{r['rss']:.0f}"
        ratio = "-"
        if r["wall"] is not None and anchors.get(r["size"]):
            ratio = (("~" if r["status"] == "extrapolated" else "")
                     + f"{r['wall'] / anchors[r['size']]:.2f}")
        st = r["status"] if r["status"] != "ok" else ""
        note = "; ".join(x for x in (st, r["note"]) if x)
        cpu = "-" if r.get("cpu") is None else f"{r['cpu']:.2f}"
        table.append([f"{r['size']:,}", r["cand"], wall, cpu, rss, ratio, note])
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
              for i, h in enumerate(header)]
    widths[-1] = len(header[-1])
    line = lambda cells: " | ".join(c.ljust(w) if i in (1, 6) else c.rjust(w)  # noqa: E731
                                    for i, (c, w) in enumerate(zip(cells, widths)))
    print("\n" + line(header))
    print("-+-".join("-" * w for w in widths))
    for t in table:
        print(line(t))
    for s, t in checks:
        print(f"check @ {s:,}: {t}")

    targets = target_lines(rows)
    for t in targets:
        print(t)

    stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    md = out_dir / f"results_{stamp}.md"
    with open(md, "w") as f:
        f.write(f"# ltpa-prep benchmark {stamp}\n\n")
        f.write(f"- machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
                f"{_meminfo()}\n- python for candidates: `{a.python}` "
                f"({_pyver(a.python)})\n- timing: {method}\n")
        f.write(f"- ltpa: {'`' + ' '.join(ltpa_cmd) + '`' if ltpa_cmd else ltpa_reason}\n")
        f.write(f"- tck2connectome: {tck2c or 'absent'} {mrtrix_ver}\n")
        f.write("- data: benchmarks/make_data.py (seed 0), QSDR 2 mm grid 79x95x69, "
                "~62 points/streamline, 83-region atlas; page cache warm\n\n")
        f.write("| " + " | ".join(header) + " |\n|" + "|".join(
            "---" if i in (1, 6) else "---:" for i in range(len(header))) + "|\n")
        for t in table:
            f.write("| " + " | ".join(x.replace("|", "/") for x in t) + " |\n")
        if targets:
            f.write("\n## Targets\n\n")
            for t in targets:
                f.write(f"- {t}\n")
        if checks:
            f.write("\n## Differential checks\n\n")
            for s, t in checks:
                f.write(f"- {s:,}: {t}\n")
    print(f"\nwritten {md}")
    return 1 if any(t.startswith("FAIL") for _, t in checks) else 0


def shadow_path_without_slurm(folder):
    """A PATH of symlinks to /usr/local/bin and /usr/bin minus the SLURM client tools."""
    folder.mkdir(parents=True, exist_ok=True)
    for d in ("/usr/local/bin", "/usr/bin", "/usr/local/sbin", "/usr/sbin"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = folder / name
            if name in SLURM_TOOLS or name.startswith("slurm") or os.path.lexists(link):
                continue
            os.symlink(os.path.join(d, name), link)
    return str(folder)


def run_scan(size, trk, data_dir, work, ltpa_cmd, ltpa_py, ltpa_reason, run_one, add,
             hide_slurm=False):
    """The whole scan through Snakemake: pkl + pkl_trk + 2 atlases, --cores 2, fresh folder.

    hide_slurm: run with the SLURM client tools off PATH. Snakemake imports every
    installed executor plugin; snakemake-executor-plugin-slurm runs `scontrol show
    config` while importing, which waits ~9 s when SLURM is installed but its
    controller is down (this machine's test cluster between CI runs).
    """
    name = "snakemake_scan_noslurm" if hide_slurm else "snakemake_scan"
    if not ltpa_cmd:
        return add(size, name, ltpa_reason)
    smk = Path(ltpa_py).parent / "snakemake"
    if not smk.exists():
        return add(size, name, "skipped", note=f"no {smk}")
    scan = work / name
    shutil.rmtree(scan, ignore_errors=True)
    r = subprocess.run([ltpa_py, str(HERE / "make_scan.py"), "--trk", str(trk), "--data",
                        str(data_dir), "--work", str(scan)], capture_output=True, text=True)
    if r.returncode != 0:
        return add(size, name, "FAILED setup",
                   note=(r.stderr.strip().splitlines() or ["?"])[-1][:160])
    targets = r.stdout.split()
    argv = [str(smk), "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(scan / "smk"),
            "--cores", "2", "--config", f"local_data={scan / 'local_data.json'}", "--", *targets]
    rest = (shadow_path_without_slurm(work / "noslurm_bin") if hide_slurm
            else os.environ.get("PATH", ""))
    env = dict(os.environ, PATH=f"{smk.parent}:{rest}")
    res = measure(argv, 3600, env=env)
    if res["rc"] != 0:
        tail = (res["stderr"].strip().splitlines() or ["?"])[-1][:160]
        return add(size, name, f"FAILED rc={res['rc']}", res["wall"], res["rss_mb"], tail)
    missing = [t for t in targets if not Path(t).exists()]
    if missing:
        return add(size, name, "FAILED", res["wall"], res["rss_mb"], f"missing {missing}")
    nbytes = sum(Path(t).stat().st_size for t in targets)
    row = add(size, name, "ok", res["wall"], res["rss_mb"],
              f"4 jobs (index, export, 2 x label), --cores 2; outputs {nbytes / 1e6:.0f} MB; "
              f"RSS = largest process" + ("; SLURM client tools off PATH" if hide_slurm else ""),
              cpu=res["cpu"])
    row["out_bytes"] = nbytes
    return row


def target_lines(rows):
    """The issue's targets, per size (the issue sets them at 10^6), as printable lines."""
    by = {(r["size"], r["cand"]): r for r in rows}
    out = []

    def wall(size, cand):
        r = by.get((size, cand))
        return r["wall"] if r and r["status"] in ("ok", "extrapolated") and r["wall"] else None

    def rss(size, cand):
        r = by.get((size, cand))
        return r["rss"] if r and r["status"] == "ok" else None

    def line(size, text, value, limit, ok):
        verdict = "-" if value is None else ("MET" if ok else "MISSED")
        if size != 1_000_000 and value is not None:
            verdict += " (the issue sets it at 10^6 only)"
        v = "n/a" if value is None else f"{value:.2f}"
        out.append(f"target @ {size:,}: {text}: {v} (limit {limit}) {verdict}")

    for size in sorted({r["size"] for r in rows}):
        nib = wall(size, "nib_load")
        hw, lw = wall(size, "ltpa_index_nowrite"), wall(size, "ltpa_label")
        dip, mrt = wall(size, "dipy_mapping"), wall(size, "mrtrix_tck2connectome")
        scan, wr = wall(size, "snakemake_scan"), wall(size, "write_bytes")
        v = hw / nib if hw and nib else None
        line(size, "hashing (read+index, no pkl) / nib_load", v, "<= 0.35",
             v is not None and v <= 0.35)
        v = dip / hw if dip and hw else None
        line(size, "dipy streamline_mapping / hashing", v, ">= 20", v is not None and v >= 20)
        v = lw / nib if lw and nib else None
        line(size, "labeling (read+label+save) / nib_load", v, "<= 0.25",
             v is not None and v <= 0.25)
        v = lw / mrt if lw and mrt else None
        line(size, "labeling / tck2connectome", v, "< 1", v is not None and v < 1)
        v = scan / (nib + wr) if scan and nib and wr else None
        line(size, "snakemake scan / (nib_load + write_bytes)", v, "<= 1.5",
             v is not None and v <= 1.5)
        scan2 = wall(size, "snakemake_scan_noslurm")
        v = scan2 / (nib + wr) if scan2 and nib and wr else None
        line(size, "snakemake scan, SLURM tools off PATH / (nib_load + write_bytes)", v, "<= 1.5",
             v is not None and v <= 1.5)
        idx = [x for x in (rss(size, "ltpa_index"), rss(size, "ltpa_index_nowrite")) if x]
        v = max(idx) if idx else None
        line(size, "peak RSS hashing MB", v, "<= 1200", v is not None and v <= 1200)
        v = rss(size, "ltpa_label")
        line(size, "peak RSS labeling MB", v, "<= 900", v is not None and v <= 900)
        def cpu(cand):
            r = by.get((size, cand))
            return r.get("cpu") if r and r["status"] == "ok" else None

        c_nib, c_h, c_l = cpu("nib_load"), cpu("ltpa_index_nowrite"), cpu("ltpa_label")
        c_m, c_s, c_w = cpu("mrtrix_tck2connectome"), cpu("snakemake_scan"), cpu("write_bytes")
        parts = []
        if c_nib and c_h:
            parts.append(f"hashing/nib_load {c_h / c_nib:.2f}")
        if c_nib and c_l:
            parts.append(f"labeling/nib_load {c_l / c_nib:.2f}")
        if c_m and c_l:
            parts.append(f"labeling/tck2connectome {c_l / c_m:.2f} (mrtrix uses 2 threads)")
        if c_s and c_nib and c_w:
            parts.append(f"scan/(nib_load+write) {c_s / (c_nib + c_w):.2f} "
                         f"(scan = 4 jobs' CPU summed)")
        if parts:
            out.append(f"cpu-time ratios @ {size:,} (user+sys, insensitive to other load): "
                       + "; ".join(parts))
    sizes = sorted({r["size"] for r in rows})
    for cand in ("ltpa_index", "ltpa_index_nowrite", "ltpa_label", "snakemake_scan"):
        pts = [(s, rss(s, cand)) for s in sizes if rss(s, cand)]
        if len(pts) >= 2:
            (s0, r0), (s1, r1) = pts[0], pts[-1]
            slope = (r1 - r0) / (s1 - s0) * 1e6
            out.append(f"RSS growth {cand}: " + ", ".join(f"{s:,}: {r:.0f} MB" for s, r in pts)
                       + f" -> {slope:.0f} MB per 10^6 streamlines"
                       + f" + {r0 - slope * s0 / 1e6:.0f} MB")
    return out


def differential(size, trk, work, ltpa_cmd, ltpa_py, ltpa_reason, measured, timeout):
    out = []
    if not ltpa_cmd:
        return [f"SKIPPED differential: {ltpa_reason}"]
    lab_ok = measured.get((size, "ltpa_label"), {}).get("status") == "ok" and \
        measured.get((size, "dsi2_label"), {}).get("status") == "ok"
    hash_ok = measured.get((size, "dsi2_hash"), {}).get("status") == "ok"
    argv = [ltpa_py, str(HERE / "diffcheck.py")]
    if lab_ok:
        argv += ["--label", str(work / "ltpa_label.npy"), str(work / "dsi2_label.npy")]
    else:
        out.append("SKIPPED label differential (needs ok dsi2_label and ltpa_label rows)")
    if hash_ok:
        native = work / "ltpa_index_native.pkl"
        r = measure(ltpa_cmd + ["index", str(trk), str(native), "--space", "native"], timeout)
        if r["rc"] != 0:
            tail = (r["stderr"].strip().splitlines() or ["?"])[-1][:200]
            out.append(f"FAIL index differential: `ltpa index --space native` rc={r['rc']}: {tail}")
        else:
            argv += ["--index", str(native), str(work / "dsi2_hash.pkl")]
    else:
        out.append("SKIPPED index differential (needs an ok dsi2_hash row)")
    if "--label" in argv or "--index" in argv:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("PASS", "FAIL"))]
        if r.returncode not in (0, 1) or not lines:
            tail = (r.stderr.strip().splitlines() or ["?"])[-1][:200]
            lines = [f"FAIL diffcheck.py crashed rc={r.returncode}: {tail}"]
        out.extend(lines)
    return out


def _meminfo():
    try:
        kb = int(open("/proc/meminfo").readline().split()[1])
        return f"{kb / 1024 ** 2:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        return "RAM ?"


def _pyver(py):
    try:
        r = subprocess.run([py, "-c", "import sys,platform;print(platform.python_version())"],
                           capture_output=True, text=True, timeout=60)
        return r.stdout.strip()
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())

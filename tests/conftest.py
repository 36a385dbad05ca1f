import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
SNAKEFILE = str(REPO / "workflow" / "Snakefile")

sys.path.insert(0, str(Path(__file__).parent))


def run_snakemake(workdir, *args, local_data=None, config=(), timeout=600, check=True, qc=False):
    """Run the real workflow in ``workdir``; returns the CompletedProcess (stdout+stderr).

    ``qc=False`` (the default here) leaves the QC/report jobs out (config ``qc: false``),
    so tests of the data rules run only those; the QC tests pass ``qc=True``.
    """
    cmd = [SNAKEMAKE, "-s", SNAKEFILE, "-d", str(workdir), "--cores", "2"]
    cfg = list(config) + [f"qc={qc}"]
    if local_data is not None:
        cfg.append(f"local_data={local_data}")
    if cfg:
        cmd += ["--config", *cfg]
    cmd += list(args)
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    proc.output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.output[-6000:]}")
    return proc


def study_folder(local_data):
    """The study's own folder (QC results, logs, caches): <json stem>.ltpa beside the JSON."""
    local_data = Path(local_data)
    return local_data.parent / f"{local_data.stem}.ltpa"


def planned_jobs(proc_output):
    """(rule, output) pairs of a dry run's job listing."""
    jobs = []
    rule = None
    for line in proc_output.splitlines():
        line = line.strip()
        if line.startswith("rule ") or line.startswith("localrule "):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("output:") and rule is not None:
            jobs.append((rule, line[len("output:"):].strip()))
            rule = None
    return sorted(j for j in jobs)


def make_demo_study(folder):
    """The tests' demo study (3 scans, 2 atlases) written in ``folder``: its JSON's path.
    The same arguments each time, so every call gives identical inputs."""
    from ltpa.demo.small import make_demo

    return make_demo(folder, n_scans=3, seed=1, n_per_side=15, n_background=10)


@pytest.fixture
def demo_study(tmp_path):
    """A fresh copy of the built-in demo study (3 scans, 2 atlases) in a temp folder."""
    return make_demo_study(tmp_path / "study")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def ltpa_main(capfd, *args):
    """``ltpa ARGS`` run in this process: the same ``ltpa.cli.main`` the command runs, with
    its exit status (argparse's and the commands' ``SystemExit`` included) and its output.

    With pytest's ``capfd``, the output is what was written on the stdout and stderr
    descriptors (the job steps, index, label and patterns, log to a copy of fd 2); with
    ``capfd=None``, what was written to ``sys.stdout`` and ``sys.stderr`` (enough for the
    commands that only print: validate, status, query, map ...). Start-up is the command's
    only part left out; test_cli and a few tests per concern run the real command."""
    import contextlib
    import io
    from types import SimpleNamespace

    from ltpa import cli

    def run():
        try:
            return cli.main([str(a) for a in args])
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)

    if capfd is None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = run()
        return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue(),
                               args=args)
    capfd.readouterr()  # what came before is not this command's
    rc = run()
    sys.stdout.flush()
    sys.stderr.flush()
    out, err = capfd.readouterr()
    return SimpleNamespace(returncode=rc, stdout=out, stderr=err, args=args)

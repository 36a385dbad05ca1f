"""The workflow on a real SLURM cluster, through the ltpa-slurm executor.

The tests that submit jobs use only a cluster started by tools/slurm/start_cluster.sh (its
state folder is ``$LTPA_SLURM_STATE``, default /tmp/ltpa-slurm): the state folder's marker
names the cluster, the slurmctld pid recorded there is alive, and ``scontrol show config``
answers with that cluster name and that state folder. Any other controller that answers
(a site's, on a login node) is never sent a job: the tests skip with the reason. `.ci/run`
starts its own cluster and sets LTPA_SLURM=1, which turns a skip into a failure.
The dry runs with the cluster profile need no cluster and no SLURM at all.
"""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import (
    BIN,
    REPO,
    SNAKEFILE,
    SNAKEMAKE,
    make_demo_study,
    run_snakemake,
    study_folder,
)
from ltpa import load_track_dataset

PROFILE = REPO / "workflow" / "profiles" / "slurm"
SCANS = ("s1", "s2", "s3")
ATLASES = ("scale33", "scale60")
REQUIRED = os.environ.get("LTPA_SLURM") == "1"  # set by .ci/run: never skip
ACCOUNT = os.environ.get("LTPA_SLURM_ACCOUNT", "ltpa")  # what start_cluster.sh creates
PARTITION = os.environ.get("LTPA_SLURM_PARTITION", "debug")
RUN_TIMEOUT = 420  # seconds for the whole snakemake run (normally ~50 s)


def _plugin_missing():
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return ("snakemake-executor-plugin-slurm is not installed (the slurm extra: "
                "make install EXTRAS=test,slurm)")
    return None


def state_folder() -> Path:
    return Path(os.environ.get("LTPA_SLURM_STATE", "/tmp/ltpa-slurm"))


def _run(cmd, env=None):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=env)
    except (subprocess.TimeoutExpired, OSError):
        return None


def our_cluster_problem(state: Path, env=None):
    """None if the SLURM controller that answers here is the one start_cluster.sh started
    with state folder ``state``; else why not. Nothing of SLURM is asked before the state
    folder says a cluster of ours is running."""
    marker = state / ".ltpa-slurm-state"
    try:
        fields = dict(line.split("=", 1) for line in marker.read_text().splitlines()
                      if "=" in line)
    except OSError:
        return (f"no cluster started by tools/slurm/start_cluster.sh (no {marker}; start one "
                f"with: sudo tools/slurm/start_cluster.sh)")
    name = fields.get("cluster")
    if not name or fields.get("state") != str(state):
        return f"{marker} does not name a cluster and this state folder"
    try:
        pid = int((state / "pids" / "slurmctld.pid").read_text())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return f"the slurmctld recorded in {state}/pids is not running"
    if comm != "slurmctld":
        return f"pid {pid} recorded in {state}/pids is {comm!r}, not slurmctld"
    config = _run(["scontrol", "show", "config"], env)
    if config is None or config.returncode != 0:
        return "our slurmctld runs but `scontrol show config` does not answer"
    conf = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", config.stdout, re.M))
    if conf.get("ClusterName") != name:
        return (f"the controller that answers is cluster {conf.get('ClusterName')!r}, not ours "
                f"({name!r}): not submitting to it")
    if not conf.get("StateSaveLocation", "").startswith(str(state) + "/"):
        return (f"the controller that answers keeps its state in "
                f"{conf.get('StateSaveLocation')!r}, not in {state}: not ours")
    return None


def _cluster_problem():
    """None if our SLURM cluster (with accounting and an idle node) answers, else why not."""
    problem = our_cluster_problem(state_folder())
    if problem:
        return problem
    missing = _plugin_missing()
    if missing:
        return missing
    for tool in ("sinfo", "sbatch", "sacct"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: no SLURM client here"
    states = _run(["sinfo", "-h", "-o", "%T"])
    if states is None:
        return "`sinfo` did not answer within 20 s"
    if states.returncode != 0:
        return f"`sinfo` failed: {states.stderr.strip()[:200]}"
    if not {"idle", "mixed", "allocated"} & set(states.stdout.split()):
        return f"no usable SLURM node (sinfo states: {states.stdout.split()})"
    acct = _run(["sacct", "-n", "-X", "-S", "now-1minutes"])
    if acct is None:
        return "`sacct` did not answer within 20 s"
    if acct.returncode != 0:
        # without accounting the plugin never sees a job finish and Snakemake waits forever
        return f"SLURM accounting does not answer (`sacct` failed: {acct.stderr.strip()[:200]})"
    return None


def require_cluster():
    problem = _cluster_problem()
    if problem is None:
        return
    if REQUIRED:
        pytest.fail(f"LTPA_SLURM=1 but {problem}")
    pytest.skip(problem)


def _fake_slurm(folder: Path, cluster: str, state: str) -> tuple[dict, Path]:
    """SLURM clients that answer like a healthy controller of ``cluster`` (a site's cluster
    on a login node) and record every call: (environment with them first on PATH, record)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    calls = folder / "calls"
    config = (f"ClusterName = {cluster}\nStateSaveLocation = {state}/slurmctld\n"
              f"MinJobAge = 300 sec\n")
    answers = {"sinfo": "idle", "sacct": "", "sbatch": "Submitted batch job 1",
               "scontrol": config, "squeue": ""}
    for tool, answer in answers.items():
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {calls}\nprintf '%s\\n' "
                          f"'{answer}'\n")
        script.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"), calls


def test_a_controller_that_is_not_ours_is_never_used(tmp_path, monkeypatch):
    """A controller answers (a site's, faked here), but no cluster of ours runs: the SLURM
    tests skip, and not one SLURM command was run to decide it."""
    state = tmp_path / "state"
    env, calls = _fake_slurm(tmp_path / "site", "site", "/var/spool/slurm")
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("LTPA_SLURM_STATE", str(state))
    problem = _cluster_problem()
    assert problem and "no cluster started by tools/slurm/start_cluster.sh" in problem, problem
    assert not calls.exists(), calls.read_text()


def test_our_cluster_is_known_by_marker_pid_name_and_state(tmp_path, monkeypatch):
    state = tmp_path / "state"
    (state / "pids").mkdir(parents=True)
    marker = state / ".ltpa-slurm-state"
    marker.write_text(f"cluster=ltpa\nstate={state}\n")
    # a live process named slurmctld, as start_cluster.sh records it
    fake_ctld = tmp_path / "slurmctld"
    shutil.copy("/bin/sleep", fake_ctld)
    proc = subprocess.Popen([str(fake_ctld), "60"])
    try:
        # Popen returns once exec closes its pipe, a moment before the kernel renames the
        # child: until then /proc/<pid>/comm still says python (a CI run met this)
        comm = Path(f"/proc/{proc.pid}/comm")
        deadline = time.monotonic() + 10
        while comm.read_text().strip() != "slurmctld" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert comm.read_text().strip() == "slurmctld", comm.read_text()
        (state / "pids" / "slurmctld.pid").write_text(str(proc.pid))
        # ours: the controller reports our cluster name and our state folder
        env, _ = _fake_slurm(tmp_path / "ours", "ltpa", str(state))
        assert our_cluster_problem(state, env) is None
        # a site's controller answers instead (another name, or another state folder)
        env, _ = _fake_slurm(tmp_path / "site", "site", "/var/spool/slurm")
        assert "cluster 'site', not ours" in our_cluster_problem(state, env)
        env, _ = _fake_slurm(tmp_path / "site2", "ltpa", "/var/spool/slurm")
        assert "not in" in our_cluster_problem(state, env)
        # our slurmctld is gone (the pid now belongs to something else)
        (state / "pids" / "slurmctld.pid").write_text(str(os.getpid()))
        env, _ = _fake_slurm(tmp_path / "ours2", "ltpa", str(state))
        assert "not slurmctld" in our_cluster_problem(state, env)
    finally:
        proc.kill()
        proc.wait()


make_study = make_demo_study  # conftest's demo study: identical inputs each call


def profile_settings():
    """The cluster profile as Snakemake reads it (YTE-processed)."""
    import yte

    with open(PROFILE / "profile.yaml") as f:
        return yte.process_yaml(f, require_use_yte=True)


def test_profiles_default_is_portable_and_slurm_takes_account_from_environment(monkeypatch):
    default = yaml.safe_load(
        (REPO / "workflow" / "profiles" / "default" / "profile.yaml").read_text())
    assert "executor" not in default  # `snakemake --cores 8` never submits by surprise
    monkeypatch.delenv("LTPA_SLURM_ACCOUNT", raising=False)
    monkeypatch.delenv("LTPA_SLURM_PARTITION", raising=False)
    plain = profile_settings()
    assert plain["executor"] == "ltpa-slurm" and plain["retries"] >= 1 and plain["jobs"] >= 1
    assert "slurm_account" not in plain["default-resources"]
    assert "slurm_partition" not in plain["default-resources"]
    data_rules = {"index_streamlines", "export_key_trk", "label_streamlines"}
    assert data_rules <= set(plain["set-resources"])
    monkeypatch.setenv("LTPA_SLURM_ACCOUNT", "lab42")
    monkeypatch.setenv("LTPA_SLURM_PARTITION", "short")
    mine = profile_settings()
    assert mine["default-resources"]["slurm_account"] == "lab42"
    assert mine["default-resources"]["slurm_partition"] == "short"


def test_the_ltpa_executor_runs_nothing_of_slurm_until_it_runs_jobs(tmp_path):
    """Snakemake imports every executor plugin at every start-up: importing ltpa-slurm and
    declaring its settings (what Snakemake does) imports no SLURM plugin and runs no SLURM
    command (the slurm plugin's import runs `scontrol show config`, 10 s without a
    controller). SLURM's commands are stand-ins here that record each call."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    for cmd in ("scontrol", "sinfo", "sacct", "squeue", "sbatch", "sacctmgr", "srun"):
        script = bin_dir / cmd
        script.write_text(f"#!/bin/sh\necho {cmd} \"$@\" >> {calls}\nexit 1\n")
        script.chmod(0o755)
    code = (
        "import sys, dataclasses\n"
        "import snakemake_executor_plugin_ltpa_slurm as p\n"
        "names = [f.name for f in dataclasses.fields(p.ExecutorSettings)]\n"
        "assert names and p.common_settings.non_local_exec\n"
        "print(sorted(m for m in sys.modules if m.startswith('snakemake_executor_plugin_')))\n"
    )
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['snakemake_executor_plugin_ltpa_slurm']"
    assert not calls.exists(), calls.read_text()


@pytest.mark.slow
def test_cluster_dry_run_plans_one_group_job_per_batch_of_scans(tmp_path, demo_study):
    # (no SLURM needed: the ltpa-slurm executor imports the slurm plugin only to run jobs)
    for per_job, expected in ((1, [f"scans_{i:06d}" for i in range(3)]), (2, ["scans_000000",
                                                                              "scans_000001"])):
        proc = run_snakemake(tmp_path / "work", "-n", "--workflow-profile", str(PROFILE),
                             local_data=demo_study, config=[f"scans_per_job={per_job}"],
                             qc=True)
        groups = re.findall(r"Group job (\S+) \(jobs", proc.output)
        # one group job per batch of scans (+ one for the study's QC summary and plots)
        assert sorted(g for g in groups if g.startswith("scans_")) == expected, groups
        assert len(groups) == len(expected) + 1, groups
        # the per-scan jobs are all inside them (indented under "Group job")
        lines = proc.output.splitlines()
        inside = [ln for ln in lines if re.match(r"\s+rule (index_streamlines|export_key_trk|"
                                                  r"label_streamlines|qc_scan):", ln)]
        outside = [ln for ln in lines if re.match(r"rule (index_streamlines|export_key_trk|"
                                                   r"label_streamlines|qc_scan):", ln)]
        assert len(inside) == 15 and not outside
        assert "mem_mb=" in proc.output


def run_on_cluster(work, local_data, *config, options=()):
    """The workflow through the cluster profile on the test cluster: (output, seconds); a
    failed run fails the test with the output and the SLURM jobs' logs."""
    cmd = ["timeout", "-k", "10", str(RUN_TIMEOUT),  # snakemake ignores SIGTERM while waiting
           SNAKEMAKE, "-s", SNAKEFILE, "-d", str(work),
           "--workflow-profile", str(PROFILE),
           "--ltpa-slurm-init-seconds-before-status-checks", "1", *options,
           "--config", f"local_data={local_data}", *config]
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}",
               LTPA_SLURM_ACCOUNT=ACCOUNT, LTPA_SLURM_PARTITION=PARTITION)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT + 60, env=env)
    elapsed = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        slurm_logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}"
                               for p in sorted(Path(work).glob(".snakemake/slurm_logs/**/*.log")))
        raise AssertionError(f"snakemake --executor ltpa-slurm failed (exit {proc.returncode}, "
                             f"124 = timeout) after {elapsed:.0f} s:\n{output[-6000:]}\n"
                             f"{slurm_logs[-6000:]}")
    return output, elapsed


def sacct_rows(job_ids):
    proc = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
         "-o", "JobID,JobName,State,Account,Partition,AllocCPUS,ReqMem,Timelimit,WorkDir"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return [line.split("|") for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.slurm
def test_a_slurm_run_in_batches_equals_the_local_run(tmp_path):
    """The cluster profile on the test cluster, at scans_per_job=2: 3 scans are 2 SLURM jobs
    (s1 and s2 together, then s3) + 1 (the study's QC), each COMPLETED in sacct with the
    account, partition and working folder asked for; every output up to date and equal to a
    local run's. (The default 20 and the batches of a 100-scan study: the dry-run test
    above; one job per scan at scans_per_job=1: the cluster dry-run test.)"""
    require_cluster()
    local_study = make_study(tmp_path / "local" / "study")
    slurm_study = make_study(tmp_path / "slurm" / "study")
    for s in SCANS:  # the same inputs
        assert ((local_study.parent / s / f"{s}.trk").read_bytes()
                == (slurm_study.parent / s / f"{s}.trk").read_bytes())

    run_snakemake(tmp_path / "local" / "work", local_data=local_study)

    work = tmp_path / "slurm" / "work"
    output, elapsed = run_on_cluster(work, slurm_study, "scans_per_job=2",
                                     options=["--ltpa-slurm-keep-successful-logs"])

    # the same outputs as the local run
    for s in SCANS:
        for a in ATLASES:
            got = np.load(slurm_study.parent / s / f"{a}.npy")
            want = np.load(local_study.parent / s / f"{a}.npy")
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        got = load_track_dataset(slurm_study.parent / s / f"{s}.pkl")
        want = load_track_dataset(local_study.parent / s / f"{s}.pkl")
        np.testing.assert_array_equal(got.tracks_at_ijk.voxels, want.tracks_at_ijk.voxels)
        np.testing.assert_array_equal(got.tracks_at_ijk.ids, want.tracks_at_ijk.ids)
        assert got.get_ntracks() == want.get_ntracks() and got.scan_id == want.scan_id == s
        assert ((slurm_study.parent / s / f"{s}.pkl.trk").read_bytes()
                == (local_study.parent / s / f"{s}.pkl.trk").read_bytes())
        # the job's own log was written (by the job, on the node)
        assert (study_folder(slurm_study) / "logs" / "index_streamlines"
                / f"{str(slurm_study.parent)[1:]}/{s}/{s}.pkl.log").exists()

    # SLURM really ran them: one submission per batch of 2 scans, listed by sacct (plus one
    # for the study's QC summary and plots)
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", output)
    assert submitted and all("/group_" in log for _, log in submitted), submitted
    batches = sorted(re.search(r"/group_(scans_\d+)_", log).group(1)
                     for _, log in submitted if "/group_scans_" in log)
    assert batches == ["scans_000000", "scans_000001"], submitted
    assert len(submitted) == 3, submitted
    # the batches hold the scans in the JSON's order: s1 and s2, then s3 (each SLURM job's
    # log lists the outputs its Snakemake made)
    made = {}
    for _, log in submitted:
        text = Path(log).read_text()
        made[re.search(r"/group_(scans_\d+|study_report)_", log).group(1)] = {
            s for s in SCANS if f"/{s}/{s}.pkl" in text}
    assert made == {"scans_000000": {"s1", "s2"}, "scans_000001": {"s3"},
                    "study_report": set()}, made
    job_ids = [j for j, _ in submitted]
    deadline = time.monotonic() + 60  # accounting records lag a few seconds
    while True:
        rows = sacct_rows(job_ids)
        if len(rows) == len(job_ids) and all(r[2] == "COMPLETED" for r in rows):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"sacct does not list the jobs {job_ids} as COMPLETED: {rows}")
        time.sleep(1)
    for job_id, _name, _state, account, partition, _cpus, _mem, _limit, workdir in rows:
        assert job_id in job_ids and account == ACCOUNT and partition == PARTITION
        assert Path(workdir).resolve() == work.resolve()
    status = subprocess.run([str(BIN / "ltpa"), "status", str(slurm_study), "--tsv"],
                            capture_output=True, text=True)
    assert status.returncode == 0 and status.stdout.count("\nok\t") == len(SCANS) * 4, \
        status.stdout
    print(f"\nslurm run: {elapsed:.0f} s, {len(job_ids)} SLURM jobs for {len(SCANS)} scans: "
          + ", ".join(Path(log).parent.name for _, log in submitted))
    for r in rows:
        print("sacct: " + " | ".join(r))


def group_members(output, study):
    """{group job name: {rule: [scan ids of its jobs' outputs]}} of a dry run's listing."""
    groups, current = {}, None
    rule = None
    for line in output.splitlines():
        head = re.search(r"Group job (\S+) \(jobs", line)
        if head:
            current = groups.setdefault(head.group(1), {})
        elif current is not None and not line.startswith("    ") and line.strip():
            current = None
        elif current is not None and re.match(r"\s+rule (\w+):", line):
            rule = re.match(r"\s+rule (\w+):", line).group(1)
        elif current is not None and re.match(r"\s+output: ", line):
            path = line.split("output: ", 1)[1].split(",")[0].strip()
            scan = re.match(r"(?:local_data\.ltpa/qc/\w+/)?(s\d+)\b",
                            str(Path(path).relative_to(study)))
            current.setdefault(rule, []).append(scan.group(1) if scan else path)
    return groups


@pytest.mark.slow
def test_a_100_scan_study_is_planned_as_5_group_jobs_of_20_consecutive_scans(tmp_path):
    """scans_per_job (default 20): the cluster profile's dry run of a 100-scan study (700
    per-scan jobs) plans 5 group jobs, each of 20 consecutive scans of the JSON with all
    their jobs, + 1 for the study's QC summary and plots (no SLURM needed to plan)."""
    from ltpa.demo.small import make_demo

    study = make_demo(tmp_path / "study", n_scans=100, seed=2, n_per_side=2, n_background=1)
    proc = run_snakemake(tmp_path / "work", "-n", "--workflow-profile", str(PROFILE),
                         local_data=study, qc=True)
    groups = group_members(proc.output, study.parent)
    assert sorted(groups) == [f"scans_{i:06d}" for i in range(5)] + ["study_report"], groups
    order = [rec["scan_id"] for rec in json.loads(study.read_text())]
    for i in range(5):
        want = sorted(order[20 * i:20 * (i + 1)])
        got = groups[f"scans_{i:06d}"]
        assert sorted(got) == ["export_key_trk", "index_streamlines", "label_streamlines",
                               "qc_scan"], got
        for rule, scans in got.items():
            per_scan = 2 if rule == "label_streamlines" else 1  # two atlases
            assert sorted(scans) == sorted(want * per_scan), (i, rule, scans)

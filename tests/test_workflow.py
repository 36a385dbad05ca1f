"""The workflow end to end: real Snakemake runs on the demo study in temp folders."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    BIN,
    SNAKEFILE,
    SNAKEMAKE,
    make_demo_study,
    planned_jobs,
    run_snakemake,
    study_folder,
)
from ltpa import load_track_dataset
from ltpa.demo.small import make_streamlines
from ltpa.formats.grids import MNI_DIM, QSDR_AFFINE, QSDR_DIM
from ltpa.formats.trkwrite import write_trk
from reference import hash_slow, read_trk_slow

pytestmark = pytest.mark.slow

SCANS = ("s1", "s2", "s3")
ATLASES = ("scale33", "scale60")


def all_jobs(study):
    jobs = []
    for s in SCANS:
        jobs.append(("index_streamlines", str(study / s / f"{s}.pkl")))
        jobs.append(("export_key_trk", str(study / s / f"{s}.pkl.trk")))
        for a in ATLASES:
            jobs.append(("label_streamlines", str(study / s / f"{a}.npy")))
    return sorted(jobs)


CORE_RULES = ("index_streamlines", "export_key_trk", "label_streamlines")


def dry(work, local_data, **kw):
    """The planned jobs of the data rules (the QC and report jobs are tested in test_qc.py)."""
    proc = run_snakemake(work, "-n", local_data=local_data, **kw)
    return [j for j in planned_jobs(proc.output) if j[0] in CORE_RULES], proc.output


@pytest.fixture(scope="module")
def built_once(tmp_path_factory):
    """The demo study (conftest's demo_study) after a full run, once for this module."""
    root = tmp_path_factory.mktemp("built")
    local_data = make_demo_study(root / "study")
    work = root / "work"
    run_snakemake(work, local_data=local_data)
    return work, local_data, local_data.parent


@pytest.fixture
def built(tmp_path, built_once):
    """A copy of the built demo study, for a test that changes it: copied as ``cp -a`` does
    (mtimes kept), run from a fresh working folder (test_study_home: a copied study is a
    study of its own, up to date; each test's first dry run here shows it again)."""
    _, _, original = built_once
    study = tmp_path / "study"
    shutil.copytree(original, study, symlinks=True)
    return tmp_path / "work", study / "local_data.json", study


def test_dry_run_lists_every_missing_job_with_scan_and_atlas(tmp_path, demo_study):
    jobs, out = dry(tmp_path / "work", demo_study)
    assert jobs == all_jobs(demo_study.parent)
    # each job names its output (the one wildcard) and its log, which sits under the study
    # folder by the output's own path
    for rule, path in jobs:
        assert f"wildcards: path={path}\n" in out
        assert f"log: {demo_study.parent}/local_data.ltpa/logs/{rule}{path}.log" in out
    # nothing was written by a dry run
    assert not any(Path(p).exists() for _, p in jobs)


def test_full_run_outputs_match_independent_computation(built_once):
    work, local_data, study = built_once
    for s in SCANS:
        for a in ATLASES:
            got = np.load(study / s / f"{a}.npy")
            expected = np.load(study / "expected" / f"{s}.{a}.npy")  # from the drawn region pairs
            np.testing.assert_array_equal(got, expected)
            assert (got > 0).any() and (got == 0).any()
        ds = load_track_dataset(study / s / f"{s}.pkl")
        ref = hash_slow(read_trk_slow(study / s / f"{s}.trk"), (2, 2, 2),
                        lambda v: (v[0] + 6, 101 - v[1], v[2] + 11), MNI_DIM)
        assert {k: ds.tracks_at_ijk[k].tolist() for k in ds.tracks_at_ijk} == ref
        assert ds.scan_id == s and ds.properties["scan_group"] in ("control", "patient")
        log = Path(f"{study_folder(local_data)}/logs/index_streamlines{study}/{s}/{s}.pkl.log")
        assert "hashing" in log.read_text()
    label_log = Path(f"{study_folder(local_data)}/logs/label_streamlines{study}/s1/scale33.npy.log"
                     ).read_text()
    assert "have connection id 0" in label_log
    # second run: nothing to do
    jobs, out = dry(work, local_data)
    assert jobs == [] and "Nothing to be done" in out


def rewrite_trk(path, seed):
    rng = np.random.default_rng(seed)
    sls, _ = make_streamlines(rng, 12, 5)
    write_trk(path, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)


def test_changes_rerun_only_what_depends_on_them(built):
    work, local_data, study = built
    # a trk whose content changed reruns that scan's pkl, pkl.trk and npys
    rewrite_trk(study / "s1" / "s1.trk", seed=99)
    jobs, _ = dry(work, local_data)
    assert jobs == sorted(j for j in all_jobs(study) if "/s1/" in j[1])
    run_snakemake(work, local_data=local_data)
    # a changed atlas reruns only its npy
    import nibabel as nib

    img = nib.load(str(study / "s2" / "s2.scale33.QSDR.nii.gz"))
    data = np.asanyarray(img.dataobj).copy()
    data[data == 10] = 0  # drop the right precentral
    time.sleep(1.1)
    nib.Nifti1Image(data, img.affine, img.header).to_filename(
        str(study / "s2" / "s2.scale33.QSDR.nii.gz"))
    jobs, _ = dry(work, local_data)
    assert jobs == [("label_streamlines", str(study / "s2" / "scale33.npy"))]
    run_snakemake(work, local_data=local_data)
    # deleting one output reruns only its job
    (study / "s3" / "scale60.npy").unlink()
    jobs, _ = dry(work, local_data)
    assert jobs == [("label_streamlines", str(study / "s3" / "scale60.npy"))]
    run_snakemake(work, local_data=local_data)
    assert dry(work, local_data)[0] == []


def test_json_edits_rerun_only_the_affected_scan(built):
    work, local_data, study = built
    data = json.loads(local_data.read_text())
    # s1's graphml_path now names another (identical) file: only s1's scale60 npy
    shutil.copy(study / "atlases" / "scale60.graphml", study / "atlases" / "scale60_v2.graphml")
    data[0]["track_labels"][1]["graphml_path"] = "atlases/scale60_v2.graphml"
    # notes are metadata no output depends on
    data[1]["track_labels"][0]["notes"] = "re-checked by hand"
    local_data.write_text(json.dumps(data))
    jobs, _ = dry(work, local_data)
    assert jobs == [("label_streamlines", str(study / "s1" / "scale60.npy"))]
    run_snakemake(work, local_data=local_data)
    # scan metadata is carried in the pkl: editing s3's attributes reruns s3's pkl only
    data[2]["attributes"]["age"] = 99
    local_data.write_text(json.dumps(data))
    jobs, _ = dry(work, local_data)
    assert jobs == [("index_streamlines", str(study / "s3" / "s3.pkl"))]
    run_snakemake(work, local_data=local_data)
    assert load_track_dataset(study / "s3" / "s3.pkl").properties["attributes"]["age"] == 99
    # a config option that changes the numbering reruns every npy
    jobs, _ = dry(work, local_data, config=["connection_ids_start_at=0"])
    assert jobs == sorted(j for j in all_jobs(study) if j[0] == "label_streamlines")


def test_archived_inputs_warn_but_missing_inputs_for_needed_outputs_fail(tmp_path, demo_study):
    # built in place (not a copy): the messages name the paths the outputs were built from
    work, local_data, study = tmp_path / "work", demo_study, demo_study.parent
    run_snakemake(work, local_data=local_data)
    # labs archive raw .trk files: outputs up to date, inputs gone -> warning, nothing to do
    (study / "s2" / "s2.trk").unlink()
    jobs, out = dry(work, local_data)
    assert jobs == []
    assert "scan #1 ('s2')" in out and "trk_file" in out and "keeping the existing output" in out
    # ...but an output that must be built needs its input: error naming scan, field, path
    (study / "s2" / "scale60.npy").unlink()
    proc = run_snakemake(work, "-n", local_data=local_data, check=False)
    assert proc.returncode != 0
    assert (f"scan #1 ('s2'), field 'trk_file': file '{study}/s2/s2.trk' does not exist "
            f"(needed to build '{study}/s2/scale60.npy')") in proc.output
    # the JSON now names another trk than the outputs were built from: error, even though
    # the outputs exist
    data = json.loads(local_data.read_text())
    data[1]["track_labels"] = data[1]["track_labels"][:1]
    data[0]["trk_file"] = "s1/s1_retracked.trk"
    local_data.write_text(json.dumps(data))
    proc = run_snakemake(work, "-n", local_data=local_data, check=False)
    assert proc.returncode != 0
    assert "scan #0 ('s1'), field 'trk_file': file" in proc.output
    assert f"was built from '{study}/s1/s1.trk'" in proc.output


def test_bad_json_fails_before_any_job_with_every_problem(tmp_path, demo_study):
    data = json.loads(demo_study.read_text())
    data[0]["trk_space"] = "tal"
    data[2]["scan_id"] = "s2"
    del data[1]["scan_group"]
    demo_study.write_text(json.dumps(data))
    proc = run_snakemake(tmp_path / "work", local_data=demo_study, check=False)
    assert proc.returncode != 0
    assert "3 problems" in proc.output
    assert "scan #0 ('s1'), field 'trk_space': is \"tal\"" in proc.output
    assert "scan #1 ('s2'), field 'scan_group': is required" in proc.output
    assert "scan #2 ('s2'), field 'scan_id': duplicate of scan #1" in proc.output
    assert not list(demo_study.parent.glob("s*/*.npy"))


def test_bad_trk_fails_its_jobs_only_and_names_scan(tmp_path, demo_study):
    study = demo_study.parent
    raw = (study / "s2" / "s2.trk").read_bytes()
    (study / "s2" / "s2.trk").write_bytes(raw[:-8])  # cut mid-streamline: seen by its jobs
    proc = run_snakemake(tmp_path / "work", local_data=demo_study, check=False)
    assert proc.returncode != 0
    assert "ltpa error: scan 's2', field 'trk_file': file" in proc.output
    assert "s2.trk" in proc.output
    assert "the file is truncated" in proc.output
    # the other scans were built (keep-going), nothing of s2 exists, no temp files left
    for s in ("s1", "s3"):
        assert (study / s / f"{s}.pkl").exists() and (study / s / "scale60.npy").exists()
    assert not list((study / "s2").glob("*.npy")) and not (study / "s2" / "s2.pkl").exists()
    assert not [p for p in study.rglob("*") if "ltpa-tmp" in p.name]
    # the end-of-run summary names the failed jobs and their logs
    end = proc.output[proc.output.rindex("Exiting because a job execution failed"):]
    assert "ltpa: 4 jobs failed" in end
    logs = study_folder(demo_study) / "logs"
    assert (f"  index_streamlines: {study}/s2/s2.pkl (log: {logs}/index_streamlines{study}/s2/"
            f"s2.pkl.log)") in end
    assert "nothing that affects the results" not in end


def test_a_bad_trk_header_leaves_its_scan_out_with_keep_going_else_stops(tmp_path, demo_study):
    study = demo_study.parent
    raw = (study / "s2" / "s2.trk").read_bytes()
    (study / "s2" / "s2.trk").write_bytes(raw[:-6])  # not whole 4-byte words: seen in the header
    problem = (f"scan #1 ('s2'), field 'trk_file': file '{study}/s2/s2.trk': body of "
               f"{len(raw) - 6 - 1000} bytes is not a whole number of 4-byte values; the file "
               f"is truncated")
    # a dry run, and a run without --keep-going (the default profile sets it), stop first
    for args in (("-n",), ("--workflow-profile", "none")):
        proc = run_snakemake(tmp_path / "work", *args, local_data=demo_study, check=False)
        assert proc.returncode != 0 and problem in proc.output
        assert "Traceback" not in proc.output and 'File "' not in proc.output
    assert not list(study.glob("s*/*.pkl")) and not list(study.glob("s*/*.npy"))
    # --keep-going: every other scan is built, s2 is named with its problem at the end
    proc = run_snakemake(tmp_path / "work", "--keep-going", local_data=demo_study, check=False)
    assert proc.returncode != 0
    assert sorted(p.name for p in study.glob("s*/*.pkl")) == ["s1.pkl", "s3.pkl"]
    assert not list((study / "s2").glob("*.npy"))
    end = proc.output[proc.output.rindex("Exiting because a job execution failed"):]
    assert "ltpa: 1 scan left out" in end and "  scan s2:" in end and problem in end
    proc = subprocess.run([str(BIN / "ltpa"), "validate", str(demo_study)], capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "is not a whole number of 4-byte values" in proc.stderr


def _holder_of(predicate):
    """(process, path) of a process of this user with an open file whose path fits ``predicate``."""
    import psutil

    for p in psutil.process_iter():
        try:
            for f in p.open_files():
                if predicate(f.path):
                    return p, f.path
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None, None


def test_killed_job_leaves_no_partial_output(tmp_path, demo_study):
    """SIGKILL lands while the job writes its pkl (checked: its temp file is open): no partial
    file under the pkl's name, no temp left, the other jobs complete, a rerun builds it."""
    study = demo_study.parent
    # make s1 big enough that writing its pkl takes a while
    rng = np.random.default_rng(5)
    sls = []
    for _ in range(60):
        part, _ = make_streamlines(rng, 500, 0)
        sls += part
    write_trk(study / "s1" / "s1.trk", sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    work = tmp_path / "work"
    cmd = [SNAKEMAKE, "-s", SNAKEFILE, "-d", str(work), "--cores", "1",
           "--config", f"local_data={demo_study}", "qc=False"]
    tmp_prefix = str(study / "s1" / ".s1.pkl.ltpa-tmp-")
    landed = False
    for _attempt in range(6):
        (study / "s1" / "s1.pkl").unlink(missing_ok=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"))
        deadline = time.time() + 120
        job = None
        while time.time() < deadline and proc.poll() is None:
            job, path = _holder_of(lambda p: p.startswith(tmp_prefix))
            if job is not None:
                break
        if job is not None:
            job.suspend()  # stopped where it is: still writing?
            if any(f.path.startswith(tmp_prefix) for f in job.open_files()):
                landed = True
            job.kill()
        output, _ = proc.communicate(timeout=300)
        if landed:
            break
    assert landed, "never caught the job while it wrote its pkl"
    assert proc.returncode != 0 and "Error in rule index_streamlines" in output
    # nothing under the pkl's name, no temp file left behind; the other jobs completed
    assert not (study / "s1" / "s1.pkl").exists()
    assert (study / "s2" / "s2.pkl").exists() and (study / "s1" / "scale33.npy").exists()
    # a rerun builds just the missing pkl (removing the killed writer's temp), and leaves none
    jobs, _ = dry(work, demo_study)
    assert jobs == [("index_streamlines", str(study / "s1" / "s1.pkl"))]
    run_snakemake(work, local_data=demo_study)
    assert load_track_dataset(study / "s1" / "s1.pkl").get_ntracks() == len(sls)
    assert not [p for p in study.rglob("*") if "ltpa-tmp" in p.name]


def test_killed_cli_write_keeps_the_previous_output(tmp_path, demo_study):
    """SIGKILL while `ltpa index` writes over a good pkl (checked: the process is stopped with
    its temp file open before the kill) never leaves a partial or mixed pkl."""
    import psutil

    study = demo_study.parent
    rng = np.random.default_rng(5)
    sls = []
    for _ in range(60):
        part, _ = make_streamlines(rng, 500, 0)
        sls += part
    trk = study / "s1" / "s1.trk"
    write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    out = tmp_path / "s1.pkl"
    subprocess.run([str(BIN / "ltpa"), "index", str(trk), str(out)], check=True,
                   capture_output=True)
    good = load_track_dataset(out).tracks_at_ijk
    tmp_prefix = str(tmp_path / ".s1.pkl.ltpa-tmp-")
    landed = 0
    for _attempt in range(4):
        p = subprocess.Popen([str(BIN / "ltpa"), "index", str(trk), str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = psutil.Process(p.pid)
        deadline = time.time() + 60
        while time.time() < deadline and p.poll() is None:
            try:
                if any(f.path.startswith(tmp_prefix) for f in proc.open_files()):
                    proc.suspend()  # stopped where it is: still writing?
                    landed += any(f.path.startswith(tmp_prefix) for f in proc.open_files())
                    break
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                break
        p.send_signal(signal.SIGKILL)
        p.wait()
        # the same scan: either untouched or fully replaced, never partial
        idx = load_track_dataset(out).tracks_at_ijk
        np.testing.assert_array_equal(idx.voxels, good.voxels)
        np.testing.assert_array_equal(idx.ids, good.ids)
        if landed >= 2:
            break
    assert landed >= 2, f"the kill landed during the write {landed} times of 4"


def test_wrong_grid_and_atlas_shape_fail_before_any_job_with_scan_named(tmp_path, demo_study):
    import nibabel as nib

    study = demo_study.parent
    data = json.loads(demo_study.read_text())
    data[0]["trk_space"] = "mni"  # s1's trk is QSDR
    demo_study.write_text(json.dumps(data))
    small = np.zeros((10, 10, 10), dtype=np.int16)
    nib.Nifti1Image(small, np.eye(4)).to_filename(str(study / "s2" / "s2.scale33.QSDR.nii.gz"))
    # without --keep-going (the default profile sets it: then s1 and s2 are left out and s3
    # is built, test_a_bad_trk_header_leaves_its_scan_out_with_keep_going_else_stops)
    proc = run_snakemake(tmp_path / "work", "--workflow-profile", "none", local_data=demo_study,
                         check=False)
    assert proc.returncode != 0
    assert ("scan #0 ('s1'), field 'trk_file': file '" + str(study / "s1" / "s1.trk")
            + "': trk_space 'mni' expects the MNI152 2 mm grid") in proc.output
    assert "but the trk header has dim 79x95x69, voxel 2x2x2 mm, order LPS" in proc.output
    assert (f"scan #1 ('s2'), field 'track_labels[0].volume_path': atlas file "
            f"'{study}/s2/s2.scale33.QSDR.nii.gz' has shape (10, 10, 10) and affine "
            f"[1 0 0 0; 0 1 0 0; 0 0 1 0], but the streamlines' grid is (79, 95, 69) with affine "
            f"[-2 0 0 78; 0 -2 0 76; 0 0 2 -50]") in proc.output
    assert not list(study.glob("s*/*.pkl")) and not list(study.glob("s*/*.npy"))

"""A study is its own home (#12.2, #12.3): rebuild decisions, results and logs live with the
study, so any working folder, `-s` from the study's folder and use as a Snakemake module give
the same answers, and `ltpa status` agrees with `snakemake -n` in each case."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, SNAKEFILE, SNAKEMAKE, ltpa_main, planned_jobs, run_snakemake, study_folder
from ltpa.study.sidecar import HASH_MAX_BYTES

pytestmark = pytest.mark.slow

CORE = ("index_streamlines", "export_key_trk", "label_streamlines")


def status(local_data, *args):
    proc = ltpa_main(None, "status", local_data, "--tsv", *args)
    rows = [line.split("\t") for line in proc.stdout.splitlines()[1:]]
    return sorted((r[1], r[3]) for r in rows if r[0] in ("missing", "out of date"))


def dry(work, local_data, config=()):
    proc = run_snakemake(work, "-n", local_data=local_data, config=config)
    return [j for j in planned_jobs(proc.output) if j[0] in CORE]


def snapshot(folder):
    """{path: (bytes, mtime_ns)} of every file under ``folder``."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(folder).rglob("*"))
            if p.is_file()}


def test_rebuilds_are_decided_from_the_study_whatever_the_working_folder(tmp_path, demo_study):
    study = demo_study.parent
    a, b = tmp_path / "work_a", tmp_path / "work_b"
    run_snakemake(a, local_data=demo_study)
    npys = sorted(("label_streamlines", str(p)) for p in study.glob("s*/scale*.npy"))
    assert len(npys) == 6
    # another folder sees the same study: nothing to do
    assert dry(b, demo_study) == [] == status(demo_study)
    # a changed numbering, from the other folder: every npy, for status too
    assert dry(b, demo_study, ["connection_ids_start_at=0"]) == npys
    assert status(demo_study, "--start-at", "0") == npys
    run_snakemake(b, local_data=demo_study, config=["connection_ids_start_at=0"])
    # ... and the first folder now knows (no study mixing 0- and 1-based ids)
    assert dry(a, demo_study, ["connection_ids_start_at=0"]) == []
    assert dry(a, demo_study) == npys == status(demo_study)
    run_snakemake(a, local_data=demo_study)
    # a metadata edit (kept in the pkl) reruns that scan's pkl, from any folder
    data = json.loads(demo_study.read_text())
    data[1]["attributes"] = {"site": "B"}
    demo_study.write_text(json.dumps(data))
    want = [("index_streamlines", str(study / "s2" / "s2.pkl"))]
    assert dry(a, demo_study) == want == dry(b, demo_study) == status(demo_study)
    run_snakemake(b, local_data=demo_study)
    assert dry(a, demo_study) == [] == status(demo_study)
    # a small input touched with its content unchanged: nothing to do, for both
    time.sleep(0.05)
    os.utime(study / "atlases" / "scale33.graphml")
    assert dry(a, demo_study) == [] == dry(b, demo_study) == status(demo_study)
    # ... and with its content changed: that atlas's npys, for both
    graphml = study / "atlases" / "scale33.graphml"
    graphml.write_text(graphml.read_text().replace("<graph ", "<!-- edited -->\n<graph ", 1))
    want = sorted(j for j in npys if j[1].endswith("scale33.npy"))
    assert dry(a, demo_study) == want == dry(b, demo_study) == status(demo_study)


def test_a_copied_study_is_judged_the_same_by_status_and_snakemake(tmp_path, demo_study):
    run_snakemake(tmp_path / "work", local_data=demo_study)
    for preserve in (True, False):
        copy = tmp_path / f"copy_{preserve}"
        if preserve:
            shutil.copytree(demo_study.parent, copy, symlinks=True)  # copy2: mtimes kept
        else:
            shutil.copytree(demo_study.parent, copy, copy_function=shutil.copyfile)
        data = json.loads((copy / "local_data.json").read_text())
        local_data = copy / "local_data.json"
        local_data.write_text(json.dumps(data))
        # the copy's paths are relative to its JSON: the copy is a study of its own. Its
        # outputs are up to date both ways: with mtimes kept (cp -a), and with new mtimes
        # because every input is small enough to carry a content hash that still matches
        inputs = [p for p in copy.rglob("*") if p.suffix in (".trk", ".gz", ".graphml")]
        assert inputs and all(p.stat().st_size <= HASH_MAX_BYTES for p in inputs)
        assert dry(tmp_path / f"w_{preserve}", local_data) == [] == status(local_data)
        assert dry(tmp_path / "work", local_data) == []


def test_run_from_the_study_folder_and_as_a_module(tmp_path, demo_study):
    study = demo_study.parent
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    # from the study's own folder, with a path relative to it
    proc = subprocess.run([SNAKEMAKE, "-s", SNAKEFILE, "--cores", "2", "--config",
                           "local_data=local_data.json"], cwd=study, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    home = study_folder(demo_study)
    assert (home / "qc" / "summary.tsv").exists() and (home / "logs").is_dir()
    assert not (study / "results").exists() and not (study / "logs").exists()
    # as a module of another workflow, from another folder: the same study, nothing to do
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "Snakefile").write_text(
        "module ltpa_prep:\n"
        f"    snakefile:\n        {SNAKEFILE!r}\n"
        f"    config:\n        {{'local_data': {str(demo_study)!r}}}\n\n\n"
        "use rule * from ltpa_prep as ltpa_*\n\n\n"
        "rule all:\n    default_target: True\n    input:\n        rules.ltpa_all.input,\n")
    before = snapshot(study)
    proc = subprocess.run([SNAKEMAKE, "--cores", "2"], cwd=driver, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert {p: v for p, v in snapshot(study).items() if "cache" not in p.parts} == {
        p: v for p, v in before.items() if "cache" not in p.parts}
    # a deleted npy is rebuilt by the module, where the JSON says
    (study / "s2" / "scale60.npy").unlink()
    proc = subprocess.run([SNAKEMAKE, "--cores", "2", "-n"], cwd=driver, env=env,
                          capture_output=True, text=True)
    assert [j for j in planned_jobs(proc.stdout) if j[0].startswith("ltpa_")
            and j[0][5:] in CORE] == [("ltpa_label_streamlines", str(study / "s2" / "scale60.npy"))]
    proc = subprocess.run([SNAKEMAKE, "--cores", "2"], cwd=driver, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and (study / "s2" / "scale60.npy").exists()
    assert status(demo_study) == []


def test_two_studies_run_from_one_folder_keep_their_own_results(tmp_path):
    from ltpa.demo.small import make_demo

    a = make_demo(tmp_path / "a", n_scans=2, seed=3, n_per_side=10, n_background=5)
    b = make_demo(tmp_path / "b", n_scans=2, seed=4, n_per_side=10, n_background=5)
    work = tmp_path / "work"
    run_snakemake(work, local_data=a, qc=True)
    before = snapshot(study_folder(a))
    run_snakemake(work, local_data=b, qc=True)
    after = snapshot(study_folder(a))
    assert {p: v for p, v in after.items() if "cache" not in p.parts} == {
        p: v for p, v in before.items() if "cache" not in p.parts}
    assert (study_folder(b) / "qc" / "summary.tsv").exists()
    proc = run_snakemake(work, "-n", local_data=a, qc=True)
    assert "Nothing to be done" in proc.output, proc.output[-3000:]

"""`ltpa status` says what `snakemake -n` would build, without reading Snakemake's records."""

import subprocess

import numpy as np
import pytest

from conftest import BIN, ltpa_main, planned_jobs, run_snakemake
from ltpa.demo.small import make_streamlines
from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
from ltpa.formats.trkwrite import write_trk

pytestmark = pytest.mark.slow

CORE = ("index_streamlines", "export_key_trk", "label_streamlines")


def status(local_data):
    proc = ltpa_main(None, "status", local_data, "--tsv")
    rows = [line.split("\t") for line in proc.stdout.splitlines()[1:]]
    return proc.returncode, rows


def needs_work(rows):
    return sorted((r[1], r[3]) for r in rows if r[0] in ("missing", "out of date"))


def dry_core(work, local_data):
    proc = run_snakemake(work, "-n", local_data=local_data)
    return [j for j in planned_jobs(proc.output) if j[0] in CORE]


def jobs_of(study, scans):
    """The data jobs of ``scans`` of the demo study, from its layout (s<n>/s<n>.pkl, ...)."""
    return sorted(job for s in scans for job in (
        ("index_streamlines", str(study / s / f"{s}.pkl")),
        ("export_key_trk", str(study / s / f"{s}.pkl.trk")),
        ("label_streamlines", str(study / s / "scale33.npy")),
        ("label_streamlines", str(study / s / "scale60.npy"))))


def test_status_agrees_with_the_dry_run(tmp_path, demo_study):
    study, work = demo_study.parent, tmp_path / "work"
    # fresh: everything missing
    rc, rows = status(demo_study)
    assert rc == 1 and len(rows) == 12 and {r[0] for r in rows} == {"missing"}
    assert needs_work(rows) == jobs_of(study, ("s1", "s2", "s3")) == dry_core(work, demo_study)
    # after a run of the JSON's outputs: all ok, exit 0
    outputs = [r[3] for r in rows]
    run_snakemake(work, "--cores", "2", *outputs, local_data=demo_study)
    rc, rows = status(demo_study)
    assert rc == 0 and {r[0] for r in rows} == {"ok"}
    assert dry_core(work, demo_study) == []
    # one npy deleted
    (study / "s3" / "scale60.npy").unlink()
    rc, rows = status(demo_study)
    assert rc == 1
    assert needs_work(rows) == [("label_streamlines", str(study / "s3" / "scale60.npy"))]
    assert needs_work(rows) == dry_core(work, demo_study)
    # one trk rewritten: that scan's pkl, pkl.trk and npys are out of date
    sls, _ = make_streamlines(np.random.default_rng(7), 12, 5)
    write_trk(study / "s1" / "s1.trk", sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    rc, rows = status(demo_study)
    assert rc == 1
    assert {r[3] for r in rows if r[0] == "out of date"} == {
        str(study / "s1" / n) for n in ("s1.pkl", "s1.pkl.trk", "scale33.npy", "scale60.npy")}
    assert all("trk_file" in r[4] and "changed" in r[4] for r in rows if r[0] == "out of date")
    want = sorted(jobs_of(study, ("s1",)) + [("label_streamlines", str(study / "s3" /
                                                                      "scale60.npy"))])
    assert needs_work(rows) == want == dry_core(work, demo_study)  # s3's npy still missing
    # a changed config (numbering): every npy, as Snakemake's params trigger
    proc = subprocess.run([str(BIN / "ltpa"), "status", str(demo_study), "--start-at", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "connection_ids_start_at was 1, now 0" in proc.stdout
    # an archived trk whose outputs exist: kept, not an error
    run_snakemake(work, "--cores", "2", *outputs, local_data=demo_study)
    (study / "s2" / "s2.trk").unlink()
    rc, rows = status(demo_study)
    assert rc == 0 and {r[0] for r in rows if "/s2/" in r[3]} == {"kept (inputs missing)"}
    assert dry_core(work, demo_study) == []

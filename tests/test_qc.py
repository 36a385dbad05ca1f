"""QC tables and provenance of a full run, against independent computations."""

import hashlib
import json

import numpy as np
import pytest
import yaml

from conftest import study_folder
from ltpa.formats.trk import open_trk
from ltpa.prepared.connections import connection_matrix, decode_pairs, pair_counts
from ltpa.qc.tables import read_tsv, streamline_lengths
from qc_study import built_study
from reference import read_trk_slow

pytestmark = pytest.mark.slow

SCANS = ("s1", "s2", "s3")
ATLASES = ("scale33", "scale60")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return built_study(tmp_path_factory)


def test_decode_pairs_matches_triu_enumeration():
    n = 5
    pairs = [(a, b) for a in range(n) for b in range(a, n)]  # np.triu_indices order
    ids = np.array([0] + [i + 1 for i in range(len(pairs))] + [3, 0])
    a, b = decode_pairs(ids, n, start=1)
    assert list(zip(a.tolist(), b.tolist())) == pairs + [pairs[2]]
    m = connection_matrix(np.array([2, 2, 1, 0]), 3, start=1)  # id 2 = (0, 1), id 1 = (0, 0)
    assert m.tolist() == [[1, 2, 0], [2, 0, 0], [0, 0, 0]]
    a, b = decode_pairs(np.array([0, 1]), 3, start=0)  # start 0: id 0 counts as unlabeled
    assert (a.tolist(), b.tolist()) == ([0], [1])
    # the report's per-pair counts (one bincount) count what decode_pairs decodes
    ids = np.random.default_rng(5).integers(0, 15, 500)  # ids 0..14: valid with either start
    for start in (0, 1):
        a, b = decode_pairs(ids, 5, start=start)
        want = np.zeros(15, dtype=np.int64)
        for x, y in zip(a.tolist(), b.tolist()):
            want[pairs.index((x, y))] += 1
        assert pair_counts(ids, 5, start=start).tolist() == want.tolist()
    with pytest.raises(ValueError, match="beyond the 15 pairs"):
        pair_counts(np.array([16]), 5, start=1)


def test_lengths_match_a_per_point_loop(built):
    _, _, study = built
    trk = study / "s2" / "s2.trk"
    with open_trk(trk) as f:
        got = streamline_lengths(f)
    slow = [sum(float(np.linalg.norm(np.asarray(p[i + 1], float) - np.asarray(p[i], float)))
                for i in range(len(p) - 1)) for p in read_trk_slow(trk)]
    np.testing.assert_allclose(got, slow, rtol=1e-9, atol=1e-9)


def test_scan_tables_and_summary_match_the_outputs(built):
    work, local_data, study = built
    meta = {s["scan_id"]: s for s in json.loads(local_data.read_text())}
    summary = read_tsv(study_folder(local_data) / "qc" / "summary.tsv")
    assert [(r["scan_id"], r["atlas"]) for r in summary] == [(s, a) for s in SCANS for a in ATLASES]
    # outliers of share_unlabeled: Tukey's fences per scan_group and atlas
    for a in ATLASES:
        for g in {r["scan_group"] for r in summary}:
            cell = [r for r in summary if r["atlas"] == a and r["scan_group"] == g]
            v = np.array([float(r["share_unlabeled"]) for r in cell])
            q1, q3 = np.quantile(v, 0.25), np.quantile(v, 0.75)
            lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
            assert [r["share_unlabeled_outlier"] for r in cell] == [
                "high" if x > hi else "low" if x < lo else "" for x in v]
    for row in summary:
        s, a = row["scan_id"], row["atlas"]
        scan_rows = read_tsv(study_folder(local_data) / "qc" / "scans" / f"{s}.tsv")
        per_scan = scan_rows[ATLASES.index(a)]
        assert {k: row[k] for k in per_scan} == per_scan  # the summary joins the scan tables
        assert row["scan_group"] == meta[s]["scan_group"]
        assert row["subject_id"] == meta[s]["subject_id"]
        assert row["attributes.age"] == str(meta[s]["attributes"]["age"])
        ids = np.load(study / s / f"{a}.npy")
        assert int(row["n_streamlines"]) == ids.size
        assert int(row["n_unlabeled"]) == int((ids == 0).sum())
        assert float(row["share_unlabeled"]) == pytest.approx((ids == 0).mean(), abs=1e-6)
        # regions never reached: every region of the graphml but those the drawn pairs reach
        regions = json.loads((study / s / f"{a}.npy.json").read_text())["region_ids"]
        n = len(regions)
        pairs = [(regions[x], regions[y]) for x in range(n) for y in range(x, n)]
        reached = {r for i in ids[ids > 0] for r in pairs[i - 1]}
        never = [r for r in regions if r not in reached]
        assert int(row["n_regions"]) == n
        assert int(row["n_regions_never_reached"]) == len(never)
        assert row["regions_never_reached"] == ",".join(map(str, never))
        assert row["labels_not_in_region_list"] == "" and row["n_labels_not_in_region_list"] == "0"
        assert row["n_points_outside_key_grid"] == "0"
        slow = [sum(float(np.linalg.norm(np.asarray(p[i + 1], float) - np.asarray(p[i], float)))
                    for i in range(len(p) - 1)) for p in read_trk_slow(study / s / f"{s}.trk")]
        assert float(row["length_median_mm"]) == pytest.approx(float(np.median(slow)), rel=1e-5)
        assert int(row["n_points"]) == sum(len(p) for p in read_trk_slow(study / s / f"{s}.trk"))
    # the length histogram counts every streamline
    hist = read_tsv(study_folder(local_data) / "qc" / "lengths" / "s1.tsv")
    assert sum(int(r["count"]) for r in hist) == np.load(study / "s1" / "scale33.npy").size
    log = (study_folder(local_data) / "logs" / "qc_scan" / "scan_s1.log").read_text()
    assert "lengths: " in log and "unlabeled" in log
    # 2 scans in one group, 1 in the other: no group comparison is planned or written
    groups = [s["scan_group"] for s in json.loads(local_data.read_text())]
    assert sorted(groups.count(g) for g in set(groups)) == [1, 2]
    assert not (study_folder(local_data) / "qc" / "group_differences").exists()
    assert not (study_folder(local_data) / "report" / "group_differences").exists()


def test_provenance_records_config_versions_and_json_checksum(built):
    work, local_data, _ = built
    prov = yaml.safe_load((study_folder(local_data) / "provenance" / "provenance.yaml").read_text())
    assert prov["local_data_sha256"] == hashlib.sha256(local_data.read_bytes()).hexdigest()
    import snakemake

    import ltpa

    assert prov["versions"]["ltpa"] == ltpa.__version__
    assert prov["versions"]["snakemake"] == snakemake.__version__
    cfg = yaml.safe_load((study_folder(local_data) / "provenance" / "config.yaml").read_text())
    assert cfg["local_data"] == str(local_data) and cfg["results_dir"] is None
    assert cfg["connection_ids_start_at"] == 1


def test_a_reference_group_the_study_lacks_is_an_error_before_any_job(tmp_path, demo_study):
    from conftest import run_snakemake

    proc = run_snakemake(tmp_path / "work", "-n", local_data=demo_study, qc=True, check=False,
                         config=["reference_group=controls"])
    assert proc.returncode != 0
    assert "config reference_group 'controls' is not a scan_group" in proc.output
    assert "control, patient" in proc.output and "rule index_streamlines" not in proc.output
    ok = run_snakemake(tmp_path / "work", "-n", local_data=demo_study, qc=True,
                       config=["reference_group=patient"])
    assert "rule qc_summary" in ok.output


def test_the_scan_qc_job_runs_through_the_job_runner(built, tmp_path):
    """qc_scan is a step of ltpa.jobs.pipeline (run by ltpa-job through the warm server, like
    the data jobs): its spec survives JSON, it writes what write_scan_qc writes, and a
    missing input is an error naming the scan and the file, with nothing written."""
    from ltpa import LtpaError
    from ltpa.jobs.pipeline import run
    from ltpa.qc.tables import write_scan_qc
    from ltpa.study.spec import JobSpec

    _, local_data, study = built
    atlases = [[a, str(study / "s2" / f"{a}.npy")] for a in ATLASES]
    spec = JobSpec("qc_scan", str(tmp_path / "job.tsv"),
                   inputs={"pkl_path": str(study / "s2" / "s2.pkl"),
                           **{f"numpy_path:{a}": p for a, p in atlases}},
                   scan_id="s2", sidecar=False,
                   extra={"lengths": str(tmp_path / "job_lengths.tsv"), "atlases": atlases,
                          "trk_file": str(study / "s2" / "s2.trk"), "kept": []})
    assert JobSpec.from_json(spec.to_json()) == spec
    assert run(JobSpec.from_json(spec.to_json())) == {"rows": 2}
    write_scan_qc("s2", tmp_path / "direct.tsv", tmp_path / "direct_lengths.tsv",
                  pkl_path=study / "s2" / "s2.pkl", atlases=[tuple(a) for a in atlases],
                  trk_file=study / "s2" / "s2.trk")
    assert (tmp_path / "job.tsv").read_text() == (tmp_path / "direct.tsv").read_text()
    assert ((tmp_path / "job_lengths.tsv").read_text()
            == (tmp_path / "direct_lengths.tsv").read_text())
    # the workflow's own table of s2 is the same
    assert (tmp_path / "job.tsv").read_text() == (
        study_folder(local_data) / "qc" / "scans" / "s2.tsv").read_text()
    # the workflow ran it through the runner (its log line), not a script of its own
    log = (study_folder(local_data) / "logs" / "qc_scan" / "scan_s2.log").read_text()
    assert "wrote " + str(study_folder(local_data) / "qc" / "scans" / "s2.tsv") in log
    gone = JobSpec("qc_scan", str(tmp_path / "gone.tsv"),
                   inputs={"pkl_path": str(tmp_path / "none.pkl")}, scan_id="s2",
                   sidecar=False, extra={"lengths": str(tmp_path / "gone_lengths.tsv")})
    with pytest.raises(LtpaError, match=r"scan 's2'.*none\.pkl.*does not exist"):
        run(gone)
    assert not (tmp_path / "gone.tsv").exists() and not (tmp_path / "gone_lengths.tsv").exists()

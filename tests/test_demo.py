"""The demo study (``ltpa demo``): its atlases and region lists agree, it is reproducible,
and the planted group effect comes back out of the workflow's own outputs.

The end-to-end test runs the real workflow on a reduced demo (12 scans of ~15,000
streamlines: the same structure as the 20 x 20,000 of ``make demo``) and recomputes
everything from the npys and the graphml region lists, with references written here:
per-scan connection counts, then per region pair the group difference as a pooled
Poisson z-score (the demo draws Poisson counts per pair and scan, so with no effect z is
~N(0, 1)). The planted pair must stand out far above every other pair, with
patients/controls about 0.7, and the other pairs must look like noise. The QC's group
comparison (qc/group_differences, Welch's t of per-scan shares) must rank it first, with
the t computed here.
"""

import gzip
import json
import math
import xml.etree.ElementTree as ET

import nibabel as nib
import numpy as np
import pytest
from scipy.io import loadmat

from conftest import run_snakemake, study_folder
from ltpa.demo.study import PLANTED, make_study_demo, study_atlas, study_regions
from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM

GRAPHML_NS = "{http://graphml.graphdrawing.org/xmlns}"


def graphml_nodes(path):
    """{node id: {attribute name: value}} of a graphml, read with the stdlib parser."""
    root = ET.parse(str(path)).getroot()
    keys = {k.get("id"): k.get("attr.name") for k in root.iter(GRAPHML_NS + "key")}
    return {int(n.get("id")): {keys[d.get("key")]: d.text for d in n.iter(GRAPHML_NS + "data")}
            for n in root.iter(GRAPHML_NS + "node")}


def lut_ids(path):
    ids = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            ids.append(int(line.split()[0]))
    return sorted(i for i in ids if i)


def pair_ids(regions):
    """{(a, b): connection id} for region ids a <= b, ids numbered from 1 (dsi2's rule)."""
    rows, cols = np.triu_indices(len(regions))
    return {(int(regions[r]), int(regions[c])): k + 1 for k, (r, c) in enumerate(zip(rows, cols))}


# --------------------------------------------------------------------------- fast checks


def test_atlases_and_region_lists_agree(tmp_path):
    """Every label of each atlas is a node of its graphml and a row of the label table (and
    the other way round), scale60 subdivides scale33, left regions lie left of the midline."""
    local_data = make_study_demo(tmp_path / "d", n_scans=4, n_streamlines=200)
    folder = local_data.parent
    atlas = study_atlas()
    for scale, n in (("scale33", 83), ("scale60", 129)):
        labels = np.unique(atlas[scale])
        nodes = graphml_nodes(folder / "atlases" / f"{scale}.graphml")
        assert labels.tolist() == [0] + sorted(nodes) == list(range(n + 1))
        assert all(nodes[i]["dn_correspondence_id"] == str(i) for i in nodes)
        names = [nodes[i]["dn_name"] for i in sorted(nodes)]
        assert len(set(names)) == n
        assert not (atlas[scale] > 0)[~atlas["mask"]].any()
        ras_x = QSDR_AFFINE[0, 0] * np.arange(QSDR_DIM[0]) + QSDR_AFFINE[0, 3]
        for rid, node in nodes.items():
            i = np.nonzero(atlas[scale] == rid)[0]
            assert i.size >= 20, (scale, node["dn_name"], i.size)  # every parcel is sizeable
            if node["dn_name"] != "Brain-Stem":
                side = np.sign(ras_x[i])
                assert (side == (-1 if node["dn_hemisphere"] == "left" else 1)).all()
    assert lut_ids(folder / "atlases" / "scale60_LUT.txt") == list(range(1, 130))
    # nested: each scale60 parcel lies inside the scale33 parcel it is named after
    n33 = {i: d["dn_name"] for i, d in graphml_nodes(folder / "atlases/scale33.graphml").items()}
    n60 = graphml_nodes(folder / "atlases" / "scale60.graphml")
    for rid, node in n60.items():
        parents = np.unique(atlas["scale33"][atlas["scale60"] == rid])
        assert parents.size == 1
        assert node["dn_name"].rsplit("_", 1)[0] == n33[int(parents[0])]
    assert {PLANTED[0], PLANTED[1]} <= set(n33.values())
    # what the study declares passes the workflow's checks before any job, with no notes
    from ltpa.study.config import default_config
    from ltpa.study.study import load_study

    study = load_study(local_data, default_config())
    assert study.warnings == [] and study.notes == [] and study.problems == []
    data = json.loads(local_data.read_text())
    assert [s["scan_group"] for s in data].count("patient") == 2
    assert data[1].get("fib_file") and data[2]["trk_file"].endswith(".tck")
    assert "labels_path" in data[3]["track_labels"][1]


def test_same_seed_same_study_and_streamline_lengths(tmp_path):
    a = make_study_demo(tmp_path / "a", n_scans=4, n_streamlines=300, seed=5).parent
    b = make_study_demo(tmp_path / "b", n_scans=4, n_streamlines=300, seed=5).parent
    c = make_study_demo(tmp_path / "c", n_scans=4, n_streamlines=300, seed=6).parent
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "s01" / "s01.trk").read_bytes() != (c / "s01" / "s01.trk").read_bytes()
    sls = nib.streamlines.load(str(a / "s01" / "s01.trk")).streamlines
    lengths = np.array([np.linalg.norm(np.diff(s, axis=0), axis=1).sum() for s in sls])
    steps = np.concatenate([np.linalg.norm(np.diff(s, axis=0), axis=1) for s in sls])
    assert lengths.min() >= 20 and lengths.max() <= 200 and 40 < np.median(lengths) < 90
    assert 0.8 < np.median(steps) < 1.2
    tck = nib.streamlines.load(str(a / "s03" / "s03.tck")).streamlines
    truth = json.loads((a / "truth.json").read_text())
    assert len(sls) == truth["scans"]["s01"]["n_streamlines"]
    assert len(tck) == truth["scans"]["s03"]["n_streamlines"]


# --------------------------------------------------------------------------- references


def read_trk_voxmm(path):
    """Streamlines of a .trk as stored (voxmm), with a plain reader written here."""
    raw = np.fromfile(path, dtype="<u1")
    assert raw[:6].tobytes() == b"TRACK\0"
    words = raw[1000:].view("<i4")
    floats = raw[1000:].view("<f4")
    out, pos = [], 0
    while pos < words.shape[0]:
        n = int(words[pos])
        out.append(floats[pos + 1:pos + 1 + 3 * n].reshape(n, 3))
        pos += 1 + 3 * n
    return out


def reference_ids(voxels_per_streamline, atlas, regions):
    """dsi2's endpoint labeling, one streamline at a time: first and last nonzero label."""
    ids = pair_ids(regions)
    out = np.zeros(len(voxels_per_streamline), dtype=np.int64)
    for s, vox in enumerate(voxels_per_streamline):
        inside = np.all((vox >= 0) & (vox < np.asarray(atlas.shape)), axis=1)
        lab = np.zeros(vox.shape[0], dtype=np.int64)
        lab[inside] = atlas[tuple(vox[inside].T)]
        nz = lab[lab != 0]
        if nz.size >= 2:
            out[s] = ids[(min(nz[0], nz[-1]), max(nz[0], nz[-1]))]
    return out


def mapped_b0_atlas(fib, b0):
    """The QSDR atlas DSI Studio's mapping gives: conformed b0[mx[v], my[v], mz[v]]."""
    with gzip.open(fib, "rb") as fh:
        mat = loadmat(fh)
    dim = tuple(int(d) for d in mat["dimension"].ravel())
    img = nib.load(str(b0))
    data = np.asanyarray(img.dataobj)
    if img.affine[0, 0] > 0:
        data = data[::-1]
    if img.affine[1, 1] > 0:
        data = data[:, ::-1]
    if img.affine[2, 2] < 0:
        data = data[:, :, ::-1]
    m = [mat[k].ravel().astype(np.int64) for k in ("mx", "my", "mz")]
    return data[m[0], m[1], m[2]].reshape(dim, order="F")


def pooled_z(counts, n_streamlines, patient):
    """Per pair, the patients' minus the controls' share of streamlines over the pooled
    Poisson standard error; and the ratio of the shares."""
    c_pat, c_ctl = counts[patient].sum(axis=0), counts[~patient].sum(axis=0)
    n_pat, n_ctl = n_streamlines[patient].sum(), n_streamlines[~patient].sum()
    pooled = (c_pat + c_ctl) / (n_pat + n_ctl)
    se = np.sqrt(pooled * (1 / n_pat + 1 / n_ctl))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (c_pat / n_pat - c_ctl / n_ctl) / se, 0.0)
        ratio = (c_pat / n_pat) / (c_ctl / n_ctl)
    return z, ratio, c_pat, c_ctl


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_planted_effect_recovered_from_the_workflow_outputs(tmp_path):
    local_data = make_study_demo(tmp_path / "demo", n_scans=12, n_streamlines=15_000, seed=0)
    folder = local_data.parent
    proc = run_snakemake(tmp_path / "work", local_data=local_data, qc=True)
    assert "ltpa summary: nothing that affects the results to report" in proc.output
    scans = json.loads(local_data.read_text())
    truth = json.loads((folder / "truth.json").read_text())

    # region list and the planted pair's id from the graphml, by the regions' names
    nodes = graphml_nodes(folder / "atlases" / "scale33.graphml")
    regions = np.array(sorted(nodes))
    by_name = {d["dn_name"]: i for i, d in nodes.items()}
    a, b = sorted(by_name[n] for n in PLANTED)
    ids = pair_ids(regions)
    planted = ids[(a, b)]
    assert planted == truth["planted"]["connection_id"]

    # per-scan connection counts from the npys (column 0: unlabeled, id 0)
    n_ids = len(ids) + 1
    counts = np.zeros((len(scans), n_ids))
    n_streamlines = np.zeros(len(scans))
    for row, scan in enumerate(scans):
        npy = np.load(folder / scan["track_labels"][0]["numpy_path"])
        assert npy.shape[0] == truth["scans"][scan["scan_id"]]["n_streamlines"]
        counts[row] = np.bincount(npy, minlength=n_ids)
        n_streamlines[row] = npy.shape[0]
    patient = np.array([s["scan_group"] == "patient" for s in scans])
    assert patient.sum() == 6
    z, ratio, c_pat, c_ctl = pooled_z(counts, n_streamlines, patient)

    # the planted pair: far below every other pair, patients/controls about 0.7
    others = np.ones(n_ids, dtype=bool)
    others[planted] = False
    others &= (c_pat + c_ctl) >= 20  # pairs with enough streamlines for a z-score
    worst_other = np.abs(z[others]).max()
    print(f"planted pair: z {z[planted]:.2f}, patients/controls {ratio[planted]:.3f} (+- "
          f"{ratio[planted] * math.sqrt(1 / c_pat[planted] + 1 / c_ctl[planted]):.3f}); other "
          f"pairs: max |z| {worst_other:.2f}, mean {z[others].mean():.3f}, sd "
          f"{z[others].std():.3f}, n {others.sum()}; id 0: z {z[0]:.2f}")
    assert z[planted] < -6, z[planted]
    assert abs(z[planted]) > 1.6 * worst_other, (z[planted], worst_other)
    se_ratio = ratio[planted] * math.sqrt(1 / c_pat[planted] + 1 / c_ctl[planted])
    assert abs(ratio[planted] - 0.7) < 3 * se_ratio, (ratio[planted], se_ratio)
    # labeled <= drawn (the rest stopped in white matter), and most of the drawn are labeled
    drawn = np.array([truth["scans"][s["scan_id"]]["planted_pair_drawn"] for s in scans])
    assert (counts[:, planted] <= drawn).all()
    assert counts[:, planted].sum() > 0.8 * drawn.sum()

    # every other pair (and id 0): no systematic difference, z ~ N(0, 1)
    assert others.sum() > 800
    assert abs(z[others].mean()) < 0.15
    assert 0.85 < z[others].std() < 1.2
    assert (np.abs(z[others]) > 3).mean() < 0.01
    assert abs(z[0]) < 3.5
    big = others & (np.minimum(c_pat, c_ctl) >= 200)
    assert 0.95 < np.median(ratio[big]) < 1.05

    # the b0 scan and the .tck scan were processed, and equal an independent labeling
    b0 = next(s for s in scans if s["scan_id"] == truth["b0_scan"])
    lab = b0["track_labels"][0]
    mapped = mapped_b0_atlas(folder / b0["fib_file"], folder / lab["b0_volume_path"])
    written = nib.load(str(folder / lab["volume_path"]))
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), mapped)
    np.testing.assert_allclose(written.affine, QSDR_AFFINE)
    assert set(np.unique(mapped)) == set(range(84))  # no region lost in the mapping
    sls = read_trk_voxmm(folder / b0["trk_file"])
    vox = [np.floor(s.astype(np.float64) / 2.0).astype(np.int64) for s in sls]
    np.testing.assert_array_equal(np.load(folder / lab["numpy_path"]),
                                  reference_ids(vox, mapped, regions))

    tck = next(s for s in scans if s["scan_id"] == truth["tck_scan"])
    lab = tck["track_labels"][0]
    ras = nib.streamlines.load(str(folder / tck["trk_file"])).streamlines
    inv = np.linalg.inv(QSDR_AFFINE)
    vox = [np.floor(r.astype(np.float64) @ inv[:3, :3].T + inv[:3, 3] + 0.5).astype(np.int64)
           for r in ras]
    atlas33 = np.asanyarray(nib.load(str(folder / lab["volume_path"])).dataobj)
    np.testing.assert_array_equal(np.load(folder / lab["numpy_path"]),
                                  reference_ids(vox, atlas33, regions))
    assert (folder / tck["pkl_path"]).exists() and (folder / tck["pkl_trk_path"]).exists()

    # the QC summary: one row per scan and atlas, with the groups and no flags
    from ltpa.qc.tables import read_tsv

    rows = read_tsv(study_folder(local_data) / "qc" / "summary.tsv")
    assert len(rows) == 2 * len(scans)
    group = {s["scan_id"]: s["scan_group"] for s in scans}
    for r in rows:
        assert r["scan_group"] == group[r["scan_id"]]
        assert r["flags"] == "" and r["n_labels_not_in_region_list"] == "0"
        assert int(r["n_streamlines"]) == truth["scans"][r["scan_id"]]["n_streamlines"]
        assert r["region_source"] == ("labels_path" if r["scan_id"] == truth["label_table_scan"]
                                      and r["atlas"] == "scale60" else "graphml")
    scale33_regions = {r["id"] for r in study_regions()["scale33"]}
    assert scale33_regions == set(regions.tolist())

    # the QC's group comparison: the planted pair first, with Welch's t of the per-scan shares
    # computed here from the same counts; every other tested pair's t as well
    table = read_tsv(study_folder(local_data) / "qc" / "group_differences" / "scale33.tsv")
    top = table[0]
    assert (top["group"], top["reference"], top["rank"]) == ("patient", "control", "1")
    assert (top["name_a"], top["name_b"]) == PLANTED and int(top["connection_id"]) == planted
    assert float(top["ratio"]) < 0.85  # (6 + 6 scans: q 0.056, just above the flag's 0.05)
    shares = counts / n_streamlines[:, None]
    x, y = shares[patient], shares[~patient]
    se2 = x.var(axis=0, ddof=1) / len(x) + y.var(axis=0, ddof=1) / len(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        welch = (x.mean(axis=0) - y.mean(axis=0)) / np.sqrt(se2)
    tested = (counts[:, 1:].mean(axis=0) >= 5) & (se2[1:] > 0)
    assert float(top["welch_t"]) == pytest.approx(welch[planted], rel=1e-5)
    got = {int(r["connection_id"]): float(r["welch_t"]) for r in table}
    assert sorted(got) == (np.flatnonzero(tested) + 1).tolist()
    np.testing.assert_allclose([got[i] for i in sorted(got)], welch[1:][tested], rtol=1e-5)
    second = max(abs(float(r["welch_t"])) for r in table[1:])
    print(f"group differences: planted pair t {welch[planted]:.2f} p {top['p']} (rank 1), next "
          f"|t| {second:.2f} p {table[1]['p']}, {len(table)} pairs tested")
    assert abs(welch[planted]) > 1.4 * second and float(top["p"]) < 0.1 * float(table[1]["p"])
    assert (study_folder(local_data) / "report" / "group_differences" / "scale33.png"
            ).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # LTPA on the same outputs: the planted pair's group-difference map (patients - controls)
    # is negative along its bundle and family-wise significant; the three other pairs with
    # the most streamlines (no effect planted) have no family-wise significant center
    import warnings

    from ltpa import TrackDataSource, run_ltpa

    source = TrackDataSource(local_data)
    source.change_atlas("Lausanne2008", scale=33)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # patterns computed in memory (none built)
        patterns = source.termination_patterns(1)  # once, for the four maps
    total = counts[:, 1:].sum(axis=0)
    total[planted - 1] = -1
    nulls = [int(i) + 1 for i in np.argsort(total)[::-1][:3]]
    results = {}
    for cid in [planted] + nulls:
        res = run_ltpa("group_difference", patterns, radius=1, connection=cid,
                       groups=("control", "patient"), n_permutations=200, seed=0)
        t, p = np.asarray(res.values), np.asarray(res.p_fwe)
        tested = np.isfinite(t)
        results[cid] = (t[tested], p[tested])
    t, p = results[planted]
    print(f"LTPA planted pair: {t.size} centers tested, median t {np.median(t):.2f}, min t "
          f"{t.min():.2f}, {int((p <= 0.05).sum())} with p_fwe <= 0.05; null pairs: "
          + ", ".join(f"{c}: min p_fwe {results[c][1].min():.3f}" for c in nulls))
    assert t.size > 50 and np.median(t) < 0 and (p <= 0.05).any()
    assert (t[p <= 0.05] < 0).all()
    for cid in nulls:
        assert results[cid][0].size > 50 and (results[cid][1] > 0.05).all(), cid


# --------------------------------------------------------------------------- repeat scans


def cosine_matrix(counts):
    """Pairwise cosine similarity of the rows of ``counts`` (one scan per row)."""
    unit = counts / np.linalg.norm(counts, axis=1, keepdims=True)
    return unit @ unit.T


def test_repeats_make_a_subjects_scans_more_alike_than_two_subjects(tmp_path):
    """`ltpa demo --repeats 2`: each subject has 2 scans with one subject_id, group and
    attributes; the per-scan connection-count vectors (ids not 0) of a subject's two scans
    are more alike (cosine similarity) than those of two subjects, far beyond the spread of
    the between-subject pairs."""
    from ltpa.jobs.pipeline import label_scan

    local_data = make_study_demo(tmp_path / "d", n_scans=12, n_streamlines=4000, seed=2,
                                 repeats=2)
    folder = local_data.parent
    scans = json.loads(local_data.read_text())
    subjects = [s["subject_id"] for s in scans]
    assert len(set(subjects)) == 6 and all(subjects.count(s) == 2 for s in subjects)
    for a, b in zip(scans[::2], scans[1::2]):  # a subject's scans are consecutive
        assert a["subject_id"] == b["subject_id"] and a["scan_id"] != b["scan_id"]
        assert (a["scan_group"], a["attributes"]) == (b["scan_group"], b["attributes"])
    assert sorted(s["scan_group"] for s in scans[::2]) == ["control"] * 3 + ["patient"] * 3
    truth = json.loads((folder / "truth.json").read_text())
    assert truth["repeats"]["scans_per_subject"] == 2
    # the npys, labeled with the study's scale33 atlas in QSDR (the b0 scan's streamlines are
    # in QSDR too; only its atlas files are in b0 space)
    atlas = tmp_path / "scale33.nii.gz"
    nib.Nifti1Image(study_atlas()["scale33"], QSDR_AFFINE).to_filename(atlas)
    n_ids = 83 * 84 // 2 + 1
    counts = np.zeros((len(scans), n_ids))
    for row, scan in enumerate(scans):
        npy = tmp_path / f"{scan['scan_id']}.npy"
        label_scan(folder / scan["trk_file"], atlas, npy, sidecar=False)
        counts[row] = np.bincount(np.load(npy), minlength=n_ids)
    sim = cosine_matrix(counts[:, 1:])
    same = np.array(subjects)[:, None] == np.array(subjects)[None, :]
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    within, between = sim[same & upper], sim[~same & upper]
    print(f"cosine similarity of connection counts: within subjects {within.mean():.3f} "
          f"(min {within.min():.3f}, n {within.size}), between {between.mean():.3f} (max "
          f"{between.max():.3f}, sd {between.std():.3f}, n {between.size})")
    assert within.size == 6 and between.size == 60
    assert within.mean() > between.mean() + 5 * between.std()
    assert within.min() > between.max()


def test_repeats_show_in_the_ltpa_similarity_maps(tmp_path):
    """The repeat demo's pkls and npys made by the workflow's own job runner, then LTPA's
    similarity at r = 1: at the centers both maps cover, scans of one subject have more
    alike termination patterns than scans of two subjects, as Cieslak & Grafton report."""
    import warnings

    from ltpa import TrackDataSource, run_ltpa
    from ltpa.jobs.pipeline import run
    from ltpa.study.config import with_defaults
    from ltpa.study.study import load_study
    from ltpa.study.targets import RULE_EXPORT, RULE_MAP_B0

    local_data = make_study_demo(tmp_path / "d", n_scans=8, n_streamlines=4000, seed=3,
                                 repeats=2)
    config = with_defaults({"local_data": str(local_data)})
    study = load_study(local_data, config)
    # what the maps read: the pkls and the scale33 npys (not the .pkl.trk exports, nor the
    # scale60 atlas's files)
    needed = [t for t in study.targets if t.rule != RULE_EXPORT
              and (t.label is None or t.label.parameters.get("scale") == 33)]
    assert {t.rule for t in needed} == {"index_streamlines", "label_streamlines", RULE_MAP_B0}
    for t in sorted(needed, key=lambda t: t.rule != RULE_MAP_B0):  # b0 atlases first
        run(t.spec(config))
    source = TrackDataSource(local_data)
    source.change_atlas("Lausanne2008", scale=33)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # patterns computed in memory (none built)
        patterns = source.termination_patterns(1)  # once, for both maps
    res = run_ltpa("similarity", patterns, radius=1)
    # where every scan has a pattern to speak of (a sphere with one streamline per scan
    # has similarity 0 or 1 whatever the subject)
    cov = run_ltpa("coverage", patterns, radius=1, min_tracks=10)
    assert np.array_equal(cov.centers, res.centers)
    within, between = np.asarray(res.within_subject), np.asarray(res.between_subject)
    both = np.isfinite(within) & np.isfinite(between) & (np.asarray(cov.values) == len(source))
    print(f"similarity at {int(both.sum())} centers: within subjects "
          f"{within[both].mean():.3f}, between {between[both].mean():.3f}; within > between "
          f"at {(within[both] > between[both]).mean():.0%}")
    assert both.sum() > 1000
    assert within[both].mean() > between[both].mean() + 0.03
    assert (within[both] > between[both]).mean() > 0.6


def test_without_repeats_no_subject_variation(tmp_path):
    """repeats=1 is the study without repeats: one subject per scan, and no truth.repeats."""
    local_data = make_study_demo(tmp_path / "d", n_scans=4, n_streamlines=200, repeats=1)
    scans = json.loads(local_data.read_text())
    assert len({s["subject_id"] for s in scans}) == 4
    assert "repeats" not in json.loads((local_data.parent / "truth.json").read_text())
    with pytest.raises(ValueError, match="repeats 3"):
        make_study_demo(tmp_path / "e", n_scans=8, repeats=3)
    with pytest.raises(ValueError, match="at least 4 subjects"):
        make_study_demo(tmp_path / "e", n_scans=6, repeats=2)


def test_cli_repeats_names_the_bad_value(tmp_path, capsys):
    from ltpa.cli import main

    assert main(["demo", str(tmp_path / "d"), "--repeats", "2", "--scans", "6"]) == 1
    err = capsys.readouterr().err
    assert "--scans 6 --repeats 2" in err and "at least 4 subjects" in err
    assert main(["demo", str(tmp_path / "d"), "--repeats", "0"]) == 1
    assert "--repeats 0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # nothing written
    assert main(["demo", str(tmp_path / "d"), "--repeats", "2", "--scans", "8",
                 "--streamlines", "200"]) == 0
    scans = json.loads((tmp_path / "d" / "local_data.json").read_text())
    assert [s["subject_id"] for s in scans] == [f"sub-0{i // 2 + 1}" for i in range(8)]

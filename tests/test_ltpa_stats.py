"""run_ltpa's built-in statistics against plain numpy/scipy at sampled centers (patterns from
query_ijk of the sphere), the callable path against the built-ins, maps on disk, bad input."""

import itertools
import json
import math
import subprocess
import warnings

import nibabel as nib
import numpy as np
import pytest
from scipy import stats as sps

from conftest import BIN
from ltpa import LtpaError, LtpaResult, run_ltpa
from ltpa.analysis.maps import extra_map_path, write_map
from ltpa.prepared.patterns import patterns_path, read_patterns, save_patterns
from ltpa_helpers import brute_patterns, build_study, source_of

SCALE33 = {"name": "Lausanne2008", "scale": 33}
PLANTED = ("lh.superiorfrontal", "lh.precuneus")
RADIUS = 1


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """6 scans (.trk, b0-space, .tck, .trk, and the first scan again as .trk.gz and .trx:
    three scans of one subject); scans 3 and 4 made one subject too."""
    path = build_study(tmp_path_factory.mktemp("stats") / "study")
    scans = json.loads(path.read_text())
    scans[3]["subject_id"] = scans[2]["subject_id"]
    path.write_text(json.dumps(scans, indent=1))
    return path


@pytest.fixture(scope="module")
def source(study):
    return source_of(study, SCALE33)


@pytest.fixture(scope="module")
def sampled(source):
    """~60 centers (some in the planted bundle) and the brute-force patterns there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp = source.termination_patterns(RADIUS)
    rng = np.random.default_rng(7)
    lin = sp.centers()
    picks = list(rng.choice(lin, 45, replace=False))
    cid = source.connection_id(*PLANTED)
    for pos in range(len(source)):
        p = sp.scans[pos]
        rows = np.repeat(np.arange(p.n_centers), np.diff(np.asarray(p.indptr)))
        hit = np.asarray(p.centers)[rows[np.asarray(p.connection_ids) == cid]]
        picks += list(rng.choice(hit, min(3, hit.shape[0]), replace=False))
    ijk = sp.ijk(np.unique(picks))
    return ijk, [brute_patterns(source, v, RADIUS, sp.dim) for v in ijk]


def run(stat, source, centers, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_ltpa(stat, source, radius=RADIUS, centers=centers, **kw)


# --------------------------------------------------------------------------- references


def total(p):
    return sum(p.values())


def vector(p, ids, mt):
    return np.array([p.get(i, 0) if p.get(i, 0) >= mt else 0 for i in ids], dtype=float)


def cosine_pairs(patterns, mt, subjects):
    """(all, within-subject, between-subject) lists of pairwise cosines of non-empty vectors."""
    ids = sorted({i for p in patterns for i in p if i != 0})
    vecs = [vector(p, ids, mt) for p in patterns]
    keep = [s for s, v in enumerate(vecs) if v.any()]
    all_, within, between = [], [], []
    for a, b in itertools.combinations(keep, 2):
        cos = float(vecs[a] @ vecs[b] / np.linalg.norm(vecs[a]) / np.linalg.norm(vecs[b]))
        all_.append(cos)
        same = subjects[a] is not None and subjects[a] == subjects[b]
        (within if same else between).append(cos)
    return all_, within, between


def mean_or_nan(values):
    return float(np.mean(values)) if values else math.nan


@pytest.mark.parametrize("mt", [1, 2])
def test_simple_statistics_equal_numpy(source, sampled, mt):
    ijk, ref = sampled
    n = len(source)
    cov = run("coverage", source, ijk, min_tracks=mt)
    sl = run("streamlines", source, ijk, min_tracks=mt)
    con = run("connections", source, ijk, min_tracks=mt)
    for c, pats in enumerate(ref):
        assert cov.values[c] == sum(total(p) >= mt for p in pats)
        assert sl.values[c] == pytest.approx(np.mean([total(p) for p in pats]))
        assert con.values[c] == pytest.approx(
            sum(sum(1 for i, k in p.items() if i != 0 and k >= mt) for p in pats) / n)
    np.testing.assert_array_equal(cov.centers, ijk)


@pytest.mark.parametrize("mt", [1, 2])
def test_similarity_equals_pairwise_cosines(source, sampled, mt):
    ijk, ref = sampled
    subjects = source.scans.column("subject_id")
    assert len(set(subjects)) < len(subjects)  # repeat scans: within / between maps
    res = run("similarity", source, ijk, min_tracks=mt)
    assert set(res.maps) == {"similarity", "within_subject", "between_subject"}
    within = run("within_subject", source, ijk, min_tracks=mt)
    n_checked = 0
    for c, pats in enumerate(ref):
        all_, wi, be = cosine_pairs(pats, mt, subjects)
        for got, want in ((res.values[c], mean_or_nan(all_)),
                          (res.within_subject[c], mean_or_nan(wi)),
                          (res.between_subject[c], mean_or_nan(be)),
                          (within.values[c], mean_or_nan(wi))):
            if math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == pytest.approx(want, abs=1e-9)
                n_checked += 1
    assert n_checked > 20


def welch_reference(x, in_b, mt, min_scans):
    """scipy's Welch t (B vs A) where tested, else NaN."""
    if (x >= mt).sum() < min_scans:
        return math.nan
    a, b = x[~in_b], x[in_b]
    if a.var() == 0 and b.var() == 0:
        return math.nan
    return float(sps.ttest_ind(b, a, equal_var=False).statistic)


def test_group_difference_equals_scipy(source, sampled):
    ijk, ref = sampled
    groups = np.array(source.scans.column("scan_group"))
    cid = source.connection_id(*PLANTED)
    in_b = groups == "patient"
    for mt, min_scans in ((1, None), (2, 2)):
        kw = {} if min_scans is None else {"min_scans": min_scans}
        res = run("group_difference", source, ijk, min_tracks=mt, connection=PLANTED,
                  groups=("control", "patient"), **kw)
        need = math.ceil(len(groups) / 2) if min_scans is None else min_scans
        n_tested = 0
        for c, pats in enumerate(ref):
            x = np.array([p.get(cid, 0) for p in pats], dtype=float)
            want = welch_reference(x, in_b, mt, need)
            if math.isnan(want):
                assert math.isnan(res.values[c])
            else:
                n_tested += 1
                assert res.values[c] == pytest.approx(want, rel=1e-9)
        assert n_tested >= 3
    # the same connection by id, by region numbers
    by_id = run("group_difference", source, ijk, connection=cid, groups=("control", "patient"))
    a, b = source.decode([cid])
    by_num = run("group_difference", source, ijk, connection=(int(a[0]), str(int(b[0]))),
                 groups=("control", "patient"))
    np.testing.assert_array_equal(by_id.values, by_num.values)


def test_permutation_p_fwe_equals_scipy_over_permutations(source):
    groups = np.array(source.scans.column("scan_group"))
    n_perm = 60
    res = run("group_difference", source, None, connection=PLANTED,
              groups=("control", "patient"), n_permutations=n_perm, seed=3)
    t = res.values
    tested = np.flatnonzero(~np.isnan(t))
    assert tested.shape[0] > 20
    # the tested centers' counts, read back from the patterns one scan at a time
    sp = source.termination_patterns(RADIUS)
    cid = source.connection_id(*PLANTED)
    lin = sp.linear(res.centers[tested])
    x = np.zeros((tested.shape[0], len(groups)))
    for s, p in enumerate(sp.scans):
        for r, v in enumerate(lin):
            k = np.searchsorted(p.centers, v)
            if k < p.n_centers and p.centers[k] == v:
                row = slice(p.indptr[k], p.indptr[k + 1])
                hit = np.asarray(p.connection_ids[row]) == cid
                x[r, s] = np.asarray(p.counts[row])[hit].sum()
    # the documented procedure: default_rng(seed), one permutation of the labels each
    rng = np.random.default_rng(3)
    in_b = (groups == "patient").astype(float)
    maxima = []
    for _ in range(n_perm):
        perm = rng.permutation(in_b).astype(bool)
        a, b = x[:, ~perm], x[:, perm]
        tp = sps.ttest_ind(b, a, axis=1, equal_var=False).statistic
        flat = (a.var(axis=1) == 0) & (b.var(axis=1) == 0)
        maxima.append(np.nanmax(np.abs(np.where(flat, 0, tp))))
    maxima = np.array(maxima)
    want = [(1 + np.sum(maxima >= abs(v) - 1e-9)) / (1 + n_perm) for v in t[tested]]
    np.testing.assert_allclose(res.p_fwe[tested], want)
    assert np.isnan(res.p_fwe[np.isnan(t)]).all()


# --------------------------------------------------------------------------- callables


def coverage_fn(pm):
    return float((pm.totals >= 1).sum())


def similarity_fn(pm):
    keep = pm.connection_ids != 0
    v = pm.counts[:, keep].astype(float)
    v = v[(v > 0).any(axis=1)]
    if v.shape[0] < 2:
        return math.nan
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    cos = u @ u.T
    return float(cos[np.triu_indices(v.shape[0], 1)].mean())


def test_callable_path_equals_builtins(source, rng):
    sp = source.termination_patterns(RADIUS)
    lin = rng.choice(sp.centers(), 1500, replace=False)
    ijk = sp.ijk(lin)
    for fn, stat in ((coverage_fn, "coverage"), (similarity_fn, "similarity")):
        builtin = run(stat, source, ijk)
        one = run(fn, source, ijk, progress=False)
        np.testing.assert_allclose(one.values, builtin.values, atol=1e-12)
    two = run(similarity_fn, sp, ijk, n_jobs=2, progress=False)
    np.testing.assert_allclose(two.values, one.values, atol=0)
    # at_ijk gives what the callable got
    c = int(np.nanargmax(one.values))
    assert similarity_fn(sp.at_ijk(tuple(ijk[c]))) == one.values[c]


def test_pattern_matrix_options(source, sampled):
    ijk, ref = sampled
    sp = source.termination_patterns(RADIUS)
    for v, pats in zip(ijk[:20], ref[:20]):
        union = sp.at_ijk(tuple(v), min_tracks=2)
        inter = sp.at_ijk(tuple(v), min_tracks=2, across="intersection")
        want_u = sorted({i for p in pats for i, k in p.items() if k >= 2})
        want_i = sorted(set.intersection(*[{i for i, k in p.items() if k >= 2}
                                           for p in pats]))
        assert union.connection_ids.tolist() == want_u
        assert inter.connection_ids.tolist() == want_i
        for s, p in enumerate(pats):
            assert union.counts[s].tolist() == [p.get(i, 0) if p.get(i, 0) >= 2 else 0
                                                for i in want_u]
        assert len(union.region_pairs) == len(want_u)
    pm = sp.at_ijk((0, 0, 0))
    assert pm.counts.shape == (len(source), 0) and pm.scan_ids == source.scan_ids


def test_connection_id_takes_region_names(source):
    names = {v: k for k, v in source.region_names().items()}
    a, b = names[PLANTED[0]], names[PLANTED[1]]
    assert source.connection_id(*PLANTED) == source.connection_id(a, b) == \
        source.connection_id(str(b), PLANTED[0])
    with pytest.raises(LtpaError, match="region 'lh.nowhere' is not a region name"):
        source.connection_id("lh.nowhere", PLANTED[1])


# --------------------------------------------------------------------------- maps on disk


def test_result_volume_and_write_map(study, source, tmp_path):
    res = run("coverage", source, None)
    img = res.to_nifti()
    data = np.asarray(img.dataobj)
    sp = source.termination_patterns(RADIUS)
    assert data.shape == sp.dim
    np.testing.assert_allclose(img.affine, sp.affine)
    np.testing.assert_array_equal(data[tuple(res.centers.T)], res.values)
    assert np.isnan(data).sum() == data.size - len(res)
    out = tmp_path / "maps" / "gd.nii.gz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = write_map(study, out, atlas=SCALE33, radius=RADIUS, stat="group_difference",
                            connection=PLANTED, groups=("control", "patient"),
                            n_permutations=20)
    assert written["p_fwe"] == extra_map_path(out, "p_fwe") == tmp_path / "maps" / \
        "gd.p_fwe.nii.gz"
    body = json.loads((tmp_path / "maps" / "gd.nii.gz.json").read_text())
    assert body["stat"] == "group_difference" and body["options"]["n_permutations"] == 20
    assert body["options"]["connection_regions"] == list(PLANTED)
    t = np.asarray(nib.load(str(out)).dataobj)
    assert np.nanmin(t) < 0 and np.isfinite(np.asarray(nib.load(
        str(written["p_fwe"])).dataobj)).sum() == np.isfinite(t).sum()


def test_cli_map(study, tmp_path):
    out = tmp_path / "sim.nii.gz"
    proc = subprocess.run([str(BIN / "ltpa"), "map", str(study), "--atlas", "Lausanne2008",
                           "--param", "scale=33", "--radius", "1", "--stat", "similarity",
                           "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ltpa: similarity [" in proc.stderr
    assert extra_map_path(out, "within_subject").exists()
    src = source_of(study, SCALE33)
    want = run("similarity", src, None)
    np.testing.assert_allclose(want.volume(), np.asarray(nib.load(str(out)).dataobj),
                               equal_nan=True, rtol=1e-6)


# --------------------------------------------------------------------------- bad input


def bad(source, match, stat="coverage", **kw):
    with pytest.raises(LtpaError, match=match):
        run(stat, source, kw.pop("centers", None), **kw)


def test_bad_input_is_named(study, source, tmp_path):
    bad(source, "unknown statistic 'mean'", stat="mean")
    bad(source, "statistic 'coverage' takes no option 'groups'", groups=("a", "b"))
    bad(source, r"outside the key grid", centers=np.array([[0, 0, 0], [91, 2, 2]]))
    bad(source, "min_tracks 0", min_tracks=0)
    nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), np.eye(4)).to_filename(
        str(tmp_path / "m.nii.gz"))
    bad(source, r"m\.nii\.gz.*resample the mask", centers=str(tmp_path / "m.nii.gz"))
    gd = dict(stat="group_difference", groups=("control", "patient"))
    bad(source, "connection 99999 is not in the atlas", connection=99999, **gd)
    bad(source, "region 'lh.nowhere'", connection=("lh.nowhere", "lh.precuneus"), **gd)
    bad(source, "needs connection=", **gd)
    bad(source, r"group 'nurse' is not a scan_group.*'control' \(", stat="group_difference",
        connection=PLANTED, groups=("control", "nurse"))
    bad(source, "needs groups=", stat="group_difference", connection=PLANTED)
    bad(source, "min_scans 99", min_scans=99, connection=PLANTED, **gd)
    with pytest.raises(LtpaError, match="radius 11"):
        run_ltpa("coverage", source, radius=11)


def test_groups_with_one_scan_and_no_repeats(study, tmp_path):
    scans = json.loads(study.read_text())
    scans[0]["scan_group"] = "nurse"
    for rec in scans:
        rec["subject_id"] = rec["scan_id"]
    path = study.parent / "one.json"
    path.write_text(json.dumps(scans))
    src = source_of(path, SCALE33)
    bad(src, r"group 'nurse' has 1 scan", stat="group_difference", connection=PLANTED,
        groups=("nurse", "control"))
    bad(src, "no two scans share a subject_id", stat="within_subject")
    assert set(run("similarity", src, np.array([[45, 47, 60]])).maps) == {"similarity"}


def test_different_region_lists_or_grids_are_errors_nothing_written(study, tmp_path):
    scans = json.loads(study.read_text())
    labels = scans[1]["track_labels"]
    labels[0]["numpy_path"] = labels[1]["numpy_path"]  # scale60's ids under the scale33 entry
    del labels[1:]
    path = study.parent / "mixed.json"
    path.write_text(json.dumps(scans))
    out = tmp_path / "m.nii.gz"
    with pytest.raises(LtpaError, match=r"scans 's01' and 's02' have different region lists"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_map(path, out, atlas=SCALE33, radius=0, stat="coverage")
    assert not out.exists() and not (tmp_path / "m.nii.gz.json").exists()
    # a pattern file of another grid (what a scan hashed into another space would give)
    src = source_of(study, SCALE33)
    sp = src.termination_patterns(0)
    scan = json.loads(study.read_text())[2]
    npy = study.parent / scan["track_labels"][0]["numpy_path"]
    p = sp.scans[2]
    p.meta["dim"] = [91, 109, 92]
    target = patterns_path(npy, 0)
    save_patterns(p, target)
    try:
        assert read_patterns(target).dim == (91, 109, 92)
        with pytest.raises(LtpaError, match=r"scans 's01' and 's03' have different key grids"):
            run_ltpa("coverage", src, radius=0)
    finally:
        target.unlink()


def test_result_repr_and_save_checks(source, tmp_path):
    res = run("streamlines", source, np.array([[45, 47, 60]]))
    assert isinstance(res, LtpaResult) and "streamlines" in repr(res)
    with pytest.raises(LtpaError, match="expected a .nii or .nii.gz"):
        res.save(tmp_path / "x.png")
    with pytest.raises(LtpaError, match="no map 'p_fwe'"):
        res.volume("p_fwe")
    assert res.p_fwe is None


def test_blocks_sized_by_entries_give_the_same_maps(source, monkeypatch):
    """A study with many entries per center gets blocks of fewer centers (BLOCK_ENTRIES);
    the maps, permutation p included, do not depend on the blocks."""
    from ltpa.analysis import run as run_module

    sp = source.termination_patterns(RADIUS)
    per_center = sp.entries_per_center()
    want = sum(p.n_entries / p.n_centers for p in sp.scans)
    assert per_center == pytest.approx(want) and per_center > 6
    options = dict(connection=PLANTED, groups=("control", "patient"), n_permutations=20,
                   seed=1)
    whole = run("group_difference", source, None, **options)
    sim = run("similarity", source, None)
    monkeypatch.setattr(run_module, "BLOCK_ENTRIES", math.ceil(per_center * 37))
    assert run_module._centers_per_block(sp, run_module.BLOCK_SIZE) == 37
    small = run("group_difference", source, None, **options)
    np.testing.assert_array_equal(small.centers, whole.centers)
    np.testing.assert_allclose(small.values, whole.values, equal_nan=True)
    np.testing.assert_allclose(small.p_fwe, whole.p_fwe, equal_nan=True)
    np.testing.assert_allclose(run("similarity", source, None).values, sim.values,
                               equal_nan=True)

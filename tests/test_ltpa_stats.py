"""run_ltpa's built-in statistics against plain numpy/scipy at sampled centers (patterns from
query_ijk of the sphere), the callable path against the built-ins, maps on disk, bad input."""

import itertools
import json
import math
import warnings

import nibabel as nib
import numpy as np
import pytest
from scipy import stats as sps

from conftest import ltpa_main
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
def patterns(source):
    """The study's patterns at RADIUS, computed once (no file built: on the fly, as each
    ``run_ltpa`` of the source computes them). The tests only read them; each test whose
    concern is a statistic's values runs it on these, and keeps its run(s) through the
    source where the source path is its concern (connection by regions, masks, the
    command line, checks before any pattern is computed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return source.termination_patterns(RADIUS)


@pytest.fixture(scope="module")
def sampled(source, patterns):
    """~60 centers (some in the planted bundle) and the brute-force patterns there."""
    sp = patterns
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
def test_simple_statistics_equal_numpy(source, patterns, sampled, mt):
    ijk, ref = sampled
    n = len(source)
    cov = run("coverage", source, ijk, min_tracks=mt)  # through the source
    sl = run("streamlines", patterns, ijk, min_tracks=mt)
    con = run("connections", patterns, ijk, min_tracks=mt)
    for c, pats in enumerate(ref):
        assert cov.values[c] == sum(total(p) >= mt for p in pats)
        assert sl.values[c] == pytest.approx(np.mean([total(p) for p in pats]))
        assert con.values[c] == pytest.approx(
            sum(sum(1 for i, k in p.items() if i != 0 and k >= mt) for p in pats) / n)
    np.testing.assert_array_equal(cov.centers, ijk)


@pytest.mark.parametrize("mt", [1, 2])
def test_similarity_equals_pairwise_cosines(source, patterns, sampled, mt):
    ijk, ref = sampled
    subjects = source.scans.column("subject_id")
    assert len(set(subjects)) < len(subjects)  # repeat scans: within / between maps
    res = run("similarity", source, ijk, min_tracks=mt)
    assert set(res.maps) == {"similarity", "within_subject", "between_subject"}
    within = run("within_subject", patterns, ijk, min_tracks=mt)
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


def test_group_difference_equals_scipy(source, patterns, sampled):
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
    by_id = run("group_difference", patterns, ijk, connection=cid,
                groups=("control", "patient"))
    a, b = source.decode([cid])
    by_num = run("group_difference", source, ijk, connection=(int(a[0]), str(int(b[0]))),
                 groups=("control", "patient"))
    np.testing.assert_array_equal(by_id.values, by_num.values)


def test_permutation_p_fwe_equals_scipy_over_permutations(source, patterns):
    groups = np.array(source.scans.column("scan_group"))
    n_perm = 60
    res = run("group_difference", source, None, connection=PLANTED,
              groups=("control", "patient"), n_permutations=n_perm, seed=3)
    t = res.values
    tested = np.flatnonzero(~np.isnan(t))
    assert tested.shape[0] > 20
    # the tested centers' counts, read back from the patterns one scan at a time
    sp = patterns
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


def test_callable_path_equals_builtins(source, patterns, rng):
    sp = patterns
    lin = rng.choice(sp.centers(), 1500, replace=False)
    ijk = sp.ijk(lin)
    for fn, stat in ((coverage_fn, "coverage"), (similarity_fn, "similarity")):
        builtin = run(stat, sp, ijk)
        one = run(fn, source, ijk, progress=False)  # the callable through the source
        np.testing.assert_allclose(one.values, builtin.values, atol=1e-12)
    two = run(similarity_fn, sp, ijk, n_jobs=2, progress=False)
    np.testing.assert_allclose(two.values, one.values, atol=0)
    # at_ijk gives what the callable got
    c = int(np.nanargmax(one.values))
    assert similarity_fn(sp.at_ijk(tuple(ijk[c]))) == one.values[c]


def bundle_centers(sp, cid):
    """Sorted linear numbers of the centers where any scan has connection ``cid``, read from
    the patterns' CSR arrays one scan at a time."""
    found = []
    for p in sp.scans:
        rows = np.repeat(np.arange(p.n_centers), np.diff(np.asarray(p.indptr)))
        found.append(np.asarray(p.centers)[rows[np.asarray(p.connection_ids) == cid]])
    return np.unique(np.concatenate(found))


def streamlines_fn(pm):
    return float(pm.totals.mean())


def connections_fn(pm):
    labeled = pm.connection_ids != 0
    return float((pm.counts[:, labeled] > 0).sum() / pm.counts.shape[0])


def cosines_by_subject(pm):
    """(within, between) lists of the cosines of the scans' id != 0 vectors, empty ones left
    out, from the PatternMatrix alone (its subject_ids)."""
    v = pm.counts[:, pm.connection_ids != 0].astype(float)
    keep = [s for s in range(v.shape[0]) if v[s].any()]
    within, between = [], []
    for a, b in itertools.combinations(keep, 2):
        cos = float(v[a] @ v[b] / np.linalg.norm(v[a]) / np.linalg.norm(v[b]))
        same = pm.subject_ids[a] is not None and pm.subject_ids[a] == pm.subject_ids[b]
        (within if same else between).append(cos)
    return within, between


def within_subject_fn(pm):
    return mean_or_nan(cosines_by_subject(pm)[0])


def between_subject_fn(pm):
    return mean_or_nan(cosines_by_subject(pm)[1])


def welch_fn(cid, groups):
    """Welch's t of id ``cid``'s counts, B - A, where half the two groups' scans have it."""

    def group_difference_fn(pm):
        col = np.flatnonzero(pm.connection_ids == cid)
        x = pm.counts[:, col[0]].astype(float) if col.shape[0] else np.zeros(len(pm))
        g = np.asarray(pm.scan_groups)
        a, b = x[g == groups[0]], x[g == groups[1]]
        if (np.concatenate([a, b]) >= 1).sum() < math.ceil((a.size + b.size) / 2):
            return math.nan
        se2 = a.var(ddof=1) / a.size + b.var(ddof=1) / b.size
        return (b.mean() - a.mean()) / math.sqrt(se2) if se2 > 0 else math.nan

    return group_difference_fn


def test_every_builtin_equals_a_plain_function_of_the_pattern_matrix(source, patterns, rng):
    """streamlines, connections (min_tracks 2), group_difference (t), within_subject and
    between_subject: the built-in map equals the map of a Python function over each
    center's PatternMatrix, at the same centers (random ones and the planted bundle's)."""
    sp = patterns
    cid = source.connection_id(*PLANTED)
    bundle = bundle_centers(sp, cid)
    lin = np.unique(np.concatenate([rng.choice(sp.centers(), 1000, replace=False),
                                    rng.choice(bundle, min(500, bundle.shape[0]),
                                               replace=False)]))
    ijk = sp.ijk(lin)
    groups = ("control", "patient")
    cases = [("streamlines", streamlines_fn, {}, {}),
             ("connections", connections_fn, {"min_tracks": 2}, {}),
             ("within_subject", within_subject_fn, {}, {}),
             ("between_subject", between_subject_fn, {}, {}),
             ("group_difference", welch_fn(cid, groups), {},
              {"connection": PLANTED, "groups": groups})]
    for stat, fn, common, options in cases:
        # group_difference through the source (its connection by region names)
        builtin = run(stat, source if "connection" in options else sp, ijk, **common,
                      **options)
        mine = run(fn, sp, ijk, progress=False, **common)
        np.testing.assert_array_equal(builtin.centers, mine.centers)
        np.testing.assert_allclose(mine.values, builtin.values, rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=stat)
        finite = np.isfinite(builtin.values).sum()
        assert finite >= (30 if stat == "group_difference" else 300), (stat, finite)
        assert len(set(np.round(builtin.values[np.isfinite(builtin.values)], 9))) > 3, stat


def test_pattern_matrix_options(source, patterns, sampled):
    ijk, ref = sampled
    sp = patterns
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


def test_result_volume_and_write_map(study, source, patterns, tmp_path):
    res = run("coverage", source, None)
    img = res.to_nifti()
    data = np.asarray(img.dataobj)
    sp = patterns
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


def test_cli_map(study, patterns, tmp_path, capfd):
    out = tmp_path / "sim.nii.gz"
    proc = ltpa_main(capfd, "map", study, "--atlas", "Lausanne2008", "--param", "scale=33",
                     "--radius", "1", "--stat", "similarity", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "ltpa: similarity [" in proc.stderr
    assert extra_map_path(out, "within_subject").exists()
    want = run("similarity", patterns, None)
    np.testing.assert_allclose(want.volume(), np.asarray(nib.load(str(out)).dataobj),
                               equal_nan=True, rtol=1e-6)


# --------------------------------------------------------------------------- masks, CLI, progress


def mask_in_the_key_grid(sp, rng, path, cid):
    """A mask NIfTI in the key grid: 300 centers of the planted bundle (connection ``cid``)
    and 300 random centers of any scan; returns its voxels (sorted linear numbers)."""
    bundle = bundle_centers(sp, cid)
    lin = np.unique(np.concatenate([rng.choice(sp.centers(), 300, replace=False),
                                    rng.choice(bundle, min(300, bundle.shape[0]),
                                               replace=False)]))
    mask = np.zeros(sp.dim, np.uint8)
    mask[tuple(sp.ijk(lin).T)] = 1
    nib.Nifti1Image(mask, sp.affine).to_filename(str(path))
    return lin


def test_mask_nifti_as_centers(source, patterns, rng, tmp_path):
    sp = patterns
    lin = mask_in_the_key_grid(sp, rng, tmp_path / "mask.nii.gz",
                               source.connection_id(*PLANTED))
    whole = run("similarity", sp, None)
    masked = run("similarity", source, str(tmp_path / "mask.nii.gz"))
    np.testing.assert_array_equal(masked.centers, sp.ijk(lin))  # its voxels, sorted
    at = {tuple(v): x for v, x in zip(whole.centers.tolist(), whole.values)}
    np.testing.assert_array_equal(masked.values, [at.get(tuple(v), np.nan)
                                                  for v in masked.centers.tolist()])
    assert np.isfinite(masked.values).sum() > 100
    # the same mask as a nibabel image with its axes flipped (another voxel order of the
    # same grid): the same centers and values
    img = nib.load(str(tmp_path / "mask.nii.gz"))
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = sp.dim[0] - 1
    flipped = nib.Nifti1Image(np.asarray(img.dataobj)[::-1], img.affine @ flip)
    again = run("similarity", sp, flipped)
    np.testing.assert_array_equal(again.centers, masked.centers)
    np.testing.assert_array_equal(again.values, masked.values)


def test_empty_centers_are_an_error(source, patterns, tmp_path):
    sp = patterns
    nib.Nifti1Image(np.zeros(sp.dim, np.uint8), sp.affine).to_filename(
        str(tmp_path / "zero.nii.gz"))
    bad(source, r"centers: mask file '.*zero\.nii\.gz' has no nonzero voxel",
        centers=str(tmp_path / "zero.nii.gz"))
    bad(source, "centers: the array of voxels is empty", centers=np.zeros((0, 3), int))


def test_cli_map_group_difference_with_every_option(study, source, patterns, rng, tmp_path,
                                                    capfd):
    """`ltpa map` with --connection, --groups, --permutations, --centers, --min-scans and
    --seed writes what run_ltpa computes in Python with the same options."""
    src, sp = source, patterns
    cid = src.connection_id(*PLANTED)
    lin = mask_in_the_key_grid(sp, rng, tmp_path / "mask.nii.gz", cid)
    out = tmp_path / "gd.nii.gz"
    proc = ltpa_main(
        capfd, "map", study, "--atlas", "Lausanne2008", "--param", "scale=33", "--radius",
        RADIUS, "--stat", "group_difference", "--connection", ",".join(PLANTED), "--groups",
        "patient,control", "--permutations", "40", "--centers", tmp_path / "mask.nii.gz",
        "--min-scans", "2", "--min-tracks", "2", "--seed", "5", "-o", out)
    assert proc.returncode == 0, proc.stderr
    want = run("group_difference", src, str(tmp_path / "mask.nii.gz"), min_tracks=2,
               connection=PLANTED, groups=("patient", "control"), n_permutations=40,
               min_scans=2, seed=5)
    np.testing.assert_array_equal(want.centers, sp.ijk(lin))
    t = np.asarray(nib.load(str(out)).dataobj)
    p = np.asarray(nib.load(str(extra_map_path(out, "p_fwe"))).dataobj)
    np.testing.assert_array_equal(t, want.volume())  # float32 both, NaN outside
    np.testing.assert_array_equal(p, want.volume("p_fwe"))
    assert np.isfinite(t).sum() >= 10 and np.nanmax(t) > 0  # patient - control > 0: planted
    assert np.isnan(t[np.asarray(nib.load(str(tmp_path / "mask.nii.gz")).dataobj) == 0]).all()
    body = json.loads(out.with_name("gd.nii.gz.json").read_text())
    assert body["options"]["groups"] == ["patient", "control"]
    assert body["options"]["min_scans"] == 2 and body["options"]["seed"] == 5
    assert body["options"]["n_permutations"] == 40 and body["n_centers"] == lin.shape[0]
    # another seed, other permutations: the p map is not a copy of a default
    other = run("group_difference", sp, str(tmp_path / "mask.nii.gz"), min_tracks=2,
                connection=cid, groups=("patient", "control"), n_permutations=40,
                min_scans=2, seed=6)
    np.testing.assert_array_equal(other.values, want.values)
    assert not np.array_equal(other.p_fwe, want.p_fwe, equal_nan=True)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_callable_progress_bar_on_stderr(patterns, capfd, n_jobs):
    sp = patterns
    capfd.readouterr()
    ijk = sp.ijk(sp.centers()[:3000])
    res = run_ltpa(coverage_fn, sp, radius=RADIUS, centers=ijk, n_jobs=n_jobs)
    err = capfd.readouterr().err
    assert "ltpa: coverage_fn [" in err and "100.0% (3000/3000 centers" in err
    np.testing.assert_array_equal(res.values, run("coverage", sp, ijk).values)
    run_ltpa(coverage_fn, sp, radius=RADIUS, centers=ijk, n_jobs=n_jobs, progress=False)
    assert "ltpa: coverage_fn" not in capfd.readouterr().err


# --------------------------------------------------------------------------- fail fast


def test_study_checks_come_before_any_pattern_is_computed(study, tmp_path, capfd):
    """With no pattern file built, a bad group, connection, option or mask is an error
    before a scan's patterns are computed: no note of an on-the-fly computation."""
    src = source_of(study, SCALE33)
    nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), np.eye(4)).to_filename(
        str(tmp_path / "m.nii.gz"))
    gd = dict(connection=PLANTED, groups=("control", "patient"))
    cases = [
        ("group 'nurse' is not a scan_group", "group_difference",
         dict(connection=PLANTED, groups=("control", "nurse"))),
        ("groups .*must differ", "group_difference",
         dict(connection=PLANTED, groups=("control", "control"))),
        ("connection 99999 is not in the atlas", "group_difference",
         dict(connection=99999, groups=("control", "patient"))),
        ("region 'lh.nowhere'", "group_difference",
         dict(connection=("lh.nowhere", "lh.precuneus"), groups=("control", "patient"))),
        ("min_scans 99", "group_difference", dict(min_scans=99, **gd)),
        ("n_permutations -5", "group_difference", dict(n_permutations=-5, **gd)),
        ("needs groups=", "group_difference", dict(connection=PLANTED)),
        (r"m\.nii\.gz.*resample the mask", "coverage", dict(centers=str(tmp_path / "m.nii.gz"))),
        ("outside the key grid", "coverage", dict(centers=np.array([[91, 0, 0]]))),
        ("across 'intersection'", "coverage", dict(across="intersection")),
        ("across 'all'", "coverage", dict(across="all")),
        ("n_jobs 0", "coverage", dict(n_jobs=0)),
    ]
    for match, stat, kw in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(LtpaError, match=match):
                run_ltpa(stat, src, radius=2, **kw)
        notes = [str(w.message) for w in caught if "on the fly" in str(w.message)]
        assert notes == [], (match, notes)
    # the same through `ltpa map`: the error, and nothing computed or written
    out = tmp_path / "gd.nii.gz"
    proc = ltpa_main(capfd, "map", study, "--atlas", "Lausanne2008", "--param", "scale=33",
                     "--radius", "2", "--stat", "group_difference", "--connection",
                     ",".join(PLANTED), "--groups", "control,nurse", "-o", out)
    assert proc.returncode == 1 and "group 'nurse' is not a scan_group" in proc.stderr
    assert "on the fly" not in proc.stderr and not out.exists()
    # and the check does not stop a good map: the note comes, with the map
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_ltpa("coverage", src, radius=2, centers=np.array([[45, 47, 60]]))
    assert any("computed on the fly" in str(w.message) for w in caught)
    assert caught[-1].filename == __file__  # the warning points at the caller's line


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
    # a pattern file of another grid, which the workflow calls up to date (its sidecar
    # rewritten for it): what the reader reads must still be in one grid
    from ltpa.jobs.pipeline import run as run_job
    from ltpa.study import sidecar
    from ltpa.study.config import default_config
    from ltpa.study.study import load_study

    config = dict(default_config(), patterns={"radii": [0]})
    target = next(t for t in load_study(study, config, check_inputs_of_jobs=False).targets
                  if t.rule == "termination_patterns" and t.scan.scan_id == "s03"
                  and t.output == patterns_path(t.label.numpy_path, 0)
                  and t.label.parameters.get("scale") == 33)
    out = target.output
    run_job(target.spec(config))
    try:
        p = read_patterns(out)
        body, _ = sidecar.read(out)
        p.meta["dim"] = [91, 109, 92]
        save_patterns(p, out)
        sidecar.write(out, "termination_patterns", inputs=body["inputs"],
                      params=body["params"], scan_id=body["scan_id"], atlas=body["atlas"])
        st = load_study(study, config, check_inputs_of_jobs=False)
        assert [v.status for t, v in zip(st.targets, st.verdicts) if t.output == out] == ["ok"]
        assert read_patterns(out).dim == (91, 109, 92)
        src = source_of(study, SCALE33)
        with pytest.raises(LtpaError, match=r"scans 's01' and 's03' have different key grids"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run_ltpa("coverage", src, radius=0)
    finally:
        out.unlink()
        sidecar.path_of(out).unlink()


def test_result_repr_and_save_checks(patterns, tmp_path):
    res = run("streamlines", patterns, np.array([[45, 47, 60]]))
    assert isinstance(res, LtpaResult) and "streamlines" in repr(res)
    with pytest.raises(LtpaError, match="expected a .nii or .nii.gz"):
        res.save(tmp_path / "x.png")
    with pytest.raises(LtpaError, match="no map 'p_fwe'"):
        res.volume("p_fwe")
    assert res.p_fwe is None


def test_blocks_sized_by_entries_give_the_same_maps(source, patterns, rng, monkeypatch):
    """A study with many entries per center gets blocks of fewer centers (BLOCK_ENTRIES);
    the maps, permutation p included, do not depend on the blocks."""
    from ltpa.analysis import run as run_module

    sp = patterns
    per_center = sp.entries_per_center()
    want = sum(p.n_entries / p.n_centers for p in sp.scans)
    assert per_center == pytest.approx(want) and per_center > 6
    cid = source.connection_id(*PLANTED)
    # the centers: the planted bundle's (every center group_difference can test: the others
    # have no count of it) and 2,000 others, ~220 blocks of 37 below, most of them with no
    # tested center, and a last shorter one
    lin = np.union1d(bundle_centers(sp, cid), rng.choice(sp.centers(), 2000, replace=False))
    lin = lin[:lin.shape[0] - 1] if lin.shape[0] % 37 == 0 else lin
    assert lin.shape[0] % 37 != 0
    ijk = sp.ijk(lin)
    options = dict(connection=cid, groups=("control", "patient"), n_permutations=20, seed=1)
    whole = run("group_difference", sp, ijk, **options)
    sim = run("similarity", sp, ijk)
    assert np.isfinite(whole.p_fwe).sum() > 100 and np.isfinite(sim.values).sum() > 1000
    monkeypatch.setattr(run_module, "BLOCK_ENTRIES", math.ceil(per_center * 37))
    assert run_module._centers_per_block(sp, run_module.BLOCK_SIZE) == 37
    small = run("group_difference", sp, ijk, **options)
    np.testing.assert_array_equal(small.centers, whole.centers)
    np.testing.assert_allclose(small.values, whole.values, equal_nan=True)
    np.testing.assert_allclose(small.p_fwe, whole.p_fwe, equal_nan=True)
    np.testing.assert_allclose(run("similarity", sp, ijk).values, sim.values,
                               equal_nan=True)

"""Termination patterns: the kernel and the file against brute force (query_ijk of the sphere
counted with numpy), for .trk, .trk.gz, .tck, .trx and b0-space scans, radii 0-3."""

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import ltpa_main
from ltpa import LtpaError, load_track_dataset
from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
from ltpa.formats.trkwrite import write_trk
from ltpa.jobs.pipeline import index_scan, label_scan, write_patterns
from ltpa.prepared.patterns import (
    VERSION,
    _Builder,
    build_patterns,
    patterns_path,
    read_patterns,
    save_patterns,
    sphere_offsets,
    write_patterns_file,
)
from ltpa_helpers import brute_patterns, build_study, source_of, sphere_voxels

DATA = Path(__file__).parent / "data"
SCALE33 = {"name": "Lausanne2008", "scale": 33}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return build_study(tmp_path_factory.mktemp("patterns") / "study")


def test_the_study_has_every_scan_kind(study):
    kinds = [Path(s["trk_file"]).name for s in json.loads(study.read_text())]
    assert any(k.endswith(".tck") for k in kinds)
    assert any(k.endswith(".trk.gz") for k in kinds) and any(k.endswith(".trx") for k in kinds)
    assert any(any("b0_volume_path" in lab for lab in s["track_labels"])
               for s in json.loads(study.read_text()))


@pytest.mark.parametrize("radius,n", [(0, 1), (1, 7), (2, 33), (3, 123)])
def test_sphere_sizes(radius, n):
    off = sphere_offsets(radius)
    assert off.shape == (n, 3)
    assert {tuple(v) for v in off.tolist()} == {
        (a, b, c) for a in range(-radius, radius + 1) for b in range(-radius, radius + 1)
        for c in range(-radius, radius + 1) if a * a + b * b + c * c <= radius * radius}


def sample_centers(sp, rng, n=25):
    lin = sp.centers()
    picked = sp.ijk(rng.choice(lin, size=min(n, lin.shape[0]), replace=False))
    dim = np.asarray(sp.dim)
    anywhere = rng.integers(0, dim, size=(8, 3))
    corners = np.array([[0, 0, 0], dim - 1, [0, dim[1] - 1, 0], [dim[0] - 1, 0, dim[2] - 1]])
    return np.concatenate([picked, anywhere, corners])


@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_patterns_equal_brute_force(study, radius, rng):
    src = source_of(study, SCALE33)
    sp = src.termination_patterns(radius)
    assert len(sp) == len(src) == 6
    for ijk in sample_centers(sp, rng):
        pm = sp.at_ijk(tuple(ijk))
        ref = brute_patterns(src, ijk, radius, sp.dim)
        got = [{int(c): int(n) for c, n in zip(pm.connection_ids, row) if n}
               for row in pm.counts]
        assert got == ref, tuple(ijk)
        np.testing.assert_array_equal(pm.totals, [sum(r.values()) for r in ref])
        if not any(ref):
            assert pm.counts.shape == (6, 0)


def dilated(voxels, radius, dim):
    """Sorted linear numbers of every voxel within ``radius`` of one of ``voxels`` (N, 3),
    clipped to the grid: the plain triple loop's sphere (``sphere_voxels``, around a voxel
    far from the faces) moved onto every voxel at once, those outside the grid dropped."""
    offsets = np.array(sphere_voxels((radius,) * 3, radius, (2 * radius + 1,) * 3)) - radius
    near = (np.asarray(voxels)[:, None, :] + offsets[None]).reshape(-1, 3)
    inside = np.all((near >= 0) & (near < np.asarray(dim)), axis=1)
    return np.unique(np.ravel_multi_index(near[inside].T, dim))


@pytest.mark.parametrize("radius", [0, 2])
def test_centers_are_the_dilated_voxels(study, radius):
    """Every voxel any streamline of the scan touches (the index's voxels), dilated by the
    sphere, and no other: the scan's centers, sorted and unique (the file's order)."""
    src = source_of(study, SCALE33)
    sp = src.termination_patterns(radius)
    for pos in (1, 2, 5):  # b0-space scan, .tck, .trx
        ds = src.dataset(pos)
        idx = ds.tracks_at_ijk
        voxels = np.stack(np.unravel_index(np.asarray(idx.voxels), idx.dim), axis=1)
        expected = dilated(voxels, radius, idx.dim)
        assert (expected.shape[0] > voxels.shape[0]) == (radius > 0)
        np.testing.assert_array_equal(np.asarray(sp.scans[pos].centers), expected)


def test_same_streamlines_same_patterns_in_every_format(study):
    """The .trk.gz and .trx scans are the first scan's streamlines: the same patterns."""
    src = source_of(study, SCALE33)
    sp = src.termination_patterns(1)
    a = sp.scans[0]
    for pos in (4, 5):
        b = sp.scans[pos]
        for name in ("centers", "indptr", "connection_ids", "counts"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def edge_scan(folder, rng):
    """A scan whose streamlines reach every face of the key grid, labeled with a random
    atlas: clipping at the edges is exercised with real streamlines (native space: the key
    grid is the trk's own grid, whose faces the points touch)."""
    sls = []
    dim = np.array(QSDR_DIM)
    for _ in range(120):
        k = int(rng.integers(2, 12))
        vox = rng.integers(0, dim, (k, 3))
        face = rng.integers(0, 3)
        vox[0, face] = rng.choice([0, dim[face] - 1])
        sls.append(((vox + rng.uniform(0.1, 0.9, (k, 3))) * 2.0).astype(np.float32))
    write_trk(folder / "e.trk", sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    atlas = rng.integers(0, 5, QSDR_DIM).astype(np.int16)
    nib.Nifti1Image(atlas, QSDR_AFFINE).to_filename(str(folder / "atlas.nii.gz"))
    index_scan(folder / "e.trk", folder / "e.pkl", space="native")
    label_scan(folder / "e.trk", folder / "atlas.nii.gz", folder / "e.npy", space="native")
    return folder / "e.pkl", folder / "e.npy"


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_grid_edges_equal_the_pkl_index(tmp_path, rng, radius):
    pkl, npy = edge_scan(tmp_path, rng)
    out = tmp_path / f"e.patterns-r{radius}.npz"
    stats = write_patterns(pkl, npy, out, radius)
    p = read_patterns(out)
    assert stats["n_centers"] == p.n_centers and p.radius == radius
    ds = load_track_dataset(pkl)
    conn = np.load(npy)
    idx = ds.tracks_at_ijk
    dim = idx.dim
    lin = np.asarray(p.centers)
    ijk = np.stack(np.unravel_index(lin, dim), axis=1)
    on_edge = np.flatnonzero(((ijk == 0) | (ijk == np.array(dim) - 1)).any(axis=1))
    assert on_edge.shape[0] > 50
    picks = np.concatenate([on_edge[:60], rng.choice(lin.shape[0], 30, replace=False)])
    for c in picks:
        ids = set()
        for v in sphere_voxels(ijk[c], radius, dim):
            ids.update(idx[v].tolist())
        labels, counts = np.unique(conn[sorted(ids)], return_counts=True)
        a, b = p.indptr[c], p.indptr[c + 1]
        np.testing.assert_array_equal(p.connection_ids[a:b], labels)
        np.testing.assert_array_equal(p.counts[a:b], counts)


def test_file_is_memory_mapped_versioned_and_checked(tmp_path, rng):
    pkl, npy = edge_scan(tmp_path, rng)
    out = tmp_path / "e.npz"
    write_patterns(pkl, npy, out, 1)
    p = read_patterns(out)
    assert isinstance(p.counts, np.memmap) and isinstance(p.centers, np.memmap)
    assert p.meta["version"] == VERSION and p.meta["dim"] == list(QSDR_DIM)
    np.testing.assert_allclose(p.affine, QSDR_AFFINE)
    assert p.meta["inputs"]["pkl_path"]["size"] == pkl.stat().st_size
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["kind"] == "termination_patterns" and side["params"]["radius"] == 1
    # a newer version, a pickle, a non-file: named errors
    bad = tmp_path / "newer.npz"
    save_patterns(p, bad)
    raw = bad.read_bytes().replace(b'"version": 2', b'"version": 9')
    assert raw != bad.read_bytes()
    bad.write_bytes(raw)
    with pytest.raises(LtpaError, match=r"newer\.npz.*format version 9.*reads versions 1, 2.*"
                                        r"rebuild"):
        read_patterns(bad)
    # an entry member of floats (a hand-made file): refused, not summed as counts
    arrays = {m: np.asarray(getattr(p, m)) for m in ("centers", "indptr", "connection_ids")}
    arrays["counts"] = np.asarray(p.counts, dtype=np.float64)
    arrays["meta"] = np.frombuffer(json.dumps(p.meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(LtpaError, match=r"f\.npz.*counts.*float64, not little-endian integers"):
        read_patterns(tmp_path / "f.npz")
    # a negative entry beside larger ones is refused, never wrapped into an unsigned dtype
    ids = np.asarray(p.connection_ids).astype(np.int64)
    ids[0] = -1
    assert ids.max() > 0
    with pytest.raises(ValueError, match="-1 does not fit"):
        save_patterns(dataclasses.replace(p, connection_ids=ids), tmp_path / "neg.npz")
    assert not (tmp_path / "neg.npz").exists()
    np.savez_compressed(tmp_path / "z.npz", centers=np.zeros(3))
    with pytest.raises(LtpaError, match="z.npz.*compressed"):
        read_patterns(tmp_path / "z.npz")
    with pytest.raises(LtpaError, match="does not exist"):
        read_patterns(tmp_path / "none.npz")
    (tmp_path / "t.npz").write_text("not a zip")
    with pytest.raises(LtpaError, match="not a termination-pattern file"):
        read_patterns(tmp_path / "t.npz")


@pytest.mark.parametrize("chunk, threads, memory", [
    (1, 1, 0), (7, 1, 1 << 25), (1000, 1, 2000), (7, 3, 0), (1000, 2, 1 << 25)])
def test_file_written_in_chunks_equals_patterns_in_memory(tmp_path, chunk, threads, memory):
    """Chunks of centers, threads sharing each chunk, and entries kept in memory, written
    to work files from the start, or from part way (``memory`` entries), give the one-call
    patterns."""
    ds = load_track_dataset(DATA / "track_dataset_v0.pkl")
    conn = (np.arange(ds.get_ntracks()) * 7) % 5
    whole = build_patterns(ds.tracks_at_ijk, conn, 2)
    got = write_patterns_file(ds.tracks_at_ijk, conn, 2, tmp_path / "c.npz", chunk=chunk,
                              threads=threads, memory_entries=memory)
    p = read_patterns(tmp_path / "c.npz")
    assert got == {"n_centers": whole.n_centers, "n_entries": int(whole.counts.shape[0])}
    assert whole.n_centers > 1000 and 2000 < got["n_entries"] < 1 << 25
    for name in ("centers", "indptr", "connection_ids", "counts"):
        np.testing.assert_array_equal(getattr(p, name), getattr(whole, name))
    # ids 0..4 and small counts: one byte each; the grid's 7.1 million voxels: int32
    assert (p.connection_ids.dtype, p.counts.dtype, p.centers.dtype) == ("u1", "u1", "<i4")
    assert int(np.asarray(whole.counts).max()) <= 255
    assert [f.name for f in tmp_path.iterdir()] == ["c.npz"]  # no work files left


@pytest.mark.parametrize("memory", [0, 1 << 25])
@pytest.mark.parametrize("n_in_voxel, top_id, want", [
    (255, 255, ("u1", "u1")), (256, 255, ("u1", "<u2")), (65_535, 256, ("<u2", "<u2")),
    (65_536, 65_535, ("<u2", "<i4")), (40, 65_536, ("<i4", "u1"))])
def test_entries_are_stored_in_the_narrowest_dtype_that_holds_them(tmp_path, memory,
                                                                    n_in_voxel, top_id, want):
    """One voxel with ``n_in_voxel`` streamlines, all of id 0 but one of ``top_id``; a
    second voxel with three of them. The counts and ids read back are the values counted
    here, in the narrowest dtype that holds the largest (uint8, uint16, int32)."""
    from ltpa.dataset import VoxelIndex

    n = n_in_voxel + 1  # streamline n_in_voxel is of id top_id, alone in the voxel
    ids = np.r_[np.arange(n), 0, 1, n - 1].astype(np.int32)
    idx = VoxelIndex((4, 5, 6), np.array([7, 100]), np.array([0, n, n + 3]), ids)
    conn = np.zeros(n, dtype=np.int64)
    conn[-1] = top_id
    write_patterns_file(idx, conn, 0, tmp_path / "n.npz", memory_entries=memory, chunk=1)
    p = read_patterns(tmp_path / "n.npz")
    assert (p.connection_ids.dtype.str[-2:], p.counts.dtype.str[-2:]) == tuple(
        w[-2:] for w in want)
    np.testing.assert_array_equal(p.centers, [7, 100])
    np.testing.assert_array_equal(p.indptr, [0, 2, 4])
    np.testing.assert_array_equal(p.connection_ids, [0, top_id, 0, top_id])
    np.testing.assert_array_equal(p.counts, [n_in_voxel, 1, 2, 1])
    row, cid, cnt = p.rows(np.array([100, 7, 8, 2**40]))  # int64 out, any center order
    assert cid.dtype == cnt.dtype == np.int64
    np.testing.assert_array_equal(row, [0, 0, 1, 1])
    np.testing.assert_array_equal(cnt, [2, 1, n_in_voxel, 1])


@pytest.mark.parametrize("id_range", [5, 3_487, 1 << 20])
@pytest.mark.parametrize("radius", [0, 1, 2])
def test_every_center_equals_numpy_for_narrow_and_wide_id_ranges(radius, id_range):
    """Every row against np.unique of the sphere's distinct streamlines. The kernel emits a
    center's ids through a bitmap of all ids or by sorting the ids it touched, by their
    cost: 5 possible ids take the bitmap at nearly every center, a range of 2^20 the sort
    at nearly every center (an atlas's 3,487, either), so both are checked everywhere."""
    ds = load_track_dataset(DATA / "track_dataset_v0.pkl")
    idx = ds.tracks_at_ijk
    rng = np.random.default_rng(id_range + radius)
    conn = rng.integers(0, id_range, ds.get_ntracks())
    p = build_patterns(idx, conn, radius)
    voxels = np.asarray(idx.voxels)
    indptr, ids = np.asarray(idx.indptr), np.asarray(idx.ids)
    lin_of = {int(v): n for n, v in enumerate(voxels)}
    off = sphere_offsets(radius)
    dim = np.asarray(idx.dim)
    n_words = (int(conn.max()) + 64) // 64  # the bitmap's 64-bit words
    by_bitmap = 0
    for c, lin in enumerate(np.asarray(p.centers)):
        ijk = np.array(np.unravel_index(lin, idx.dim))
        near = ijk + off
        near = near[np.all((near >= 0) & (near < dim), axis=1)]
        pos = [lin_of[v] for v in np.ravel_multi_index(near.T, idx.dim).tolist() if v in lin_of]
        gathered = np.concatenate([ids[indptr[q]:indptr[q + 1]] for q in pos])
        by_bitmap += 4 * gathered.shape[0] >= n_words
        streamlines = np.unique(gathered)
        labels, counts = np.unique(conn[streamlines], return_counts=True)
        a, b = p.indptr[c], p.indptr[c + 1]
        np.testing.assert_array_equal(p.connection_ids[a:b], labels)
        np.testing.assert_array_equal(p.counts[a:b], counts)
    assert p.n_centers > 300
    share = by_bitmap / p.n_centers  # the kernel's choice, by its rule
    if id_range != 3_487:  # the atlas-sized range: whichever each center's size picks
        assert share > 0.9 if id_range == 5 else share < 0.1


def test_centers_built_again_by_one_builder_are_counted_afresh():
    """A builder asked again for centers it has done (its stamps already carry those
    numbers) gives the same rows, not rows with those streamlines deduplicated away."""
    ds = load_track_dataset(DATA / "track_dataset_v0.pkl")
    conn = (np.arange(ds.get_ntracks()) * 7) % 5
    b = _Builder(ds.tracks_at_ijk, conn, 1)
    n = b.centers.shape[0]
    first = b.rows(0, n, 2)
    again = b.rows(0, n // 3)
    for x, y in zip(again, b.rows(0, n // 3, 1)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(again[1], first[1][:first[0][n // 3]])


def test_committed_version_1_file_reads(tmp_path):
    """tests/data/patterns_v1.npz: the first release's format, from the committed pkl with
    connection ids (k % 4 for streamline k), radius 1."""
    p = read_patterns(DATA / "patterns_v1.npz")
    ds = load_track_dataset(DATA / "track_dataset_v0.pkl")
    conn = np.arange(ds.get_ntracks()) % 4
    again = build_patterns(ds.tracks_at_ijk, conn, 1)
    for name in ("centers", "indptr", "connection_ids", "counts"):
        np.testing.assert_array_equal(getattr(p, name), getattr(again, name))
    assert p.meta["version"] == 1 and p.radius == 1


@pytest.mark.parametrize("radius", [-1, 11, 1.5, "x", True, None, "2", 2.0, np.float64(1.0),
                                    np.True_, np.int64(11)])
def test_bad_radius(tmp_path, radius):
    with pytest.raises(LtpaError, match=r"radius .*expected an integer number of voxels in "
                                        r"0\.\.10"):
        write_patterns(DATA / "track_dataset_v0.pkl", tmp_path / "none.npy",
                       tmp_path / "o.npz", radius)
    assert not (tmp_path / "o.npz").exists()


def test_radius_is_an_int_or_a_numpy_integer():
    from ltpa.prepared.patterns import check_radius

    for value in (0, 10, np.int64(3), np.uint8(2), np.int32(1)):
        got = check_radius(value)
        assert got == int(value) and type(got) is int


def test_npy_of_another_scan_is_an_error_nothing_written(study, tmp_path):
    scans = json.loads(study.read_text())
    pkl = study.parent / scans[0]["pkl_path"]
    npy = study.parent / scans[1]["track_labels"][0]["numpy_path"]
    out = tmp_path / "o.npz"
    with pytest.raises(LtpaError, match="connection ids for .* streamlines"):
        write_patterns(pkl, npy, out, 1)
    assert not out.exists() and not Path(f"{out}.json").exists()


# --------------------------------------------------------------------------- built files: the
# reader and the workflow judge them by one rule (ltpa.study.staleness)


def patterns_config(radius):
    """The workflow config asking for the scale-33 pattern files at ``radius``."""
    from ltpa.study.config import default_config

    return dict(default_config(), patterns={"radii": [radius], "atlases": [
        {"name": "Lausanne2008", "parameters": {"scale": 33}}]})


def pattern_verdicts(study, radius):
    """{scan_id: (verdict, target)} of every scale-33 pattern file at ``radius``, as the
    workflow and ``ltpa status`` judge them (``load_study`` with config ``patterns``)."""
    from ltpa.study.study import load_study

    config = patterns_config(radius)
    st = load_study(study, config, check_inputs_of_jobs=False, strict=False)
    return {t.scan.scan_id: (v, t) for t, v in zip(st.targets, st.verdicts)
            if t.rule == "termination_patterns"}


def build_like_the_workflow(study, radius):
    """Run the workflow's pattern jobs (the same specs) for every scan that needs one."""
    from ltpa.jobs.pipeline import run

    config = patterns_config(radius)
    for v, t in pattern_verdicts(study, radius).values():
        if v.status != "ok":
            run(t.spec(config))


@pytest.fixture(scope="module")
def built(study, tmp_path_factory):
    """A copy of the study (times kept) with every pattern file at r = 2 built by the
    workflow's jobs."""
    import shutil

    folder = tmp_path_factory.mktemp("built") / "study"
    shutil.copytree(study.parent, folder)
    copy = folder / study.name
    build_like_the_workflow(copy, 2)
    return copy


@pytest.fixture
def fresh(built, tmp_path):
    """A copy of ``built`` of this test's own (times kept: the files stay up to date)."""
    import shutil

    shutil.copytree(built.parent, tmp_path / "study")
    return tmp_path / "study" / built.name


def read_with_notes(study, radius):
    """(StudyPatterns, [warning texts]) of a fresh source."""
    import warnings

    src = source_of(study, SCALE33)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sp = src.termination_patterns(radius)
    return src, sp, [str(w.message) for w in caught]


def assert_equals_brute_force(src, sp, scan, rng, n=12):
    """Scan ``scan``'s patterns in ``sp`` against query_ijk of the sphere at some of its
    centers and a few anywhere."""
    p = sp.scans[scan]
    lin = np.asarray(p.centers)[rng.choice(p.n_centers, n, replace=False)]
    for ijk in np.concatenate([sp.ijk(lin), rng.integers(0, sp.dim, size=(3, 3))]):
        ref = brute_patterns(src, ijk, sp.radius, sp.dim)[scan]
        pm = sp.at_ijk(tuple(ijk))
        got = {int(c): int(k) for c, k in zip(pm.connection_ids, pm.counts[scan]) if k}
        assert got == ref, tuple(ijk)


def test_built_files_are_read_when_the_workflow_calls_them_up_to_date(fresh, rng):
    verdicts = pattern_verdicts(fresh, 2)
    assert len(verdicts) == 6 and {v.status for v, _ in verdicts.values()} == {"ok"}
    src, sp, notes = read_with_notes(fresh, 2)
    assert notes == []
    assert sp.sources == [str(t.output) for _, t in verdicts.values()]
    assert all(isinstance(p.counts, np.memmap) for p in sp.scans)
    assert_equals_brute_force(src, sp, 0, rng)
    # a file that is not built is computed, with a note naming the scan
    out = Path(sp.sources[3])
    out.unlink()
    _, sp, notes = read_with_notes(fresh, 2)
    assert sp.sources[3] == "computed" and sp.sources[2] == str(verdicts["s03"][1].output)
    assert len(notes) == 1 and "computed on the fly for scan 's04' (not built)" in notes[0]


def test_a_touched_npy_of_the_same_content_keeps_the_built_file(fresh):
    import os

    v, t = pattern_verdicts(fresh, 2)["s02"]
    npy = Path(t.inputs["numpy_path"])
    st = npy.stat()
    os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    assert npy.stat().st_mtime_ns != st.st_mtime_ns
    assert pattern_verdicts(fresh, 2)["s02"][0].status == "ok"  # the workflow: up to date
    _, sp, notes = read_with_notes(fresh, 2)
    assert notes == [] and sp.sources[1] == str(t.output)


def test_an_npy_of_new_content_is_computed_on_the_fly_with_a_note(fresh, rng):
    v, t = pattern_verdicts(fresh, 2)["s02"]
    npy = Path(t.inputs["numpy_path"])
    ids = np.load(npy)
    np.save(npy, ids[::-1].copy())  # same size, other ids
    v = pattern_verdicts(fresh, 2)["s02"][0]
    assert v.status == "out of date" and "numpy_path" in v.reason
    src, sp, notes = read_with_notes(fresh, 2)
    assert sp.sources[1] == "computed" and sp.sources[0] != "computed"
    assert len(notes) == 1 and "computed on the fly for scan 's02'" in notes[0]
    assert str(t.output) in notes[0] and "numpy_path" in notes[0]
    assert_equals_brute_force(src, sp, 1, rng)  # the new ids, not the file's


def test_a_rebuilt_pkl_makes_its_patterns_out_of_date(fresh, rng):
    """The scan's metadata changed: the workflow rebuilds its pkl (carrying the metadata),
    then its pattern file; the reader computes it meanwhile, with a note."""
    from ltpa.jobs.pipeline import run
    from ltpa.study.study import load_study

    scans = json.loads(fresh.read_text())
    scans[2]["attributes"]["age"] = 99
    fresh.write_text(json.dumps(scans, indent=1))
    config = patterns_config(2)
    st = load_study(fresh, config, check_inputs_of_jobs=False)
    todo = [t for t, v in zip(st.targets, st.verdicts) if v.status != "ok"]
    assert [(t.rule, t.scan.scan_id) for t in todo] == [("index_streamlines", "s03"),
                                                         ("termination_patterns", "s03")]
    v = pattern_verdicts(fresh, 2)["s03"][0]
    assert v.status == "out of date" and "pkl_path" in v.reason and not v.own
    run(todo[0].spec(config))  # the pkl rebuilt: now the pattern file is out of date itself
    v, t = pattern_verdicts(fresh, 2)["s03"]
    assert v.status == "out of date" and v.own and "pkl_path" in v.reason, v.reason
    src, sp, notes = read_with_notes(fresh, 2)
    assert [s == "computed" for s in sp.sources] == [False, False, True, False, False, False]
    assert len(notes) == 1 and "for scan 's03'" in notes[0] and "pkl_path" in notes[0]
    assert_equals_brute_force(src, sp, 2, rng)
    run(t.spec(config))  # the workflow's rebuild: read again
    assert pattern_verdicts(fresh, 2)["s03"][0].status == "ok"
    _, sp, notes = read_with_notes(fresh, 2)
    assert notes == [] and sp.sources[2] == str(t.output)


def test_a_file_of_another_radius_is_not_read(fresh, rng):
    """At the radius-2 path, a radius-1 file: by its sidecar (what the workflow sees:
    "radius was 1, now 2") and, with a sidecar claiming radius 2, by the file itself."""
    from ltpa.study import sidecar

    v, t = pattern_verdicts(fresh, 2)["s04"]
    out, pkl, npy = t.output, t.inputs["pkl_path"], t.inputs["numpy_path"]
    body, _ = sidecar.read(out)
    write_patterns(pkl, npy, out, 1, scan_id="s04", atlas_key=t.atlas_key)
    assert read_patterns(out).radius == 1
    v = pattern_verdicts(fresh, 2)["s04"][0]
    assert v.status == "out of date" and "radius was 1, now 2" in v.reason
    src, sp, notes = read_with_notes(fresh, 2)
    assert sp.sources[3] == "computed" and "radius was 1, now 2" in notes[0]
    assert sp.scans[3].radius == 2
    assert_equals_brute_force(src, sp, 3, rng)
    # the sidecar of the radius-2 build over the radius-1 file: the workflow is fooled, the
    # reader reads the file's own radius
    sidecar.write(out, "termination_patterns", inputs=body["inputs"], params=body["params"],
                  scan_id=body["scan_id"], atlas=body["atlas"])
    assert pattern_verdicts(fresh, 2)["s04"][0].status == "ok"
    _, sp, notes = read_with_notes(fresh, 2)
    assert sp.sources[3] == "computed" and sp.scans[3].radius == 2
    assert f"{str(out)!r} is out of date (it holds patterns of radius 1, not 2)" in notes[0]


def test_a_file_built_outside_the_workflow_is_judged_as_the_workflow_does(fresh):
    """`ltpa patterns` without the scan_id and atlas key the workflow records: the workflow
    would rebuild it, so the reader does not read it."""
    v, t = pattern_verdicts(fresh, 2)["s01"]
    write_patterns(t.inputs["pkl_path"], t.inputs["numpy_path"], t.output, 2)
    v = pattern_verdicts(fresh, 2)["s01"][0]
    assert v.status == "out of date" and "atlas was None" in v.reason
    _, sp, notes = read_with_notes(fresh, 2)
    assert sp.sources[0] == "computed" and "atlas was None" in notes[0]


def test_cli_patterns(study, tmp_path, capfd):
    scans = json.loads(study.read_text())
    pkl = study.parent / scans[2]["pkl_path"]
    npy = study.parent / scans[2]["track_labels"][0]["numpy_path"]
    out = tmp_path / "p.npz"
    proc = ltpa_main(capfd, "patterns", pkl, npy, out, "--radius", "1")
    assert proc.returncode == 0, proc.stderr
    src = source_of(study, SCALE33)
    mine = src.termination_patterns(1).scans[2]
    p = read_patterns(out)
    for name in ("centers", "indptr", "connection_ids", "counts"):
        np.testing.assert_array_equal(getattr(p, name), getattr(mine, name))
    proc = ltpa_main(capfd, "patterns", pkl, npy, tmp_path / "q.npz", "--radius", "12")
    assert proc.returncode == 1 and "radius 12" in proc.stderr
    assert not (tmp_path / "q.npz").exists()


@pytest.mark.slow
def test_workflow_builds_patterns_and_rebuilds_only_when_inputs_change(tmp_path):
    """One Snakemake run with config patterns: the files equal write_patterns'; a second dry
    run has nothing to do; a changed npy reruns its label and its patterns only."""
    import yaml

    from conftest import planned_jobs, run_snakemake
    from ltpa.demo.small import make_demo

    study = make_demo(tmp_path / "study", n_scans=2, seed=2, n_per_side=10, n_background=5)
    cfg = tmp_path / "patterns.yaml"
    cfg.write_text(yaml.safe_dump({"patterns": {"radii": [1], "atlases": [
        {"name": "Lausanne2008", "parameters": {"scale": 33}}]}}))
    run_snakemake(tmp_path, "--configfile", str(cfg), local_data=study)
    scans = json.loads(study.read_text())
    for rec in scans:
        for lab in rec["track_labels"]:
            npy = study.parent / lab["numpy_path"]
            out = patterns_path(npy, 1)
            if lab["parameters"]["scale"] != 33:
                assert not out.exists()
                continue
            mine = tmp_path / f"{rec['scan_id']}.npz"
            write_patterns(study.parent / rec["pkl_path"], npy, mine, 1)
            a, b = read_patterns(out), read_patterns(mine)
            for name in ("centers", "indptr", "connection_ids", "counts"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    dry = run_snakemake(tmp_path, "--configfile", str(cfg), "-n", local_data=study)
    assert "Nothing to be done" in dry.output
    # a different npy (its ids changed): the labeling and its patterns are redone
    npy = study.parent / scans[0]["track_labels"][0]["numpy_path"]
    ids = np.load(npy)
    np.save(npy, ids[::-1].copy())
    dry = run_snakemake(tmp_path, "--configfile", str(cfg), "-n", local_data=study)
    jobs = planned_jobs(dry.output)
    assert ("termination_patterns", str(patterns_path(npy, 1))) in jobs
    assert {r for r, _ in jobs} <= {"label_streamlines", "termination_patterns"}
    assert len([j for j in jobs if j[0] == "termination_patterns"]) == 1


def test_entries_beyond_the_scans_bounds_are_an_error_not_a_wrapped_value(tmp_path):
    """The entries are held in the dtypes of the scan's bounds (largest id, largest
    possible count): a value past them (a kernel fault) is an error, never stored modulo
    256 or 65536."""
    from ltpa.prepared.patterns import _Entries

    entries = _Entries(tmp_path, 1 << 20, (300, 255))
    entries.add(np.array([3, 300], dtype=np.int32), np.array([255, 1], dtype=np.int32))
    assert entries.held == (np.dtype("<u2"), np.dtype("u1"))
    with pytest.raises(LtpaError, match="counts outside 0..255"):
        entries.add(np.array([3], dtype=np.int32), np.array([256], dtype=np.int32))
    with pytest.raises(LtpaError, match="connection_ids outside 0..300"):
        entries.add(np.array([301], dtype=np.int32), np.array([1], dtype=np.int32))

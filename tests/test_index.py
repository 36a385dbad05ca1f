"""Hashing (streamline -> voxel index) against dsi2's dict-of-sets loop."""

import pickle

import numpy as np
import pytest

from ltpa import TrackDataset, load_track_dataset
from ltpa.errors import LtpaError
from ltpa.formats.grids import MNI_AFFINE, MNI_DIM, QSDR_AFFINE, QSDR_DIM, key_map_for
from ltpa.formats.trkwrite import write_trk
from ltpa.jobs.pipeline import index_scan
from reference import hash_slow, read_trk_slow


def boundary_streamlines(rng, n, dim, vs=2.0, spread=0.05):
    """Random points, a third of them exactly on voxel boundaries, some outside the grid."""
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 30))
        pts = rng.uniform(-spread, 1 + spread, (k, 3)) * np.array(dim) * vs
        on = rng.random((k, 3)) < 0.33
        pts[on] = np.round(pts[on] / vs) * vs  # exact multiples of the voxel size
        out.append(pts.astype(np.float32))
    return out


def index_as_dict(ds):
    return {k: ds.tracks_at_ijk[k].tolist() for k in ds.tracks_at_ijk.keys()}


def qsdr_key(legacy):
    jshift = 102 if legacy else 101
    return lambda v: (v[0] + 6, jshift - v[1], v[2] + 11)


@pytest.mark.parametrize("legacy", [False, True])
def test_qsdr_hashing_matches_reference(tmp_path, rng, legacy):
    sls = boundary_streamlines(rng, 300, QSDR_DIM, spread=0.3)
    trk = tmp_path / "q.trk"
    write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    out = tmp_path / "q.pkl"
    stats = index_scan(trk, out, space="qsdr", legacy_dsi2_mni_offset=legacy, scan_id="q")
    ds = load_track_dataset(out)
    expected = hash_slow(read_trk_slow(trk), (2, 2, 2), qsdr_key(legacy), MNI_DIM)
    assert index_as_dict(ds) == expected
    n_pts = sum(len(s) for s in sls)
    key = qsdr_key(legacy)
    n_in = sum(1 for s in sls for p in s
               if all(0 <= key(tuple(int(np.floor(c / 2)) for c in p))[a] < MNI_DIM[a]
                      for a in range(3)))
    assert stats["n_points_outside_grid"] == n_pts - n_in > 0


@pytest.mark.parametrize("order", ["LAS", "LPS", "RAS", "LPI"])
def test_mni_hashing_flips_to_las(tmp_path, rng, order):
    sls = boundary_streamlines(rng, 150, MNI_DIM)
    trk = tmp_path / "m.trk"
    write_trk(trk, sls, MNI_DIM, (2, 2, 2), order, MNI_AFFINE)
    out = tmp_path / "m.pkl"
    index_scan(trk, out, space="mni")

    def to_key(v):
        return tuple(v[a] if order[a] == "LAS"[a] else MNI_DIM[a] - 1 - v[a] for a in range(3))

    expected = hash_slow(read_trk_slow(trk), (2, 2, 2), to_key, MNI_DIM)
    assert index_as_dict(load_track_dataset(out)) == expected


def test_native_hashing_anisotropic_grid(tmp_path, rng):
    dim, vs = (40, 50, 30), (1.25, 2.0, 3.0)
    sls = []
    for _ in range(200):
        k = int(rng.integers(1, 25))
        pts = rng.uniform(0, 1, (k, 3)) * np.array(dim) * np.array(vs)
        on = rng.random((k, 3)) < 0.3
        pts[on] = (np.round(pts / np.array(vs)) * np.array(vs))[on]
        sls.append(pts.astype(np.float32))
    trk = tmp_path / "n.trk"
    write_trk(trk, sls, dim, vs, "LAS", np.diag([1.25, 2, 3, 1]))
    out = tmp_path / "n.pkl"
    index_scan(trk, out, space="native")
    expected = hash_slow(read_trk_slow(trk), vs, lambda v: v, dim)
    assert index_as_dict(load_track_dataset(out)) == expected


def test_dataset_api(tmp_path, rng):
    sls = boundary_streamlines(rng, 120, QSDR_DIM)
    trk = tmp_path / "q.trk"
    write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    out = tmp_path / "q.pkl"
    index_scan(trk, out, space="qsdr", scan_id="subjA", properties={"scan_group": "g"})
    ds = load_track_dataset(out)
    assert isinstance(ds, TrackDataset)
    assert ds.scan_id == "subjA" and ds.properties["scan_group"] == "g"
    assert ds.get_ntracks() == len(sls) == len(ds.tracks)
    idx = ds.tracks_at_ijk
    keys = list(idx.keys())
    assert len(idx) == len(keys) > 0
    k0 = keys[0]
    assert k0 in idx and idx.get(k0) is not None and list(idx[k0]) == sorted(set(idx[k0]))
    empty = (0, 0, 0) if (0, 0, 0) not in idx else (90, 108, 90)
    assert empty not in idx and len(idx[empty]) == 0 and idx.get(empty) is None
    assert dict(idx.items()).keys() == set(keys)
    union = ds.get_tracks_by_ijks(keys[:5])
    assert sorted(union.tolist()) == sorted(set(i for k in keys[:5] for i in idx[k].tolist()))
    # the streamlines in the key grid's voxmm land in their key voxels (away from boundaries)
    key_map = key_map_for("qsdr", QSDR_DIM, (2, 2, 2), "LPS")
    for s in range(0, len(sls), 17):
        moved = ds.tracks[s]
        trk_ijk = np.floor(sls[s].astype(np.float64) / 2).astype(np.int64)
        interior = (np.abs(sls[s] / 2 - np.round(sls[s] / 2)) > 1e-3).all(axis=1)
        np.testing.assert_array_equal(np.floor(moved[interior] / 2).astype(np.int64),
                                      key_map.apply(trk_ijk)[interior])
    assert ds.header["dimensions"].tolist() == list(MNI_DIM)


def test_key_trk_export_overlays_mni(tmp_path, rng):
    import nibabel as nib

    sls = [s for s in boundary_streamlines(rng, 50, QSDR_DIM)]
    trk = tmp_path / "q.trk"
    write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    out_trk = tmp_path / "q.mni.trk"
    index_scan(trk, None, space="qsdr", trk_out=out_trk)
    src = nib.streamlines.load(str(trk))
    dst = nib.streamlines.load(str(out_trk))
    assert dst.header["dimensions"].tolist() == list(MNI_DIM)
    assert dst.header["voxel_order"] in (b"LAS", "LAS")
    # same points in RAS mm: the key grid is the same brain, only re-gridded
    for s in range(len(sls)):
        np.testing.assert_allclose(dst.streamlines[s], src.streamlines[s], atol=1e-3)


def test_wrong_space_header_is_an_error(tmp_path, rng):
    sls = boundary_streamlines(rng, 3, MNI_DIM)
    trk = tmp_path / "m.trk"
    write_trk(trk, sls, MNI_DIM, (2, 2, 2), "LAS", MNI_AFFINE)
    with pytest.raises(LtpaError) as err:
        index_scan(trk, tmp_path / "x.pkl", space="qsdr", scan_id="s9")
    msg = str(err.value)
    assert "scan 's9'" in msg and "qsdr" in msg and "79x95x69" in msg and "91x109x91" in msg
    assert not (tmp_path / "x.pkl").exists()


@pytest.mark.parametrize("space,dim,order", [("qsdr", QSDR_DIM, "LPS"), ("mni", MNI_DIM, "RPI")])
def test_hashing_in_small_ranges_matches_reference(tmp_path, rng, monkeypatch, space, dim, order):
    """The compiled counting sort, fed a few streamlines at a time (pages released between)."""
    import ltpa.formats.trk as trkmod

    sls = boundary_streamlines(rng, 400, dim, spread=0.3)
    # revisit voxels non-consecutively within a streamline: a, b, a
    sls[5] = np.concatenate([sls[5], sls[5][:1], sls[5][:2][::-1]])
    trk = tmp_path / "t.trk"
    write_trk(trk, sls, dim, (2, 2, 2), order, QSDR_AFFINE if space == "qsdr" else MNI_AFFINE)
    monkeypatch.setattr(trkmod, "BUFFER_WORDS", 50)
    out = tmp_path / "t.pkl"
    index_scan(trk, out, space=space)
    ds = load_track_dataset(out)
    km = key_map_for(space, dim, (2, 2, 2), order)
    to_key = lambda v: tuple(int(x) for x in km.apply(np.array([v], dtype=np.int64))[0])  # noqa: E731
    assert index_as_dict(ds) == hash_slow(read_trk_slow(trk), (2, 2, 2), to_key, MNI_DIM)
    idx = ds.tracks_at_ijk
    assert idx.ids.dtype == np.int32 and idx.voxels.dtype == np.int64
    assert np.all(np.diff(idx.voxels) > 0) and idx.indptr[-1] == idx.ids.shape[0]


def test_pkl_loads_with_plain_pickle_and_keeps_the_trk_body(tmp_path, rng):
    from ltpa.formats.convert import read_trk

    sls = boundary_streamlines(rng, 200, QSDR_DIM)
    trk = tmp_path / "q.trk"
    write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    out = tmp_path / "q.pkl"
    index_scan(trk, out, space="qsdr", scan_id="p")
    with open(out, "rb") as fh:
        plain = pickle.load(fh)
    safe = load_track_dataset(out)
    for ds in (plain, safe):
        assert type(ds).__name__ == "TrackDataset" and ds.scan_id == "p"
        assert index_as_dict(ds) == index_as_dict(safe)
        assert type(ds._words) is np.ndarray and not ds._words.flags.writeable
        np.testing.assert_array_equal(ds._words.view(np.int32), read_trk(trk).words.view(np.int32))
        for s in (0, 7, len(sls) - 1):
            np.testing.assert_array_equal(ds.tracks[s].shape, sls[s].shape)


def test_pkl_written_without_copy_file_range(tmp_path, rng, monkeypatch):
    """The fallback (plain writes, pages released) writes the same bytes."""
    sls = boundary_streamlines(rng, 3000, QSDR_DIM)
    trk = tmp_path / "q.trk"
    write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    assert trk.stat().st_size > 1 << 17  # the body is a payload of its own, copied file-to-file
    import ltpa.dataset as dsmod

    monkeypatch.setattr(dsmod._Writer, "STEP", 1000)
    index_scan(trk, tmp_path / "a.pkl", space="qsdr", scan_id="p")
    monkeypatch.delattr(dsmod.os, "copy_file_range", raising=False)
    index_scan(trk, tmp_path / "b.pkl", space="qsdr", scan_id="p")
    a, b = load_track_dataset(tmp_path / "a.pkl"), load_track_dataset(tmp_path / "b.pkl")
    assert index_as_dict(a) == index_as_dict(b)
    np.testing.assert_array_equal(a._words.view(np.int32), b._words.view(np.int32))


def test_key_trk_export_is_exact(tmp_path, rng, monkeypatch):
    """Exported points == float32 (voxmm * sign + shift), also from a file with scalars."""
    import nibabel as nib
    from nibabel.streamlines.trk import get_affine_trackvis_to_rasmm

    import ltpa.formats.trk as trkmod

    sls = [s for s in boundary_streamlines(rng, 60, QSDR_DIM) if len(s)]
    hdr = {"dimensions": np.array(QSDR_DIM), "voxel_sizes": np.array([2.0, 2, 2]),
           "voxel_order": b"LPS", "voxel_to_rasmm": QSDR_AFFINE}
    ras = [nib.affines.apply_affine(get_affine_trackvis_to_rasmm(hdr), s) for s in sls]
    tg = nib.streamlines.Tractogram(
        ras, data_per_point={"fa": [rng.uniform(0, 1, (len(s), 2)) for s in sls]},
        data_per_streamline={"w": rng.uniform(0, 1, (len(sls), 1))}, affine_to_rasmm=np.eye(4))
    src = tmp_path / "s.trk"
    nib.streamlines.TrkFile(tg, header={**hdr, "voxel_order": "LPS"}).save(str(src))
    monkeypatch.setattr(trkmod, "BUFFER_WORDS", 100)
    out = tmp_path / "s.mni.trk"
    index_scan(src, None, space="qsdr", trk_out=out)
    km = key_map_for("qsdr", QSDR_DIM, (2, 2, 2), "LPS")
    sign, shift = km.mm_sign.astype(np.float32), km.mm_shift.astype(np.float32)
    got = read_trk_slow(out)
    assert len(got) == len(sls)
    for a, b in zip(got, read_trk_slow(src)):
        expected = b * sign
        expected += shift
        np.testing.assert_array_equal(a, expected)


def test_non_finite_coordinates_are_errors(tmp_path, rng):
    sls = [s for s in boundary_streamlines(rng, 10, QSDR_DIM) if len(s) > 2]
    for bad in (np.nan, np.inf, -np.inf):
        broken = [s.copy() for s in sls]
        broken[3][1, 2] = bad
        trk = tmp_path / "bad.trk"
        write_trk(trk, broken, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
        with pytest.raises(LtpaError, match="bad.trk.*streamline 3 has a NaN or infinite"):
            index_scan(trk, tmp_path / "x.pkl", space="qsdr")
        with pytest.raises(LtpaError, match="streamline 3 has a NaN or infinite"):
            index_scan(trk, None, space="qsdr", trk_out=tmp_path / "x.trk")
        assert not (tmp_path / "x.pkl").exists() and not (tmp_path / "x.trk").exists()
    # the very first streamline (index 0 of the first range) too
    broken = [s.copy() for s in sls]
    broken[0][0, 0] = np.nan
    write_trk(tmp_path / "bad.trk", broken, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    with pytest.raises(LtpaError, match="streamline 0 has a NaN or infinite"):
        index_scan(tmp_path / "bad.trk", tmp_path / "x.pkl", space="qsdr")

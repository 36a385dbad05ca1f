"""The .trk reader against a struct-by-struct reference and against nibabel."""

import nibabel as nib
import numpy as np
import pytest
from nibabel.streamlines.trk import get_affine_trackvis_to_rasmm

from ltpa.errors import LtpaError
from ltpa.formats.convert import read_trk
from ltpa.formats.grids import QSDR_AFFINE
from ltpa.formats.trk import open_trk
from ltpa.formats.trkwrite import write_trk
from reference import read_trk_slow


def random_streamlines(rng, n, dim=(79, 95, 69), vs=2.0, max_len=40):
    out = []
    for _ in range(n):
        k = int(rng.integers(0, max_len))
        out.append((rng.uniform(0, 1, (k, 3)) * np.array(dim) * vs).astype(np.float32))
    return out


def all_points(trk, max_points):
    pts, firsts = [], []
    for s0, chunk, lengths in trk.iter_chunks(max_points=max_points):
        pts.append(chunk)
        firsts.append(s0)
    return np.concatenate(pts) if pts else np.zeros((0, 3), np.float32), firsts


@pytest.mark.parametrize("max_points", [1, 7, 1000, 10**7])
def test_reader_matches_struct_reference(tmp_path, rng, max_points):
    sls = random_streamlines(rng, 200)
    sls[3] = np.zeros((0, 3), np.float32)  # zero-length
    sls[4] = sls[4][:1]  # one point
    path = tmp_path / "a.trk"
    write_trk(path, sls, (79, 95, 69), (2, 2, 2), "LPS", QSDR_AFFINE)
    ref = read_trk_slow(path)
    trk = read_trk(path)
    assert trk.n_streamlines == len(ref)
    assert [int(c) for c in trk.counts] == [len(r) for r in ref]
    pts, firsts = all_points(trk, max_points)
    np.testing.assert_array_equal(pts, np.concatenate(ref))
    for s in (0, 4, 199):
        np.testing.assert_array_equal(trk.streamline(s), ref[s])


def test_reader_with_scalars_and_properties_written_by_nibabel(tmp_path, rng):
    sls = random_streamlines(rng, 50)
    sls = [s for s in sls if len(s)]
    hdr = {"dimensions": np.array([79, 95, 69]), "voxel_sizes": np.array([2.0, 2, 2]),
           "voxel_order": b"LPS", "voxel_to_rasmm": QSDR_AFFINE}
    to_ras = get_affine_trackvis_to_rasmm(hdr)
    ras = [nib.affines.apply_affine(to_ras, s) for s in sls]
    tg = nib.streamlines.Tractogram(
        ras,
        data_per_point={"fa": [rng.uniform(0, 1, (len(s), 1)) for s in sls],
                        "md": [rng.uniform(0, 1, (len(s), 2)) for s in sls]},
        data_per_streamline={"w": rng.uniform(0, 1, (len(sls), 1))},
        affine_to_rasmm=np.eye(4))
    path = tmp_path / "nib.trk"
    nib.streamlines.TrkFile(tg, header={**hdr, "voxel_order": "LPS"}).save(str(path))
    trk = read_trk(path)
    assert trk.n_scalars == 3 and trk.n_properties == 1
    ref = read_trk_slow(path)
    pts, _ = all_points(trk, 50)
    np.testing.assert_array_equal(pts, np.concatenate(ref))
    # and what nibabel reads, brought back to voxmm, agrees to float tolerance
    loaded = nib.streamlines.load(str(path))
    back = np.linalg.inv(get_affine_trackvis_to_rasmm(loaded.header))
    for s in (0, 10, len(sls) - 1):
        np.testing.assert_allclose(trk.streamline(s),
                                   nib.affines.apply_affine(back, loaded.streamlines[s]),
                                   atol=1e-4)


def test_our_writer_is_read_back_by_nibabel(tmp_path, rng):
    sls = [s for s in random_streamlines(rng, 30) if len(s)]
    path = tmp_path / "w.trk"
    write_trk(path, sls, (79, 95, 69), (2, 2, 2), "LPS", QSDR_AFFINE)
    loaded = nib.streamlines.load(str(path))
    assert len(loaded.streamlines) == len(sls)
    back = np.linalg.inv(get_affine_trackvis_to_rasmm(loaded.header))
    for s in range(len(sls)):
        np.testing.assert_allclose(nib.affines.apply_affine(back, loaded.streamlines[s]), sls[s],
                                   atol=1e-4)


def test_big_endian_file(tmp_path, rng):
    sls = [s for s in random_streamlines(rng, 20) if len(s)]
    little = tmp_path / "le.trk"
    write_trk(little, sls, (79, 95, 69), (2, 2, 2), "LPS", QSDR_AFFINE)
    raw = little.read_bytes()
    from nibabel.streamlines.trk import header_2_dtype

    hdr = np.frombuffer(raw[:1000], dtype=header_2_dtype.newbyteorder("<"))
    body_i = np.frombuffer(raw[1000:], dtype="<i4")
    big = tmp_path / "be.trk"
    big.write_bytes(hdr.astype(header_2_dtype.newbyteorder(">")).tobytes()
                    + body_i.astype(">i4").tobytes())
    trk = read_trk(big)
    pts, _ = all_points(trk, 100)
    np.testing.assert_array_equal(pts, np.concatenate(sls))


def test_errors_name_the_file(tmp_path, rng):
    sls = [s for s in random_streamlines(rng, 5) if len(s)]
    good = tmp_path / "good.trk"
    write_trk(good, sls, (79, 95, 69), (2, 2, 2), "LPS", QSDR_AFFINE)
    raw = good.read_bytes()
    cases = {
        "header_only.trk": (raw[:1000], "n_count says"),
        "short.trk": (raw[:500], "shorter than a TrackVis header"),
        "cut.trk": (raw[:-8], "file ends 8 bytes early"),
        "odd.trk": (raw[:-2], "not a whole number of 4-byte values"),
        "magic.trk": (b"TRACX" + raw[5:], "not a TrackVis .trk file"),
    }
    for name, (data, msg) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(LtpaError) as err:
            read_trk(p)
        assert msg in str(err.value) and name in str(err.value), (name, str(err.value))
    with pytest.raises(LtpaError, match="does not exist"):
        read_trk(tmp_path / "nope.trk")
    nan = [s.copy() for s in sls]
    nan[2][1, 0] = np.nan
    p = tmp_path / "nan.trk"
    write_trk(p, nan, (79, 95, 69), (2, 2, 2), "LPS", QSDR_AFFINE)
    with pytest.raises(LtpaError, match="streamline 2 has a NaN"):
        list(read_trk(p).iter_chunks())


def test_walk_in_small_ranges_without_n_count(tmp_path, rng, monkeypatch):
    """The compiled walk, resumed across range boundaries and growing its count array."""
    from nibabel.streamlines.trk import header_2_dtype

    import ltpa.formats.trk as trkmod

    sls = random_streamlines(rng, 300)
    sls[0] = np.zeros((0, 3), np.float32)
    sls[-1] = np.zeros((0, 3), np.float32)
    path = tmp_path / "a.trk"
    write_trk(path, sls, (79, 95, 69), (2, 2, 2), "LPS", QSDR_AFFINE)
    raw = bytearray(path.read_bytes())
    off = header_2_dtype.fields["nb_streamlines"][1]
    raw[off:off + 4] = np.int32(0).tobytes()  # n_count 0: "unknown"
    path.write_bytes(bytes(raw))
    monkeypatch.setattr(trkmod, "BUFFER_WORDS", 37)  # most records span two buffers
    monkeypatch.setattr(trkmod, "_GROW", 3)
    ranges = []
    with open_trk(path) as f:
        walked = f.walk(lambda r: ranges.append((r.s0, r.s0 + r.n, r.counts.tolist())),
                        keep_counts=True)
    assert walked.counts.tolist() == [len(s) for s in sls]
    assert len(ranges) > 10 and ranges[0][0] == 0 and ranges[-1][1] == len(sls)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert sum((r[2] for r in ranges), []) == [len(s) for s in sls]
    pts, _ = all_points(read_trk(path), 10**7)
    np.testing.assert_array_equal(pts, np.concatenate(sls))


def test_negative_count_is_an_error(tmp_path, rng):
    sls = [s for s in random_streamlines(rng, 5) if len(s)]
    path = tmp_path / "neg.trk"
    write_trk(path, sls, (79, 95, 69), (2, 2, 2), "LPS", QSDR_AFFINE)
    raw = bytearray(path.read_bytes())
    pos = 1000 + 4 * (1 + 3 * len(sls[0]))  # count word of streamline 1
    raw[pos:pos + 4] = np.int32(-5).tobytes()
    path.write_bytes(bytes(raw))
    with pytest.raises(LtpaError, match=r"neg.trk.*streamline 1 has a negative point count \(-5\)"):
        read_trk(path)


def test_kernels_work_without_a_writable_numba_cache(monkeypatch):
    """A read-only install with no user cache dir: numba refuses cache=True; we compile in
    memory."""
    import importlib

    import numba

    import ltpa.kernels as kernels

    real = numba.njit

    def no_cache(*args, **kw):
        if kw.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'x.py'")
        return real(*args, **kw)

    monkeypatch.setattr(numba, "njit", no_cache)
    try:
        with pytest.warns(RuntimeWarning, match="compiling in memory"):
            importlib.reload(kernels)
        starts, counts = np.empty(4, np.int64), np.empty(4, np.int64)
        ints = np.array([1, 0, 0, 0, 0], dtype=np.int32)
        assert kernels.walk_range(ints, 0, 5, 3, 0, starts, counts, 0) == (5, 2, 0)
        assert counts[:2].tolist() == [1, 0] and starts[:2].tolist() == [1, 5]
    finally:
        monkeypatch.setattr(numba, "njit", real)
        importlib.reload(kernels)


def test_streamline_lengths_match_a_per_point_loop(tmp_path, rng):
    """Fast: the length kernel on its own file (tests/test_qc.py checks it on a workflow run)."""
    from ltpa.qc.tables import streamline_lengths

    sls = [rng.uniform(0, 150, (int(rng.integers(1, 12)), 3)).astype(np.float32)
           for _ in range(80)]
    write_trk(tmp_path / "t.trk", sls, (79, 95, 69), (2, 2, 2), "LPS", QSDR_AFFINE)
    with open_trk(tmp_path / "t.trk") as f:
        got = streamline_lengths(f)
    slow = [sum(float(np.linalg.norm(np.asarray(p[i + 1], float) - np.asarray(p[i], float)))
                for i in range(len(p) - 1)) for p in read_trk_slow(tmp_path / "t.trk")]
    assert min(len(s) for s in sls) == 1 and slow.count(0.0) >= 1  # one-point streamlines: 0
    np.testing.assert_allclose(got, slow, rtol=1e-9, atol=1e-9)

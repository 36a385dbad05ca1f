"""Endpoint labeling against dsi2's per-streamline loop, and dsi2's own test scenario."""


import networkx as nx
import nibabel as nib
import numpy as np
import pytest

from ltpa.errors import LtpaError
from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM, Grid
from ltpa.formats.regions import regions_from_graphml
from ltpa.formats.trkwrite import write_trk
from ltpa.jobs.pipeline import label_scan
from ltpa.prepared.labels import load_atlas
from ltpa.study.sidecar import read as read_sidecar_pair
from reference import label_slow, read_trk_slow, region_pair_dict

DIM = (20, 24, 18)


# the test trks are on a RAS grid of 2 mm voxels at the origin: this is the atlas's affine
GRID = np.diag([2.0, 2, 2, 1])


def write_atlas(path, data, affine=GRID):
    nib.Nifti1Image(data, affine).to_filename(str(path))
    return path


def write_graphml(path, ids):
    g = nx.Graph()
    g.add_nodes_from(str(i) for i in ids)
    nx.write_graphml(g, str(path))
    return path


def random_case(tmp_path, rng, n=400):
    atlas = rng.integers(0, 9, DIM).astype(np.int16)
    atlas[rng.random(DIM) < 0.5] = 0
    sls = []
    for _ in range(n):
        k = int(rng.integers(0, 12))
        pts = rng.uniform(-0.1, 1.1, (k, 3)) * np.array(DIM) * 2.0
        on = rng.random((k, 3)) < 0.3
        pts[on] = np.round(pts[on] / 2.0) * 2.0
        sls.append(pts.astype(np.float32))
    trk = tmp_path / "r.trk"
    write_trk(trk, sls, DIM, (2, 2, 2), "RAS", GRID)
    vol = write_atlas(tmp_path / "atlas.nii.gz", atlas)
    return trk, vol, atlas


@pytest.mark.parametrize("start", [1, 0])
def test_labels_match_dsi2_loop(tmp_path, rng, start):
    trk, vol, atlas = random_case(tmp_path, rng)
    out = tmp_path / "ids.npy"
    label_scan(trk, vol, out, start=start, space="native")
    got = np.load(out)
    regions = sorted(set(np.unique(atlas).tolist()) - {0})
    expected = label_slow(read_trk_slow(trk), atlas, (2, 2, 2), regions, start)
    assert got.dtype.kind == "i"
    np.testing.assert_array_equal(got, expected)
    assert (got > 0).sum() > 50  # the case is not trivially all zero


def test_graphml_region_list_and_unknown_labels(tmp_path, rng, caplog):
    trk, vol, atlas = random_case(tmp_path, rng)
    # region list 1..12 from the graphml: label 8 is not in it -> background, with a warning
    regions = [1, 2, 3, 4, 5, 6, 7, 10, 11, 12]
    gml = write_graphml(tmp_path / "g.graphml", regions)
    out = tmp_path / "ids.npy"
    with caplog.at_level("WARNING"):
        stats = label_scan(trk, vol, out, graphml_path=gml, space="native")
    expected = label_slow(read_trk_slow(trk), atlas, (2, 2, 2), regions, 1)
    np.testing.assert_array_equal(np.load(out), expected)
    assert stats["labels_not_in_region_list"] == [8]
    assert "treated as background: 8" in caplog.text
    side = read_sidecar_pair(out)[0]
    assert side["region_ids"] == regions and side["connection_ids_start_at"] == 1


def test_atlas_errors(tmp_path, rng):
    base = rng.integers(0, 5, DIM).astype(np.int16)
    cases = {
        "shape.nii.gz": (base[:, :, :5], "has shape (20, 24, 5) and affine "
                                         "[2 0 0 0; 0 2 0 0; 0 0 2 0], "
                                         "but the streamlines' grid is (20, 24, 18)"),
        "four_d.nii.gz": (base[..., None].repeat(2, axis=3), "has 4 dimensions"),
        "nan.nii.gz": (np.where(base > 3, np.nan, base).astype(np.float32), "NaN"),
        "float.nii.gz": (base + 0.5, "non-integral values (e.g. "),
        "negative.nii.gz": ((base - 2).astype(np.int16), "negative labels (min -2)"),
    }
    for name, (data, msg) in cases.items():
        p = write_atlas(tmp_path / name, data)
        with pytest.raises(LtpaError) as err:
            load_atlas(p, Grid(DIM, (2.0, 2.0, 2.0), "RAS", GRID))
        assert msg in str(err.value) and name in str(err.value)
    good = write_atlas(tmp_path / "good.nii.gz", base.astype(np.int16))
    corrupt = tmp_path / "corrupt.nii.gz"
    raw = good.read_bytes()
    corrupt.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(LtpaError, match="could not be read as an image"):
        load_atlas(corrupt, Grid(DIM, (2.0, 2.0, 2.0), "RAS", GRID))


def test_graphml_errors(tmp_path):
    g = nx.Graph()
    g.add_nodes_from(["1", "lh.precentral"])
    nx.write_graphml(g, str(tmp_path / "bad.graphml"))
    with pytest.raises(LtpaError, match="node id 'lh.precentral'; expected integer"):
        regions_from_graphml(tmp_path / "bad.graphml")
    ok = write_graphml(tmp_path / "ok.graphml", [3, 1, 2])
    assert regions_from_graphml(ok).tolist() == [1, 2, 3]


# ---------------------------------------------------------------------------
# dsi2's tests/create_testing_data.py scenario, re-created: cube regions in the
# QSDR grid, brainstem 83 and precentral (scale33: L 51, R 10; scale60: L 80/81,
# R 16/17), streamlines drawn voxel-corner to voxel-corner (points exactly on
# voxel boundaries), and the connection id each group of streamlines must get.

BS = (36, 40, 46, 50, 14, 20)
LPC = (50, 58, 40, 51, 45, 50)
RPC = (20, 28, 40, 51, 45, 50)


def coords(b):
    return np.array([d.flatten() for d in np.mgrid[b[0]:b[1] + 1, b[2]:b[3] + 1, b[4]:b[5] + 1]]).T


def half(b, upper):
    mid = (b[2] + b[3]) // 2
    return (b[0], b[1], mid + 1, b[3], b[4], b[5]) if upper else (b[0], b[1], b[2], mid, b[4], b[5])


def dsi2_atlases():
    s33 = np.zeros(QSDR_DIM)
    s60 = np.zeros(QSDR_DIM)
    for vol in (s33, s60):
        c = coords(BS)
        vol[c[:, 0], c[:, 1], c[:, 2]] = 83
    for b, lab in ((LPC, 51), (RPC, 10)):
        c = coords(b)
        s33[c[:, 0], c[:, 1], c[:, 2]] = lab
    for b, (lo, hi) in ((LPC, (80, 81)), (RPC, (16, 17))):
        for upper, lab in ((False, lo), (True, hi)):
            c = coords(half(b, upper))
            s60[c[:, 0], c[:, 1], c[:, 2]] = lab
    return s33, s60


def dsi2_streamlines(from_coords, to_coords):
    out = []
    for f, t in zip(from_coords, to_coords):
        n = int(np.sqrt(np.sum((f - t) ** 2)))
        out.append((np.array([np.linspace(f[a], t[a], n, endpoint=True) for a in range(3)]).T
                    * 2).astype(np.float32))
    return out


def dsi2_subject(damaged):
    p33 = region_pair_dict(range(1, 84))
    p60 = region_pair_dict(range(1, 130))
    groups = []  # (from coords, to coords, scale33 id, scale60 id)
    bs = coords(BS)
    if not damaged:
        spec = [(0, LPC, False, 51, 80), (1, LPC, True, 51, 81), (2, RPC, False, 10, 16),
                (3, RPC, True, 10, 17)]
        sizes = [20, 20, 20, 20]
    else:
        spec = [(5, LPC, True, 51, 81), (6, RPC, False, 10, 16), (7, RPC, True, 10, 17)]
        sizes = [20, 20, 30]
        small_lpc = coords((LPC[0], LPC[1], LPC[2] + 4, (LPC[2] + LPC[3]) // 2, LPC[4], LPC[5]))
        small_bs = coords((BS[0], BS[1], BS[2] + 4, BS[3], BS[4], BS[5]))
        np.random.seed(4)
        a = small_lpc[np.random.choice(len(small_lpc), 10)]
        np.random.seed(4)
        b = small_bs[np.random.choice(len(small_bs), 10)]
        groups.append((a, b, p33[(51, 83)], p60[(80, 83)]))
    for (seed, region, upper, l33, l60), size in zip(spec, sizes):
        np.random.seed(seed)
        a = bs[np.random.choice(len(bs), size)]
        np.random.seed(seed)
        reg = coords(half(region, upper))
        b = reg[np.random.choice(len(reg), size)]
        groups.append((a, b, p33[(l33, 83)], p60[(l60, 83)]))
    sls, e33, e60 = [], [], []
    for a, b, i33, i60 in groups:
        sls += dsi2_streamlines(a, b)
        e33 += [i33] * len(a)
        e60 += [i60] * len(a)
    return sls, np.array(e33), np.array(e60)


@pytest.mark.parametrize("damaged", [False, True])
def test_dsi2_scenario(tmp_path, damaged):
    s33, s60 = dsi2_atlases()
    sls, e33, e60 = dsi2_subject(damaged)
    trk = tmp_path / "s.trk"
    write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    got = {}
    for name, vol, n_regions, expected in (("scale33", s33, 83, e33), ("scale60", s60, 129, e60)):
        atlas = write_atlas(tmp_path / f"{name}.nii.gz", vol, QSDR_AFFINE)
        gml = write_graphml(tmp_path / f"{name}.graphml", range(1, n_regions + 1))
        out = tmp_path / f"{name}.npy"
        label_scan(trk, atlas, out, graphml_path=gml)
        got[name] = np.load(out)
        np.testing.assert_array_equal(got[name], expected)
    # the first streamlines join left precentral (scale33 region 51, scale60 region 80) and the
    # brainstem (83): dsi2 numbers the pairs (a <= b) of regions 1..n row by row from 1, so
    # pair (a, b) is (a - 1) rows of n, n - 1, ... pairs, then b - a + 1 into its own row;
    # this closed form does not use region_pair_dict, which built the expected arrays
    def dsi2_pair_id(a, b, n):
        return (a - 1) * n - (a - 1) * (a - 2) // 2 + (b - a) + 1

    assert got["scale33"][0] == dsi2_pair_id(51, 83, 83) == 2958
    assert got["scale60"][0] == dsi2_pair_id(80, 83, 129) == 7114


@pytest.mark.parametrize("vs", [(2.0, 2.0, 2.0), (1.25, 0.7, 3.0), (0.1, 1.1, 2.3)])
def test_grid_edges_and_outside_count_exact(tmp_path, rng, monkeypatch, vs):
    """Points within a few float32 ulps of the grid faces (and -0.0, tiny negatives).

    The compiled labeling tests "inside the atlas grid" by comparing the float32
    coordinate against per-axis thresholds instead of dividing; this pins it to
    floor(float64(x) / voxel_size) at every face, and the count of outside points.
    """
    import ltpa.formats.trk as trkmod

    atlas = rng.integers(0, 6, DIM).astype(np.int16)
    edges = []
    for ax in range(3):
        top = np.float32(DIM[ax] * vs[ax])
        edges.append(np.array([np.nextafter(top, np.float32(-1e9), dtype=np.float32) if k < 0
                               else top for k in (-1, 0)] + [
            np.float32(-0.0), np.float32(-1e-30), np.float32(1e-30), np.float32(0.0)],
            dtype=np.float32))
        for k in range(1, 4):
            edges[ax] = np.append(edges[ax], [np.nextafter(edges[ax][0], np.float32(-1e9)),
                                              np.nextafter(top, np.float32(1e9))])
            edges[ax][0] = np.nextafter(edges[ax][0], np.float32(-1e9))
    sls = []
    for _ in range(300):
        k = int(rng.integers(0, 10))
        pts = (rng.uniform(0, 1, (k, 3)) * np.array(DIM) * np.array(vs)).astype(np.float32)
        for ax in range(3):
            pick = rng.random(k) < 0.4
            pts[pick, ax] = rng.choice(edges[ax], int(pick.sum()))
        sls.append(pts)
    trk = tmp_path / "e.trk"
    write_trk(trk, sls, DIM, vs, "RAS", np.diag([*vs, 1.0]))
    vol = write_atlas(tmp_path / "atlas.nii.gz", atlas, np.diag([*vs, 1.0]))
    monkeypatch.setattr(trkmod, "BUFFER_WORDS", 64)
    out = tmp_path / "ids.npy"
    stats = label_scan(trk, vol, out, space="native")
    regions = sorted(set(np.unique(atlas).tolist()) - {0})
    ref = read_trk_slow(trk)
    vs = tuple(float(np.float32(v)) for v in vs)  # as stored in the header
    np.testing.assert_array_equal(np.load(out), label_slow(ref, atlas, vs, regions))
    outside = sum(1 for s in ref for p in s
                  if not all(0 <= np.floor(float(p[a]) / vs[a]) < DIM[a] for a in range(3)))
    assert stats["n_points_outside_grid"] == outside > 0


def test_non_finite_coordinate_is_an_error(tmp_path, rng):
    trk, vol, atlas = random_case(tmp_path, rng, n=20)
    sls = [s for s in read_trk_slow(trk)]
    k = next(i for i, s in enumerate(sls) if len(s) > 3 and i > 2)
    sls[k][2, 1] = np.nan
    bad = tmp_path / "nan.trk"
    write_trk(bad, sls, DIM, (2, 2, 2), "RAS", GRID)
    with pytest.raises(LtpaError, match=f"nan.trk.*streamline {k} has a NaN or infinite"):
        label_scan(bad, vol, tmp_path / "x.npy", space="native")
    assert not (tmp_path / "x.npy").exists()


def test_graphml_region_list_is_networkx_node_ids(tmp_path):
    g = nx.Graph()
    g.add_nodes_from(["7", "3", "12"])
    g.nodes["7"]["dn_name"] = "x"
    g.add_edge("3", "12", weight=2)
    nx.write_graphml(g, str(tmp_path / "a.graphml"))
    want = sorted(int(n) for n in nx.read_graphml(str(tmp_path / "a.graphml")).nodes)
    assert regions_from_graphml(tmp_path / "a.graphml").tolist() == want == [3, 7, 12]
    (tmp_path / "b.graphml").write_text("<graphml><graph><node id='1'/></graph></graphml>")
    assert regions_from_graphml(tmp_path / "b.graphml").tolist() == [1]  # no namespace
    (tmp_path / "c.graphml").write_text("not xml")
    with pytest.raises(LtpaError, match="could not be read"):
        regions_from_graphml(tmp_path / "c.graphml")


def test_labeling_in_any_buffer_size_matches_the_reference(tmp_path, rng, monkeypatch):
    """One read path for every file: records split across buffers, grown buffers, errors."""
    import ltpa.formats.trk as trkmod

    seen = set()
    for it in range(40):
        monkeypatch.setattr(trkmod, "BUFFER_WORDS", int(rng.choice([5, 37, 1000, 1 << 20])))
        data = rng.integers(0, 5, DIM) * (rng.random(DIM) < rng.uniform(0.02, 0.9))
        vol = write_atlas(tmp_path / f"a{it}.nii.gz", data.astype(np.int16))
        sls = []
        for _ in range(int(rng.integers(0, 50))):
            k = int(rng.integers(0, 30))
            s = (rng.uniform(-0.1, 1.1, (k, 3)) * np.array(DIM) * 2.0).astype(np.float32)
            if k and rng.random() < 0.03:
                s[rng.integers(k), rng.integers(3)] = rng.choice([np.nan, np.inf, -np.inf])
            sls.append(s)
        path = tmp_path / f"f{it}.trk"
        write_trk(path, sls, DIM, (2, 2, 2), "RAS", GRID)
        out = tmp_path / f"o{it}.npy"
        bad = next((k for k, s in enumerate(sls) if not np.isfinite(s).all()), None)
        if bad is None:
            label_scan(path, vol, out, start=it % 2, space="native")
            regions = np.unique(data[data > 0])
            np.testing.assert_array_equal(np.load(out), label_slow(sls, data, (2.0, 2.0, 2.0),
                                                                   regions, start=it % 2))
            seen.add("ok")
        else:
            with pytest.raises(LtpaError, match=f"streamline {bad} has a NaN"):
                label_scan(path, vol, out, space="native")
            assert not out.exists()
            seen.add("err")
    assert seen == {"ok", "err"}


@pytest.mark.parametrize("n_regions", [1, 2, 7, 40])
def test_pair_index_is_the_position_in_triu_indices(n_regions):
    """The one connection-id rule the demo and the reader use: (lo, hi) -> triu position."""
    from ltpa.prepared.connections import pair_index

    rows, cols = np.triu_indices(n_regions)
    got = pair_index(rows, cols, n_regions)
    np.testing.assert_array_equal(got, np.arange(rows.shape[0]))
    assert got.dtype == np.int64

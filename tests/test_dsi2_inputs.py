"""Everything dsi2's importer accepted: b0 atlases mapped through a fib file, track scalars,
label tables as region lists, and the npy sidecar."""

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
from scipy.io import savemat

from conftest import planned_jobs, run_snakemake
from ltpa.errors import LtpaError
from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
from ltpa.formats.regions import regions_from_table
from ltpa.formats.trkwrite import write_trk
from ltpa.jobs.pipeline import label_scan, scalars_scan
from ltpa.prepared.b0map import map_b0_atlas
from ltpa.study.sidecar import read as _sidecar_read


def read_sidecar(path):
    return _sidecar_read(path)[0]


def save_fib(path, dimension, mx, my, mz):
    """A fake .fib.gz as dsi2's own test made it: MATLAB v4, gzipped."""
    with gzip.open(path, "wb") as fh:
        savemat(fh, {"dimension": np.array(dimension), "mx": mx, "my": my, "mz": mz}, format="4")


def reference_map(b0, affine, dimension, mx, my, mz):
    """Voxel-by-voxel: QSDR voxel (Fortran order) v takes conformed b0[mx[v], my[v], mz[v]]."""
    conf = b0.copy()
    if affine[0, 0] > 0:
        conf = conf[::-1]
    if affine[1, 1] > 0:
        conf = conf[:, ::-1]
    if affine[2, 2] < 0:
        conf = conf[:, :, ::-1]
    out = np.zeros(dimension, dtype=b0.dtype)
    n = int(np.prod(dimension))
    for v in range(n):
        i, j, k = np.unravel_index(v, dimension, order="F")
        src = []
        for axis, m in enumerate((mx, my, mz)):
            idx = int(m[v])
            src.append(idx if 0 <= idx < conf.shape[axis] else 0)
        out[i, j, k] = conf[tuple(src)]
    return out


@pytest.mark.parametrize("affine", [np.diag([2.0, 2, 2, 1]), np.diag([-2.0, -2, -2, 1])])
def test_b0_mapping_voxel_by_voxel(tmp_path, rng, affine):
    dimension = (9, 8, 7)
    b0 = rng.integers(0, 20, (6, 5, 4)).astype(np.int16)
    n = int(np.prod(dimension))
    mx, my, mz = (rng.integers(-1, s + 2, n) for s in b0.shape)  # some outside the b0 volume
    save_fib(tmp_path / "s.fib.gz", dimension, mx, my, mz)
    nib.Nifti1Image(b0, affine).to_filename(str(tmp_path / "b0.nii.gz"))
    stats = map_b0_atlas(tmp_path / "s.fib.gz", tmp_path / "b0.nii.gz", tmp_path / "q.nii.gz")
    img = nib.load(str(tmp_path / "q.nii.gz"))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj),
                                  reference_map(b0, affine, dimension, mx, my, mz))
    np.testing.assert_allclose(img.affine, QSDR_AFFINE)
    assert stats["outside_b0"]["x"] == int(((mx < 0) | (mx >= 6)).sum()) > 0


def _rotation(axis, degrees):
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(4)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _permuted(perm, signs, tilt_deg=0.0):
    """An affine whose voxel axis k runs along world axis perm[k] with sign signs[k] (2 mm),
    tilted by ``tilt_deg`` about z: a sagittal or coronal acquisition, straight or oblique."""
    a = np.zeros((4, 4))
    for k, (w, sg) in enumerate(zip(perm, signs)):
        a[w, k] = 2.0 * sg
    a[:3, 3] = [-7.0, 11.0, 3.0]
    a[3, 3] = 1.0
    return _rotation(2, tilt_deg) @ a


@pytest.mark.parametrize("affine", [
    _permuted((1, 2, 0), (1, -1, 1)),  # sagittal: voxel x runs along world y
    _permuted((2, 0, 1), (-1, 1, -1)),
    _permuted((0, 2, 1), (-1, -1, 1), tilt_deg=12),  # coronal, oblique
    _permuted((1, 0, 2), (1, 1, -1), tilt_deg=-20),
    _rotation(0, 15) @ np.diag([2.0, -2, 2, 1]),  # no permutation, oblique
], ids=["sagittal", "cyclic", "coronal-oblique", "xy-swapped-oblique", "oblique"])
def test_b0_mapping_with_a_permuted_or_oblique_affine(tmp_path, rng, affine):
    """DSI Studio reads every volume into LPS voxel order (its NIfTI reader swaps the axes
    of a permuted image, then flips); the fib's mx/my/mz index that volume. Independently:
    nibabel's orientation of the affine, brought to LPS by nibabel, then voxel by voxel."""
    dimension = (7, 6, 5)
    b0 = rng.integers(0, 30, (6, 5, 4)).astype(np.int16)
    ornt = nib.orientations.io_orientation(affine)
    to_lps = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("LPS"))
    lps = nib.orientations.apply_orientation(b0, to_lps)
    n = int(np.prod(dimension))
    mx, my, mz = (rng.integers(-1, s + 1, n) for s in lps.shape)
    save_fib(tmp_path / "s.fib.gz", dimension, mx, my, mz)
    nib.Nifti1Image(b0, affine).to_filename(str(tmp_path / "b0.nii.gz"))
    map_b0_atlas(tmp_path / "s.fib.gz", tmp_path / "b0.nii.gz", tmp_path / "q.nii.gz")
    got = np.asanyarray(nib.load(str(tmp_path / "q.nii.gz")).dataobj)
    # lps is already in DSI Studio's order: an identity affine in reference_map's LPS terms
    np.testing.assert_array_equal(
        got, reference_map(lps, np.diag([-1.0, -1, 1, 1]), dimension, mx, my, mz))


def test_b0_mapping_errors(tmp_path):
    (tmp_path / "bad.fib.gz").write_bytes(b"not gzip at all")
    nib.Nifti1Image(np.zeros((3, 3, 3), np.int16), np.eye(4)).to_filename(
        str(tmp_path / "b0.nii.gz"))
    with pytest.raises(LtpaError, match="bad.fib.gz' is not a gzipped MATLAB file"):
        map_b0_atlas(tmp_path / "bad.fib.gz", tmp_path / "b0.nii.gz", tmp_path / "q.nii.gz")
    with gzip.open(tmp_path / "nomap.fib.gz", "wb") as fh:
        savemat(fh, {"dimension": np.array([3, 3, 3])}, format="4")
    with pytest.raises(LtpaError, match="has no mx, my, mz"):
        map_b0_atlas(tmp_path / "nomap.fib.gz", tmp_path / "b0.nii.gz", tmp_path / "q.nii.gz")
    assert not (tmp_path / "q.nii.gz").exists()


def test_track_scalars_round_trip_and_count_check(tmp_path, rng):
    sls = [rng.uniform(0, 100, (int(rng.integers(2, 9)), 3)).astype(np.float32) for _ in range(30)]
    write_trk(tmp_path / "t.trk", sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    values = [rng.uniform(0, 1, len(s)) for s in sls]
    (tmp_path / "fa.txt").write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in row) for row in values) + "\n")
    scalars_scan(tmp_path / "fa.txt", tmp_path / "t.trk", tmp_path / "fa.npy", scan_id="s1")
    got = np.load(tmp_path / "fa.npy")
    expected = [np.mean([float(f"{v:.6f}") for v in row]) for row in values]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    (tmp_path / "short.txt").write_text("\n".join("1 2" for _ in range(29)) + "\n")
    with pytest.raises(LtpaError) as err:
        scalars_scan(tmp_path / "short.txt", tmp_path / "t.trk", tmp_path / "x.npy", scan_id="s1")
    assert "has 29 lines but there are 30 streamlines" in str(err.value)
    assert all(s in str(err.value) for s in ("short.txt", "t.trk", "scan 's1'"))


def test_an_empty_scalar_line_is_nan_for_that_streamline_only(tmp_path, rng):
    sls = [rng.uniform(0, 100, (4, 3)).astype(np.float32) for _ in range(5)]
    write_trk(tmp_path / "t.trk", sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    rows = ["0.5 1.5", "", "2 4 6", "   ", "7"]  # streamlines 1 and 3 have no values
    (tmp_path / "fa.txt").write_text("\n".join(rows) + "\n")
    scalars_scan(tmp_path / "fa.txt", tmp_path / "t.trk", tmp_path / "fa.npy", scan_id="s1")
    got = np.load(tmp_path / "fa.npy")
    assert got.dtype == np.float64 and got.shape == (5,)
    assert np.isnan(got).tolist() == [False, True, False, True, False]
    np.testing.assert_array_equal(got[[0, 2, 4]], [1.0, 4.0, 7.0])
    assert read_sidecar(tmp_path / "fa.npy")["stats"]["n_empty"] == 2


def test_label_tables(tmp_path):
    (tmp_path / "a.tsv").write_text("index\tname\n1\tlh.a\n3\tlh.c\n2\tlh.b\n")
    (tmp_path / "b.csv").write_text("index,name\n10,x\n4,y\n")
    (tmp_path / "FreeSurferColorLUT.txt").write_text(
        "#No. Label Name:  R G B A\n0  Unknown  0 0 0 0\n"
        "2  Left-Cerebral-White-Matter 245 245 245 0\n"
        "17 Left-Hippocampus 220 216 20 0\n\n1000 ctx-lh-unknown 25 5 25 0\n")
    (tmp_path / "mrtrix.txt").write_text(
        "# MRtrix LUT\n1 L_Ctx \"Left cortex\" 10 20 30 255\n7 Th Thal 1 2 3 255\n")
    assert regions_from_table(tmp_path / "a.tsv").tolist() == [1, 2, 3]
    assert regions_from_table(tmp_path / "b.csv").tolist() == [4, 10]
    assert regions_from_table(tmp_path / "FreeSurferColorLUT.txt").tolist() == [2, 17, 1000]
    assert regions_from_table(tmp_path / "mrtrix.txt").tolist() == [1, 7]
    (tmp_path / "bad.tsv").write_text("1\ta\n2\tb\nthree\tc\n")
    with pytest.raises(LtpaError, match="line 3: first column 'three' is not an integer"):
        regions_from_table(tmp_path / "bad.tsv")


def two_region_case(tmp_path):
    """Labels 5 and 9 in a 10^3 grid, one streamline from 5 through 9 and out of the grid."""
    atlas = np.zeros((10, 10, 10), np.int16)
    atlas[1:3, 1:3, 1:3] = 5
    atlas[6:8, 6:8, 6:8] = 9
    nib.Nifti1Image(atlas, np.diag([2.0, 2, 2, 1])).to_filename(str(tmp_path / "a.nii.gz"))
    sls = [np.array([[3, 3, 3], [8, 8, 8], [13, 13, 13]], np.float32)]
    write_trk(tmp_path / "t.trk", sls, (10, 10, 10), (2, 2, 2), "RAS", np.diag([2.0, 2, 2, 1]))


def test_labels_path_region_list_and_sidecar(tmp_path, rng):
    two_region_case(tmp_path)
    (tmp_path / "lut.tsv").write_text("index\tname\n5\tfive\n7\tseven\n9\tnine\n")
    label_scan(tmp_path / "t.trk", tmp_path / "a.nii.gz", tmp_path / "o.npy",
               labels_path=tmp_path / "lut.tsv", space="native")
    # regions [5, 7, 9]: pair (5, 9) = ranks (0, 2) -> triu position 2 -> id 3
    assert np.load(tmp_path / "o.npy").tolist() == [3]
    side = read_sidecar(tmp_path / "o.npy")
    assert side["region_ids"] == [5, 7, 9] and side["connection_ids_start_at"] == 1
    ids = np.triu_indices(len(side["region_ids"]))
    k = 3 - side["connection_ids_start_at"]
    assert (side["region_ids"][ids[0][k]], side["region_ids"][ids[1][k]]) == (5, 9)


@pytest.mark.slow
def test_workflow_maps_b0_atlas_and_averages_scalars(tmp_path, demo_study):
    study = demo_study.parent
    data = json.loads(demo_study.read_text())
    # s1's scale33 atlas now comes from a b0-space atlas and an identity fib mapping
    qsdr = nib.load(str(study / "s1" / "s1.scale33.QSDR.nii.gz"))
    b0 = np.asanyarray(qsdr.dataobj)
    nib.Nifti1Image(b0[::-1], np.diag([2.0, -2, 2, 1])).to_filename(
        str(study / "s1" / "b0.scale33.nii.gz"))
    n = int(np.prod(QSDR_DIM))
    mx, my, mz = np.unravel_index(np.arange(n), QSDR_DIM, order="F")
    save_fib(study / "s1" / "s1.fib.gz", QSDR_DIM, mx, my, mz)
    (study / "s1" / "s1.scale33.QSDR.nii.gz").unlink()
    data[0]["fib_file"] = "s1/s1.fib.gz"
    lab = data[0]["track_labels"][0]
    del lab["volume_path"]
    lab["qsdr_volume_path"] = "s1/s1.scale33.QSDR.nii.gz"
    lab["b0_volume_path"] = "s1/b0.scale33.nii.gz"
    n_sl = len(np.load(study / "expected" / "s1.scale33.npy"))
    (study / "s1" / "fa.txt").write_text("\n".join(f"{i} {i + 1}" for i in range(n_sl)) + "\n")
    data[0]["track_scalars"] = [{"name": "fa", "txt_path": "s1/fa.txt", "numpy_path": "s1/fa.npy"}]
    demo_study.write_text(json.dumps(data))
    work = tmp_path / "work"
    proc = run_snakemake(work, "-n", local_data=demo_study)
    jobs = planned_jobs(proc.output)
    assert ("map_b0_atlas", str(study / "s1" / "s1.scale33.QSDR.nii.gz")) in jobs
    assert ("average_track_scalars", str(study / "s1" / "fa.npy")) in jobs
    assert f"wildcards: path={study / 's1' / 's1.scale33.QSDR.nii.gz'}\n" in proc.output
    run_snakemake(work, local_data=demo_study)
    # the b0 atlas flipped in y (affine [1,1] < 0 keeps it; we stored it flipped in x with +x)
    # mapped back by identity: labels equal the original QSDR atlas after dsi2's conform rule
    mapped = np.asanyarray(nib.load(str(study / "s1" / "s1.scale33.QSDR.nii.gz")).dataobj)
    np.testing.assert_array_equal(mapped, b0)
    np.testing.assert_array_equal(np.load(study / "s1" / "scale33.npy"),
                                  np.load(study / "expected" / "s1.scale33.npy"))
    np.testing.assert_allclose(np.load(study / "s1" / "fa.npy"), np.arange(n_sl) + 0.5)
    # a changed b0 atlas reruns the mapping and then the labels (a bare touch with identical
    # content may not: Snakemake compares checksums of small files whose mtime changed)
    import time

    time.sleep(1.1)
    changed = b0[::-1].copy()
    changed[changed == 10] = 0
    nib.Nifti1Image(changed, np.diag([2.0, -2, 2, 1])).to_filename(
        str(study / "s1" / "b0.scale33.nii.gz"))
    jobs = planned_jobs(run_snakemake(work, "-n", local_data=demo_study).output)
    assert [j for j in jobs if j[0] in ("label_streamlines", "map_b0_atlas")] == [
        ("label_streamlines", str(study / "s1" / "scale33.npy")),
        ("map_b0_atlas", str(study / "s1" / "s1.scale33.QSDR.nii.gz"))]


def test_atlas_own_labels_fallback_warns(tmp_path, caplog):
    two_region_case(tmp_path)
    with caplog.at_level("WARNING"):
        label_scan(tmp_path / "t.trk", tmp_path / "a.nii.gz", tmp_path / "o.npy", scan_id="s7",
                   space="native")
    assert ("scan 's7': no graphml_path: the region list is this atlas's own labels (2)"
            in caplog.text)
    assert "comparable across scans only if" in caplog.text
    # regions [5, 9]: (5, 9) -> triu position 1 -> id 2; the sidecar says how to decode it
    assert np.load(tmp_path / "o.npy").tolist() == [2]
    assert read_sidecar(tmp_path / "o.npy")["region_ids"] == [5, 9]

"""ltpa.TrackDataSource and `ltpa query`: a whole study queried, against slow references."""

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import BIN, ltpa_main
from ltpa import LtpaError, TrackDataSource
from ltpa.formats.grids import MNI_AFFINE, MNI_DIM
from reference import hash_slow, read_trk_slow, region_pair_dict

DATA = Path(__file__).parent / "data"


def qsdr_key(v):
    return (v[0] + 6, 101 - v[1], v[2] + 11)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The demo study (3 scans, 2 atlases) with every output made by the workflow's steps."""
    from ltpa.demo.small import make_demo
    from ltpa.jobs.pipeline import run
    from ltpa.study.config import default_config
    from ltpa.study.study import load_study

    path = make_demo(tmp_path_factory.mktemp("reader") / "study", n_scans=3, seed=3,
                     n_per_side=20, n_background=15)
    config = default_config()
    for t in load_study(path, config, check_inputs_of_jobs=False).targets:
        run(t.spec(config))
    return path


@pytest.fixture(scope="module")
def reference(study):
    """Per scan: the slow hashing of its trk (key voxel -> sorted ids) and its streamlines."""
    out = {}
    for scan in json.loads(study.read_text()):
        sls = read_trk_slow(study.parent / scan["trk_file"])
        table = hash_slow(sls, (2.0, 2.0, 2.0), qsdr_key, MNI_DIM)
        out[scan["scan_id"]] = table
    return out


def brute(table, voxels):
    ids = set()
    for v in voxels:
        ids.update(table.get(tuple(int(x) for x in v), ()))
    return sorted(ids)


def source_of(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TrackDataSource(path, **kw)


def variant(study, name, edit):
    """A second JSON in the study's folder: the demo's scans after ``edit(scans)``."""
    scans = json.loads(study.read_text())
    edit(scans)
    path = study.parent / name
    path.write_text(json.dumps(scans))
    return path


# --------------------------------------------------------------------------- the study


def test_scans_table(study):
    source = source_of(study)
    raw = json.loads(study.read_text())
    table = source.scans
    assert len(source) == len(table) == 3 and source.scan_ids == ["s1", "s2", "s3"]
    assert table.columns[:6] == ["scan_id", "scan_group", "subject_id", "study", "age", "sex"]
    for row, scan in zip(table, raw):
        assert row["scan_id"] == scan["scan_id"] and row["scan_group"] == scan["scan_group"]
        assert row["subject_id"] == scan["subject_id"] and row["study"] == scan["study"]
        assert row["age"] == scan["attributes"]["age"] and row["sex"] == scan["attributes"]["sex"]
        assert row["software"] == "DSI Studio" and set(row) == set(table.columns)
        assert "pkl_path" not in row and "track_labels" not in row
    assert table.column("scan_group") == ["control", "patient", "control"]
    assert table.to_tsv().splitlines()[0].split("\t") == table.columns
    with pytest.raises(KeyError, match="columns"):
        table.column("nope")
    assert source.warnings == []


@pytest.mark.parametrize("max_runs", [0, 256, 10**9])  # both ways of gathering id ranges
def test_query_ijk_equals_brute_force_on_random_rois(study, reference, max_runs, monkeypatch):
    import ltpa.analysis.lookup

    monkeypatch.setattr(ltpa.analysis.lookup, "_MAX_RUNS", max_runs)
    source = source_of(study)
    rng = np.random.default_rng(2024)
    keys = {sid: np.array(sorted(t)) for sid, t in reference.items()}
    every_key = np.concatenate(list(keys.values()))
    for trial in range(25):
        kind = trial % 3
        if kind == 0:  # voxels that streamlines reach, plus random ones of the grid
            n = int(rng.integers(1, 40))
            voxels = np.concatenate([every_key[rng.integers(0, len(every_key), n)],
                                     rng.integers(0, MNI_DIM, size=(n, 3))])
        elif kind == 1:  # a box around a reached voxel
            c = every_key[rng.integers(0, len(every_key))]
            r = rng.integers(0, 3, 3)
            lo, hi = np.maximum(c - r, 0), np.minimum(c + r + 1, MNI_DIM)
            voxels = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)],
                                          indexing="ij"), -1).reshape(-1, 3)
        else:  # random voxels, repeated
            voxels = rng.integers(0, MNI_DIM, size=(int(rng.integers(0, 200)), 3))
            voxels = np.concatenate([voxels, voxels[: len(voxels) // 2]])
        results = source.query_ijk(voxels if trial % 2 else [tuple(v) for v in voxels])
        assert results.scan_ids == ["s1", "s2", "s3"]
        for q in results:
            assert q.ids.dtype == np.int32
            assert q.ids.tolist() == brute(reference[q.scan_id], voxels), (trial, q.scan_id)
    # the whole brain: every streamline with a point in the grid
    everything = source.query_ijk(every_key)
    for q in everything:
        assert q.ids.tolist() == brute(reference[q.scan_id], keys[q.scan_id])
    # dsi2's `every`: every n-th of the selection, from the n-th
    sub = source.query_ijk(every_key, every=3)
    for q, full in zip(sub, everything):
        assert q.ids.tolist() == full.ids[2::3].tolist()
    assert source.query_ijk([]).counts.tolist() == [0, 0, 0]
    assert len(source._open) <= 8


def test_one_voxel_and_few_open_maps(study, reference):
    source = source_of(study, max_open=1)
    v = sorted(reference["s2"])[5]
    results = source.query_ijk(v)  # one (i, j, k)
    assert [q.ids.tolist() for q in results] == [brute(reference[s], [v]) for s in
                                                 ("s1", "s2", "s3")]
    assert len(source._open) == 1
    assert source.dataset("s3") is source.dataset(2)


def test_mask_query(study, reference, tmp_path):
    source = source_of(study)
    rng = np.random.default_rng(7)
    mask = (rng.random(MNI_DIM) < 0.02).astype(np.uint8)
    voxels = np.argwhere(mask)
    path = tmp_path / "roi.nii.gz"
    nib.Nifti1Image(mask, MNI_AFFINE).to_filename(path)
    by_file = source.query_ijk(str(path))
    by_image = source.query_ijk(nib.load(path))
    by_array = source.query_ijk(mask.astype(bool))
    for a, b, c in zip(by_file, by_image, by_array):
        assert a.ids.tolist() == b.ids.tolist() == c.ids.tolist() \
            == brute(reference[a.scan_id], voxels)
    # another grid: the QSDR affine, another shape, 4-D, a missing file
    other = tmp_path / "qsdr.nii.gz"
    nib.Nifti1Image(mask, np.diag([-2.0, 2, 2, 1])).to_filename(other)
    with pytest.raises(LtpaError) as err:
        source.query_ijk(other)
    text = str(err.value)
    assert str(other) in text and "'s1'" in text and "resample" in text
    assert "affine [[-2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]]" in text  # the mask's grid
    assert "affine [[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72]]" in text  # the key grid
    small = tmp_path / "small.nii.gz"
    nib.Nifti1Image(mask[:50], MNI_AFFINE).to_filename(small)
    with pytest.raises(LtpaError, match=r"is in grid 50x109x91, .*; the key grid is 91x109x91"):
        source.query_ijk(small)
    four = tmp_path / "four.nii.gz"
    nib.Nifti1Image(mask[..., None], MNI_AFFINE).to_filename(four)
    with pytest.raises(LtpaError, match="4 dimensions"):
        source.query_ijk(four)
    with pytest.raises(LtpaError, match="does not exist"):
        source.query_ijk(tmp_path / "none.nii.gz")
    # a key grid whose header has no affine (an old native trk): shape and voxel size
    from ltpa.analysis.roi import KeyGrid, Roi

    roi = Roi.from_input(path)
    assert roi.check(KeyGrid(MNI_DIM, (2.0, 2.0, 2.0), None)) is None
    assert "no affine: shape and voxel size compared" in \
        roi.check(KeyGrid(MNI_DIM, (1.0, 1.0, 1.0), None))
    with pytest.raises(LtpaError, match="the mask array is in shape 91x109x90; the key grid"):
        source.query_ijk(np.zeros((91, 109, 90), bool))


def test_bad_voxels(study):
    source = source_of(study)
    with pytest.raises(LtpaError) as err:
        source.query_ijk([(1, 2, 3), (91, 0, 0), (0, -1, 0)])
    text = str(err.value)
    assert "(91, 0, 0), (0, -1, 0)" in text and "91x109x91" in text and "'s1'" in text
    with pytest.raises(LtpaError, match="not three integers"):
        source.query_ijk([(1.5, 2, 3)])
    with pytest.raises(LtpaError, match="triples"):
        source.query_ijk([(1, 2)])
    with pytest.raises(LtpaError, match="every"):
        source.query_ijk([(1, 2, 3)], every=-1)
    assert source.query_ijk(np.array([[44.0, 53.0, 25.0]])).counts.shape == (3,)


def test_streamlines_and_saved_subset(study, tmp_path):
    source = source_of(study)
    raw = json.loads(study.read_text())
    ds = source.dataset(0)
    results = source.query_ijk(ds.tracks_at_ijk.key_array()[::7])
    for q, scan in zip(results, raw):
        assert len(q) > 0
        key_trk = study.parent / scan["pkl_trk_path"]  # the workflow's export, read slowly
        slow = read_trk_slow(key_trk)
        assert len(q.tracks) == len(q)
        for got, i in zip(q.tracks, q.ids):
            np.testing.assert_array_equal(got, slow[i])
        np.testing.assert_array_equal(q.tracks[-1], slow[q.ids[-1]])
        assert [t.shape for t in q.tracks[:2]] == [slow[i].shape for i in q.ids[:2]]
        out = q.save(tmp_path / f"{q.scan_id}.trk")
        mine, theirs = nib.streamlines.load(str(out)), nib.streamlines.load(str(key_trk))
        np.testing.assert_array_equal(mine.affine, theirs.affine)
        assert mine.header["nb_streamlines"] == len(q)
        assert len(mine.streamlines) == len(q)
        for a, i in zip(mine.streamlines, q.ids):
            np.testing.assert_array_equal(a, theirs.streamlines[i])
        assert [r.tolist() for r in read_trk_slow(out)] == [slow[i].tolist() for i in q.ids]
    empty = source.query_ijk([(0, 0, 0)])[0]
    assert len(empty) == 0
    assert len(nib.streamlines.load(str(empty.save(tmp_path / "empty.trk"))).streamlines) == 0


# --------------------------------------------------------------------------- atlases


def test_change_atlas_matches_exactly_one_entry(study):
    source = source_of(study)
    with pytest.raises(LtpaError, match="no atlas selected"):
        source.connection_matrices()
    with pytest.raises(LtpaError) as err:
        source.change_atlas("Lausanne2008")  # two entries per scan: ambiguous
    text = str(err.value)
    for i, sid in enumerate(("s1", "s2", "s3")):
        assert f"scan #{i} ('{sid}'), field 'track_labels': 2 entries match" in text
    assert "scale=33" in text and "scale=60" in text
    with pytest.raises(LtpaError, match="no scan has an atlas matching name='AAL'.*Lausanne2008"):
        source.change_atlas("AAL")
    with pytest.raises(LtpaError, match="no scan has an atlas matching .*scale=99"):
        source.change_atlas("Lausanne2008", scale=99)
    with pytest.raises(LtpaError, match="give an atlas name"):
        source.change_atlas()
    paths = source.change_atlas("Lausanne2008", scale=60)
    assert [p.name for p in paths] == ["scale60.npy"] * 3
    assert source.atlas == {"name": "Lausanne2008", "scale": 60}
    assert source.change_atlas(scale=33)[0].name == "scale33.npy"  # parameters alone
    # an atlas only one scan has: the others are named
    path = variant(study, "one_atlas.json",
                   lambda scans: scans[0]["track_labels"].append(
                       dict(scans[0]["track_labels"][0], name="AAL",
                            numpy_path="s1/aal.npy")))
    other = source_of(path)
    with pytest.raises(LtpaError) as err:
        other.change_atlas("AAL")
    assert "scan #1 ('s2'), field 'track_labels': no entry matches" in str(err.value)
    assert "'s3'" in str(err.value) and "'s1'), field 'track_labels[2].numpy_path'" in \
        str(err.value) and "aal.npy" in str(err.value)


def decode_reference(regions, start=1):
    return {v: k for k, v in region_pair_dict(regions, start).items()}


@pytest.mark.parametrize("scale,n_regions", [(33, 83), (60, 129)])
def test_connections_equal_independent_counts(study, scale, n_regions):
    source = source_of(study)
    source.change_atlas("Lausanne2008", scale=scale)
    raw = json.loads(study.read_text())
    regions = list(range(1, n_regions + 1))  # the demo graphml's nodes
    pairs = decode_reference(regions)
    npys = [np.load(study.parent / s["track_labels"][0 if scale == 33 else 1]["numpy_path"])
            for s in raw]
    expected = [np.load(study.parent / "expected" / f"{s['scan_id']}.scale{scale}.npy")
                for s in raw]
    for got, want in zip(npys, expected):
        np.testing.assert_array_equal(got, want)  # the demo's own check of the labeling
    m = source.connection_matrices()
    assert m.counts.shape == (3, n_regions, n_regions) and m.counts.dtype == np.int32
    assert m.regions.tolist() == regions and m.scan_ids == ["s1", "s2", "s3"]
    assert m.names[82] == "Brain-Stem" and m.names[0] == "region_1"
    assert m.groups.tolist() == ["control", "patient", "control"]
    for s, conn in enumerate(npys):
        ref = np.zeros((n_regions, n_regions), dtype=np.int64)
        for c in conn.tolist():
            if c == 0:
                continue
            a, b = pairs[c]
            ref[a - 1, b - 1] += 1
            if a != b:
                ref[b - 1, a - 1] += 1
        np.testing.assert_array_equal(m.counts[s], ref)
    # group statistics are one expression
    assert m.counts[m.groups == "control"].mean(axis=0).shape == (n_regions, n_regions)
    # connection ids: by id, and by region pair
    used = sorted(set(np.concatenate(npys).tolist()) - {0})
    for cid in used[:3]:
        a, b = pairs[cid]
        assert source.connection_id(a, b) == source.connection_id(b, a) == cid
        results = source.query_connection_id(cid)
        for q, conn in zip(results, npys):
            assert q.ids.tolist() == np.flatnonzero(conn == cid).tolist()
            assert set(q.connections.tolist()) <= {cid}
        ra, rb = source.decode([cid, 0], scan=1)
        assert (ra.tolist(), rb.tolist()) == ([a, -1], [b, -1])
    both = source.query_connection_id(used[:2])
    for q, conn in zip(both, npys):
        assert q.ids.tolist() == np.flatnonzero(np.isin(conn, used[:2])).tolist()
    with pytest.raises(LtpaError, match="region 999 is not in the region list"):
        source.connection_id(1, 999)
    # the connections of a voxel query follow the atlas selected when it ran
    q = source.query_ijk(source.dataset(0).tracks_at_ijk.key_array())[0]
    np.testing.assert_array_equal(q.connections, npys[0][q.ids])


def test_connection_matrices_without_sidecar_use_graphml_and_config(study, tmp_path):
    def edit(scans):
        for s in scans:
            s["track_labels"] = s["track_labels"][:1]
            src = study.parent / s["track_labels"][0]["numpy_path"]
            dst = tmp_path / f"{s['scan_id']}.npy"
            shutil.copy(src, dst)  # no sidecar beside it
            s["track_labels"][0]["numpy_path"] = str(dst)

    path = variant(study, "nosidecar.json", edit)
    with pytest.warns(UserWarning, match="out of date"):
        source = TrackDataSource(path)
    assert sum("out of date" in w for w in source.warnings) == 3
    source.change_atlas("Lausanne2008")
    base = source_of(study)
    base.change_atlas("Lausanne2008", scale=33)
    np.testing.assert_array_equal(source.connection_matrices().counts,
                                  base.connection_matrices().counts)


def test_missing_and_stale_files_are_named(study, tmp_path):
    def no_pkl(scans):
        scans[1]["pkl_path"] = "s2/gone.pkl"

    path = variant(study, "nopkl.json", no_pkl)
    with pytest.raises(LtpaError) as err:
        source_of(path)
    text = str(err.value)
    assert "scan #1 ('s2'), field 'pkl_path'" in text and "gone.pkl" in text
    assert "does not exist" in text

    def no_npy(scans):
        scans[2]["track_labels"][0]["numpy_path"] = "s3/gone.npy"

    source = source_of(variant(study, "nonpy.json", no_npy))
    with pytest.raises(LtpaError) as err:
        source.change_atlas("Lausanne2008", scale=33)
    assert "scan #2 ('s3'), field 'track_labels[0].numpy_path'" in str(err.value)
    assert "gone.npy" in str(err.value)

    short = tmp_path / "short.npy"
    np.save(short, np.zeros(5, dtype=np.int64))

    def stale(scans):
        scans[1]["track_labels"][0]["numpy_path"] = str(short)

    source = source_of(variant(study, "stale.json", stale))
    source.change_atlas("Lausanne2008", scale=33)
    with pytest.raises(LtpaError) as err:
        source.connection_matrices()
    text = str(err.value)
    assert "scan #1 ('s2'), field 'track_labels[0].numpy_path'" in text
    assert str(short) in text and "5 connection ids" in text and "s2.pkl" in text

    # a pkl that disappears after the study was opened
    copy = tmp_path / "copy"
    shutil.copytree(study.parent, copy)
    source = source_of(copy / "local_data.json")
    (copy / "s3" / "s3.pkl").unlink()
    with pytest.raises(LtpaError) as err:
        source.query_ijk([(44, 53, 25)])
    assert "scan #2 ('s3'), field 'pkl_path'" in str(err.value) and "s3.pkl" in str(err.value)


def test_first_release_pkl_reads_through_the_reader(tmp_path):
    """tests/data/track_dataset_v0.pkl (format 0, written by the first release) in a study."""
    from ltpa import load_track_dataset

    shutil.copy(DATA / "track_dataset_v0.pkl", tmp_path / "fx1.pkl")
    shutil.copy(DATA / "track_dataset_v0.trk", tmp_path / "fx1.trk")
    (tmp_path / "local_data.json").write_text(json.dumps([{
        "scan_id": "fx1", "scan_group": "control", "trk_file": "fx1.trk",
        "pkl_path": "fx1.pkl", "attributes": {"age": 30}}]))
    with pytest.warns(UserWarning, match="no sidecar"):
        source = TrackDataSource(tmp_path / "local_data.json")
    ds = load_track_dataset(tmp_path / "fx1.pkl")
    table = {k: v.tolist() for k, v in ds.tracks_at_ijk.items()}
    slow = hash_slow(read_trk_slow(tmp_path / "fx1.trk"), (2.0, 2.0, 2.0), qsdr_key, MNI_DIM)
    assert table == slow
    keys = sorted(table)
    for n in (1, 10, len(keys)):
        (q,) = source.query_ijk(keys[:n])
        assert q.ids.tolist() == brute(slow, keys[:n])
    assert source.scans[0]["age"] == 30


# --------------------------------------------------------------------------- command line


def ltpa(*args):
    return subprocess.run([str(BIN / "ltpa"), *map(str, args)], capture_output=True, text=True)


def test_cli_query(study, reference, tmp_path, capfd):
    """The first query runs the real command; the others ``ltpa.cli.main`` in process
    (``ltpa_main``: the same code, its exit status and what it wrote on fds 1 and 2)."""
    source = source_of(study)
    source.change_atlas("Lausanne2008", scale=33)
    voxels = sorted(reference["s1"])[:30:3]
    args = [a for v in voxels for a in ("--ijk", ",".join(map(str, v)))]
    proc = ltpa("query", study, *args, "--atlas", "Lausanne2008", "--param", "scale=33",
                "--top", "2", "--save-trk", tmp_path / "trk")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split("\t") == ["scan_id", "scan_group", "n_streamlines", "n_labeled",
                                    "top_connections"]
    results = source.query_ijk(voxels)
    names = source.region_names()
    for line, q in zip(lines[1:], results):
        sid, group, n, n_lab, top = line.split("\t")
        assert (sid, group, int(n)) == (q.scan_id, q.scan_group, len(q))
        assert int(n) == len(brute(reference[sid], voxels))
        conn = q.connections
        assert int(n_lab) == int(np.count_nonzero(conn))
        ids, counts = np.unique(conn[conn > 0], return_counts=True)
        best = sorted(zip(-counts, ids))[:2]
        a, b = source.decode([c for _, c in best], scan=sid)
        want = [f"{names[x]} -- {names[y]}: {-k}" for (k, _), x, y in zip(best, a, b)]
        assert top.split("; ") == (want if want else [""])
        assert len(nib.streamlines.load(str(tmp_path / "trk" / f"{sid}.trk")).streamlines) \
            == len(q)
    assert len(lines) == 4
    # a mask, no atlas
    mask = np.zeros(MNI_DIM, np.uint8)
    mask[tuple(np.array(voxels).T)] = 1
    nib.Nifti1Image(mask, MNI_AFFINE).to_filename(tmp_path / "roi.nii.gz")
    proc = ltpa_main(capfd, "query", study, "--mask", tmp_path / "roi.nii.gz")
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[2] for line in proc.stdout.splitlines()[1:]] == \
        [str(len(q)) for q in results]
    # errors: exit 1 with the message, no traceback
    proc = ltpa_main(capfd, "query", study, "--ijk", "44,53,250")
    assert proc.returncode == 1 and "ltpa error:" in proc.stderr
    assert "(44, 53, 250)" in proc.stderr and "91x109x91" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = ltpa_main(capfd, "query", study, "--ijk", "44,53,25", "--atlas", "AAL")
    assert proc.returncode == 1 and "no scan has an atlas matching name='AAL'" in proc.stderr
    proc = ltpa_main(capfd, "query", study, "--ijk", "44,53")
    assert proc.returncode == 1 and "three integers" in proc.stderr
    proc = ltpa_main(capfd, "query", study)
    assert proc.returncode == 2 and "--ijk" in proc.stderr  # one of --ijk / --mask
    helptext = " ".join(ltpa_main(capfd, "query", "--help").stdout.split())
    assert "listed per scan (default: 5)" in helptext and "(0: all) (default: 0)" in helptext

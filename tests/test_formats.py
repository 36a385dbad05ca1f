"""Streamline formats: .trk.gz, .tck and .trx give the same pkl keys and labels as the .trk."""

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest
from nibabel.streamlines.trk import get_affine_trackvis_to_rasmm

from ltpa import load_track_dataset
from ltpa.errors import LtpaError
from ltpa.formats.convert import as_trk
from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
from ltpa.formats.trkwrite import write_trk
from ltpa.jobs.pipeline import index_scan, label_scan

QSDR_HDR = {"dimensions": np.array(QSDR_DIM), "voxel_sizes": np.array([2.0, 2, 2]),
            "voxel_order": b"LPS", "voxel_to_rasmm": QSDR_AFFINE}


def interior_streamlines(rng, n):
    """QSDR voxmm points whose voxel coordinate is at least 0.1 voxel from any face."""
    out = []
    for _ in range(n):
        k = int(rng.integers(2, 25))
        vox = rng.integers(0, np.array(QSDR_DIM), (k, 3)) + rng.uniform(0.1, 0.9, (k, 3))
        out.append((vox * 2.0).astype(np.float32))
    return out


@pytest.fixture
def same_streamlines(tmp_path, rng):
    sls = interior_streamlines(rng, 150)
    trk = tmp_path / "s.trk"
    write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    with open(trk, "rb") as fin, gzip.open(tmp_path / "s.trk.gz", "wb") as fout:
        shutil.copyfileobj(fin, fout)
    to_ras = get_affine_trackvis_to_rasmm(QSDR_HDR)
    ras = [nib.affines.apply_affine(to_ras, s).astype(np.float32) for s in sls]
    tg = nib.streamlines.Tractogram(ras, affine_to_rasmm=np.eye(4))
    nib.streamlines.TckFile(tg).save(str(tmp_path / "s.tck"))
    from trx.trx_file_memmap import TrxFile, save

    ref = nib.Nifti1Image(np.zeros(QSDR_DIM, np.int16), QSDR_AFFINE)
    ref.to_filename(str(tmp_path / "ref.nii.gz"))
    trx = TrxFile.from_tractogram(tg, reference=ref)
    save(trx, str(tmp_path / "s.trx"))
    trx.close()
    atlas = rng.integers(0, 6, QSDR_DIM).astype(np.int16)
    nib.Nifti1Image(atlas, QSDR_AFFINE).to_filename(str(tmp_path / "atlas.nii.gz"))
    return tmp_path


@pytest.mark.parametrize("suffix", [".trk.gz", ".tck", ".trx"])
def test_formats_match_trk(same_streamlines, suffix):
    d = same_streamlines
    results = {}
    for name in (".trk", suffix):
        index_scan(d / f"s{name}", d / f"o{name}.pkl", space="qsdr")
        label_scan(d / f"s{name}", d / "atlas.nii.gz", d / f"o{name}.npy")
        ds = load_track_dataset(d / f"o{name}.pkl")
        results[name] = ({k: ds.tracks_at_ijk[k].tolist() for k in ds.tracks_at_ijk},
                         np.load(d / f"o{name}.npy"))
    keys_trk, ids_trk = results[".trk"]
    keys_other, ids_other = results[suffix]
    assert keys_other == keys_trk and len(keys_trk) > 100
    np.testing.assert_array_equal(ids_other, ids_trk)
    assert (ids_trk > 0).sum() > 20


def test_tck_native_needs_reference(same_streamlines):
    d = same_streamlines
    with pytest.raises(LtpaError, match="scan 's1'.*field 'reference_volume' is required"):
        index_scan(d / "s.tck", d / "n.pkl", space="native", scan_id="s1")
    # with the QSDR grid as the reference, native keys are the QSDR voxels themselves
    index_scan(d / "s.tck", d / "n.pkl", space="native", reference_volume=d / "ref.nii.gz")
    index_scan(d / "s.trk", d / "n2.pkl", space="native")
    a, b = load_track_dataset(d / "n.pkl"), load_track_dataset(d / "n2.pkl")
    np.testing.assert_array_equal(a.tracks_at_ijk.voxels, b.tracks_at_ijk.voxels)
    np.testing.assert_array_equal(a.tracks_at_ijk.ids, b.tracks_at_ijk.ids)


def test_format_errors(tmp_path):
    (tmp_path / "x.vtk").write_text("nope")
    with pytest.raises(LtpaError, match="unknown streamline format"):
        with as_trk(tmp_path / "x.vtk"):
            pass
    (tmp_path / "bad.tck").write_bytes(b"not mrtrix")
    with pytest.raises(LtpaError, match="not an MRtrix .tck file"):
        index_scan(tmp_path / "bad.tck", tmp_path / "o.pkl")
    (tmp_path / "bad.trk.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(LtpaError, match="not a readable gzip file"):
        index_scan(tmp_path / "bad.trk.gz", tmp_path / "o.pkl")

"""Property-based tests (hypothesis): hashing and labeling against the slow references.

Generated: small native grids with anisotropic voxel sizes, streamlines of 0..N points
with coordinates inside, on the voxel faces, at the grid's far faces, negative and
beyond the grid; random atlases (with labels missing from the region list).
"""

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltpa import load_track_dataset
from ltpa.formats.trkwrite import write_trk
from ltpa.jobs.pipeline import index_scan, label_scan
from reference import hash_slow, label_slow, read_trk_slow

# 40 examples by default (a few seconds); LTPA_HYPOTHESIS_EXAMPLES=1000 for a longer search
SETTINGS = settings(max_examples=int(os.environ.get("LTPA_HYPOTHESIS_EXAMPLES", "40")),
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

VOXEL_SIZES = st.sampled_from([1.0, 2.0, 0.7, 1.25, 3.0, 0.1, 2.5])


@st.composite
def grids(draw):
    dim = tuple(draw(st.integers(1, 7)) for _ in range(3))
    vs = tuple(float(np.float32(draw(VOXEL_SIZES))) for _ in range(3))
    return dim, vs


def coordinate(dim, vs):
    """One voxmm coordinate per axis: anywhere, on a face, at the far face (+/- 1 ulp), outside."""
    top = np.float32(dim * vs)
    return st.one_of(
        st.floats(float(np.float32(-0.5 * top)), float(np.float32(1.5 * top)), width=32,
                  allow_nan=False),
        st.integers(-2, dim + 2).map(lambda k: float(np.float32(k * vs))),  # voxel faces
        st.sampled_from([0.0, -0.0, -1e-30, 1e-30, float(top),
                         float(np.nextafter(top, np.float32(0))),
                         float(np.nextafter(top, np.float32(1e9))), -1e6, 1e6]),
    )


@st.composite
def cases(draw, max_streamlines=25, max_points=8):
    dim, vs = draw(grids())
    point = st.tuples(*(coordinate(dim[a], vs[a]) for a in range(3)))
    sls = draw(st.lists(st.lists(point, min_size=0, max_size=max_points),
                        min_size=0, max_size=max_streamlines))
    sls = [np.asarray(s, dtype=np.float32).reshape(-1, 3) for s in sls]
    return dim, vs, sls


def write_case(folder, dim, vs, sls):
    trk = Path(folder) / "case.trk"
    write_trk(trk, sls, dim, vs, "RAS", np.diag([*vs, 1.0]))
    return trk


@SETTINGS
@given(case=cases())
def test_hashing_matches_dict_of_sets(case):
    dim, vs, sls = case
    with tempfile.TemporaryDirectory() as tmp:
        trk = write_case(tmp, dim, vs, sls)
        stats = index_scan(trk, Path(tmp) / "c.pkl", space="native", sidecar=False)
        ds = load_track_dataset(Path(tmp) / "c.pkl")
        ref_sls = read_trk_slow(trk)
    expected = hash_slow(ref_sls, vs, lambda v: v, dim)
    got = {k: ds.tracks_at_ijk[k].tolist() for k in ds.tracks_at_ijk}
    assert got == expected
    assert ds.get_ntracks() == len(sls)
    inside = sum(1 for s in ref_sls for p in s
                 if all(0 <= np.floor(float(p[a]) / vs[a]) < dim[a] for a in range(3)))
    assert stats["n_points_outside_grid"] == sum(len(s) for s in sls) - inside


@SETTINGS
@given(case=cases(), data=st.data())
def test_labeling_matches_dsi2_loop(case, data):
    dim, vs, sls = case
    n_labels = data.draw(st.integers(1, 6))
    flat = data.draw(st.lists(st.integers(0, n_labels), min_size=int(np.prod(dim)),
                              max_size=int(np.prod(dim))))
    atlas = np.asarray(flat, dtype=np.int16).reshape(dim)
    # region list: the atlas labels, maybe with some left out (-> background) or extra
    present = sorted(set(flat) - {0})
    regions = data.draw(st.one_of(
        st.just(None),
        st.lists(st.integers(1, n_labels + 2), min_size=1, max_size=8, unique=True)))
    start = data.draw(st.sampled_from([0, 1]))
    with tempfile.TemporaryDirectory() as tmp:
        trk = write_case(tmp, dim, vs, sls)
        vol = Path(tmp) / "atlas.nii.gz"
        nib.Nifti1Image(atlas, np.diag([*vs, 1.0])).to_filename(str(vol))
        kw = {}
        if regions is not None:
            tsv = Path(tmp) / "regions.tsv"
            tsv.write_text("index\tname\n" + "".join(f"{r}\tr{r}\n" for r in regions))
            kw["labels_path"] = tsv
        label_scan(trk, vol, Path(tmp) / "ids.npy", space="native", start=start, sidecar=False,
                   **kw)
        got = np.load(Path(tmp) / "ids.npy")
        ref_sls = read_trk_slow(trk)
    region_list = present if regions is None else sorted(regions)
    if not region_list:
        assert (got == 0).all()
        return
    np.testing.assert_array_equal(got, label_slow(ref_sls, atlas, vs, region_list, start))

"""No silent wrong answers (#11): geometry, field names and region lists, checked before any job.

Real files throughout: the demo's QSDR atlases saved the ways other tools save them, and
nibabel's own test data (standard.trk, standard.LPS.trk, standard.tck, standard.nii.gz).
"""

import json
import logging
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path as NIB_DATA

from conftest import BIN, ltpa_main, run_snakemake, study_folder
from ltpa.demo.small import make_demo
from ltpa.formats.grids import MNI_AFFINE, MNI_DIM, QSDR_AFFINE
from ltpa.jobs.pipeline import label_scan
from reference import label_slow, read_trk_slow

LTPA = str(BIN / "ltpa")


def validate(local_data):
    """`ltpa validate LOCAL_DATA` in this process (the same main() the command runs)."""
    return ltpa_main(None, "validate", local_data)


def edit(local_data, fn):
    data = json.loads(local_data.read_text())
    fn(data)
    local_data.write_text(json.dumps(data, indent=1))


@pytest.fixture
def study(tmp_path):
    return make_demo(tmp_path / "study", n_scans=2, seed=6, n_per_side=10, n_background=5)


# --------------------------------------------------------------------------- atlas geometry (#11.1)


@pytest.mark.slow
def test_an_atlas_saved_in_ras_order_gives_exactly_the_same_labels(tmp_path, study):
    folder = study.parent
    work = tmp_path / "work"
    run_snakemake(work, local_data=study)
    before = {s: np.load(folder / s / "scale33.npy") for s in ("s1", "s2")}
    # s1's atlas re-saved as nibabel's as_closest_canonical does (RAS voxel order, same shape)
    atlas = folder / "s1" / "s1.scale33.QSDR.nii.gz"
    img = nib.load(str(atlas))
    canonical = nib.as_closest_canonical(img)
    assert canonical.shape == img.shape and nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    assert not np.array_equal(np.asanyarray(canonical.dataobj), np.asanyarray(img.dataobj))
    canonical.to_filename(str(atlas))
    proc = run_snakemake(work, local_data=study)
    assert ("scan s1, atlas scale33: atlas reoriented: reoriented by index from RAS to LPS"
            in proc.output)
    # the atlas file changed, so s1's npy is rebuilt (to the same labels); s2's is not
    ran = [line for line in proc.output.splitlines() if "output:" in line]
    assert any(str(folder / "s1" / "scale33.npy") in line for line in ran), proc.output
    assert not any(str(folder / "s2" / "scale33.npy") in line for line in ran), proc.output
    for s in ("s1", "s2"):
        np.testing.assert_array_equal(np.load(folder / s / "scale33.npy"), before[s])
    # and the end-of-run summary and ltpa status say so
    assert "ltpa summary" in proc.output and "atlas reoriented: 1 output of 1 scan" in proc.output
    status = subprocess.run([LTPA, "status", str(study)], capture_output=True, text=True)
    assert "scan s1, atlas scale33: atlas reoriented" in status.stderr


def _other_grid_atlas(study, case):
    atlas = study.parent / "s2" / "s2.scale60.QSDR.nii.gz"
    img = nib.load(str(atlas))
    data = np.asanyarray(img.dataobj)
    if case == "shifted":  # the same shape, another place: 2 mm to the side
        affine = QSDR_AFFINE.copy()
        affine[0, 3] += 2
    elif case == "zoomed":
        affine = QSDR_AFFINE @ np.diag([1.0, 1.0, 1.5, 1.0])
    else:  # an MNI152 2 mm atlas with a QSDR trk
        data = np.zeros(MNI_DIM, np.int16)
        affine = MNI_AFFINE
    nib.Nifti1Image(data, affine).to_filename(str(atlas))
    expected = (f"scan #1 ('s2'), field 'track_labels[1].volume_path': atlas file '{atlas}' has "
                f"shape")
    grid = "but the streamlines' grid is (79, 95, 69) with affine [-2 0 0 78; 0 -2 0 76; 0 0 2 -50]"
    return expected, grid


@pytest.mark.parametrize("case", ["shifted", "mni grid", "zoomed"])
def test_an_atlas_of_another_grid_is_refused_by_validate(study, case):
    expected, grid = _other_grid_atlas(study, case)
    proc = validate(study)
    assert proc.returncode == 1 and expected in proc.stderr and grid in proc.stderr, proc.stderr


@pytest.mark.slow
def test_an_atlas_of_another_grid_is_refused_before_any_job(tmp_path, study):
    """The workflow runs the same check before any job, in the dry run and in a run."""
    expected, grid = _other_grid_atlas(study, "shifted")
    # a dry run, and a run without --keep-going (the default profile sets it: see
    # test_study_checks for what it does), stop before any job
    for args in (("-n",), ("--workflow-profile", "none")):
        run = run_snakemake(tmp_path / "work", *args, local_data=study, check=False)
        assert run.returncode == 1 and expected in run.output and grid in run.output
    assert not list(study.parent.glob("s*/*.npy"))


# --------------------------------------------------------------------------- voxel order (#11.2)


def test_nibabel_standard_files_label_by_the_documented_rule(tmp_path, caplog):
    """standard.trk (RAS), standard.LPS.trk and standard.tck: the same 120 streamlines.

    The rule: a .trk point's voxel is floor(voxmm / voxel size) in the file's own voxel
    order, whose grid is given by vox_to_ras (nibabel's reading of TrackVis); the atlas is
    brought to that grid by index. A .tck point's voxel is the nearest centre of the
    reference grid. So the same streamlines get the same labels whatever the format or the
    voxel order, except where a point lies exactly on a voxel face: floor() then takes the
    voxel on the side of increasing index, which is the other physical voxel when the
    axis is flipped. These synthetic files put 240 of their 360 points on faces; moved off
    the faces, all three agree on every streamline.
    """
    rng = np.random.default_rng(3)
    ref = nib.load(os.path.join(NIB_DATA, "standard.nii.gz"))
    atlas = rng.integers(1, 6, ref.shape).astype(np.int16)
    atlas_path = tmp_path / "atlas.nii.gz"
    nib.Nifti1Image(atlas, ref.affine).to_filename(str(atlas_path))
    regions = sorted(np.unique(atlas).tolist())

    def label(path, **kw):
        """`ltpa label PATH ATLAS OUT --space native`, in-process: (labels, log text)."""
        out = tmp_path / (path.name + ".npy")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ltpa"):
            label_scan(path, atlas_path, out, space="native", reference_volume=kw.get("ref"))
        return np.load(out), caplog.text

    def by_reference(trk_path, flip_xy):
        """Independently: stored voxmm, floor, and the atlas flipped in x, y by numpy."""
        a = atlas[::-1, ::-1, :] if flip_xy else atlas
        return label_slow(read_trk_slow(trk_path), a, (1.0, 3.0, 2.0), regions)

    std = tmp_path / "standard.trk"
    lps = tmp_path / "standard.LPS.trk"
    tck = tmp_path / "standard.tck"
    for p in (std, lps, tck):
        p.write_bytes((Path(NIB_DATA) / p.name).read_bytes())
    got_ras, _ = label(std)
    got_lps, log = label(lps)
    got_tck, _ = label(tck, ref=os.path.join(NIB_DATA, "standard.nii.gz"))
    assert "reoriented by index from RAS to LPS" in log
    np.testing.assert_array_equal(got_ras, by_reference(std, False))
    np.testing.assert_array_equal(got_lps, by_reference(lps, True))
    np.testing.assert_array_equal(got_tck, got_ras)  # both grids RAS: faces break alike
    assert (got_ras != got_lps).any()  # the face points (documented), not another rule
    # the same streamlines, a quarter voxel off every face, saved by nibabel in the 3 ways
    tg = nib.streamlines.load(os.path.join(NIB_DATA, "standard.trk"))
    moved = [s + np.array([0.25, 0.75, 0.5], np.float32) for s in tg.streamlines]
    header = dict(tg.header)
    for name, order in (("m.trk", "RAS"), ("m.LPS.trk", "LPS")):
        h = dict(header, voxel_order=order.encode())
        nib.streamlines.TrkFile(nib.streamlines.Tractogram(moved, affine_to_rasmm=np.eye(4)),
                                header=h).save(str(tmp_path / name))
    nib.streamlines.TckFile(nib.streamlines.Tractogram(moved, affine_to_rasmm=np.eye(4))).save(
        str(tmp_path / "m.tck"))
    a, _ = label(tmp_path / "m.trk")
    b, _ = label(tmp_path / "m.LPS.trk")
    c, _ = label(tmp_path / "m.tck", ref=os.path.join(NIB_DATA, "standard.nii.gz"))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert (a > 0).sum() > 100


# ----------------------------------------------------------------- checked before any job (#11.3)


def test_validate_catches_what_the_dry_run_catches(tmp_path, study):
    folder = study.parent
    (folder / "s2" / "s2.trk").unlink()
    proc = validate(study)
    assert proc.returncode == 1
    assert (f"scan #1 ('s2'), field 'trk_file': file '{folder}/s2/s2.trk' does not exist "
            f"(needed to build '{folder}/s2/s2.pkl')") in proc.stderr


@pytest.mark.slow
def test_the_dry_run_catches_what_validate_catches(tmp_path, study):
    (study.parent / "s2" / "s2.trk").unlink()
    run = run_snakemake(tmp_path / "work", "-n", local_data=study, check=False)
    assert run.returncode == 1 and "s2/s2.trk' does not exist" in run.output


def test_header_facts_are_cached_by_file_identity(tmp_path, study):
    cache = study_folder(study) / "cache" / "inputs.json"
    assert validate(study).returncode == 0
    body = json.loads(cache.read_text())
    keys = set(body["facts"])
    assert any(k.startswith("streamlines:") for k in keys) and any(
        k.startswith("labels:") for k in keys)
    assert validate(study).returncode == 0
    assert set(json.loads(cache.read_text())["facts"]) == keys  # nothing read again
    atlas = study.parent / "s1" / "s1.scale33.QSDR.nii.gz"
    os.utime(atlas, ns=(1, 1))  # another version of the file: read again
    assert validate(study).returncode == 0
    assert len(set(json.loads(cache.read_text())["facts"]) - keys) == 2  # header and labels


# --------------------------------------------------------------------------- field names (#11.4)


def _typos(study):
    def typos(d):
        d[0]["trk_spce"] = "mni"
        d[1]["trk_fle"] = "s2/other.trk"
        d[1]["pkl_trk_pth"] = "s2/x.trk"
        d[0]["track_labels"][0]["graphml_pth"] = "atlases/scale60.graphml"
        d[0]["handedness"] = "left"  # unknown and not close to anything: metadata

    edit(study, typos)
    expected = [
        "scan #0 ('s1'): unknown field 'trk_spce': did you mean 'trk_space'?",
        "scan #1 ('s2'): unknown field 'trk_fle': did you mean 'trk_file'?",
        "scan #1 ('s2'): unknown field 'pkl_trk_pth': did you mean 'pkl_trk_path'?",
        "scan #0 ('s1'), track_labels[0]: unknown field 'graphml_pth': did you mean "
        "'graphml_path'?",
    ]
    return expected


def test_misspelled_fields_warn_with_a_suggestion(study):
    expected = _typos(study)
    proc = validate(study)
    assert proc.returncode == 0
    for e in expected:
        assert e in proc.stderr, proc.stderr
    assert "handedness" not in proc.stderr


@pytest.mark.slow
def test_misspelled_fields_warn_in_the_run_or_fail_when_strict(tmp_path, study):
    expected = _typos(study)
    run = run_snakemake(tmp_path / "work", local_data=study)
    assert all(e in run.output for e in expected)
    strict = run_snakemake(tmp_path / "work2", "-n", local_data=study,
                           config=["strict_fields=True"], check=False)
    assert strict.returncode == 1 and "5 problems" in strict.output
    assert "scan #0 ('s1'): unknown field 'handedness' (strict_fields is on)" in strict.output


# --------------------------------------------------------------------------- region lists (#11.5)


def write_graphml(path, ids):
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(str(i) for i in ids)
    nx.write_graphml(g, str(path))


@pytest.mark.parametrize("workflow", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["validate", "workflow"])
def test_region_lists_that_do_not_fit_their_atlas(tmp_path, study, workflow):
    folder = study.parent
    # scale60's atlas has labels 16, 17, 80, 81, 83; a list of another resolution lacks 2
    write_graphml(folder / "atlases" / "other.graphml", [16, 80, 83, 200, 201])
    edit(study, lambda d: d[1]["track_labels"][1].update(graphml_path="atlases/other.graphml"))
    proc = validate(study)
    assert proc.returncode == 0
    assert "scan s2, atlas scale60: atlas labels not in the region list (background) (2): 17, 81" \
        in proc.stderr
    assert "scan s2, atlas scale60: regions of the list not in the atlas (2)" in proc.stderr
    if workflow:
        run = run_snakemake(tmp_path / "work", local_data=study)
        assert "atlas labels not in the region list (background) (2)" in run.output
        assert "labels not in the region list (background): 1 output of 1 scan" in run.output
    # mostly unmatched: an error before any job (max_unmatched_labels, default one half)
    write_graphml(folder / "atlases" / "other.graphml", [16, 200, 201])
    proc = validate(study)
    assert proc.returncode == 1
    assert ("field 'track_labels[1].graphml_path': 4 of the 5 labels of atlas "
            f"'{folder}/s2/s2.scale60.QSDR.nii.gz' are not in the region list") in proc.stderr
    if workflow:
        loose = run_snakemake(tmp_path / "work", "-n", local_data=study,
                              config=["max_unmatched_labels=0.9"])
        assert loose.returncode == 0

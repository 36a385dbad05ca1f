"""In-place edits that keep a file's size (a lab fixing labels in its atlas, a corrected trk
coordinate) make the outputs built from it out of date; a touch that keeps the content does
not. In-process: ltpa.study.staleness is the one function the workflow and `ltpa status` call."""

import os

import nibabel as nib
import numpy as np
import pytest

from ltpa.formats.trkwrite import write_trk
from ltpa.jobs.pipeline import label_scan
from ltpa.study import sidecar, staleness
from ltpa.study.spec import JobSpec

AFFINE = np.diag([2.0, 2, 2, 1])


@pytest.fixture
def built(tmp_path, rng):
    """An uncompressed atlas (so a relabel keeps its size), a trk, and the npy built from them."""
    atlas = np.zeros((10, 10, 10), np.int16)
    atlas[1:4, 1:4, 1:4] = 5
    atlas[6:9, 6:9, 6:9] = 9
    nib.Nifti1Image(atlas, AFFINE).to_filename(str(tmp_path / "a.nii"))
    sls = [np.array([[3, 3, 3], [10, 10, 10], [15, 15, 15]], np.float32)] + [
        rng.uniform(0, 20, (5, 3)).astype(np.float32) for _ in range(200)]
    write_trk(tmp_path / "t.trk", sls, (10, 10, 10), (2, 2, 2), "RAS", AFFINE)
    out = tmp_path / "o.npy"
    label_scan(tmp_path / "t.trk", tmp_path / "a.nii", out, space="native")
    spec = JobSpec("label", str(out), {"trk_file": str(tmp_path / "t.trk"),
                                       "volume_path": str(tmp_path / "a.nii")}, space="native")
    assert staleness.judge_all([spec])[0].status == staleness.OK
    return tmp_path, spec


def _rewrite_in_place(path, edit):
    """Open the file for writing without truncating, change bytes, keep the size; the mtime
    moves forward by a second so even a coarse file system sees a new one."""
    st = os.stat(path)
    with open(path, "r+b") as fh:
        edit(fh)
    assert os.stat(path).st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_atlas_relabelled_in_place_same_size_is_out_of_date(built):
    folder, spec = built
    atlas = folder / "a.nii"
    img = nib.load(str(atlas))
    offset = int(img.dataobj.offset)
    data = np.asanyarray(img.dataobj)
    flat = int(np.ravel_multi_index((2, 2, 2), data.shape, order="F"))
    assert data[2, 2, 2] == 5

    def relabel(fh):  # voxel (2, 2, 2): region 5 -> 7, as a lab fixing a label would
        fh.seek(offset + 2 * flat)
        fh.write(np.int16(7).tobytes())

    _rewrite_in_place(atlas, relabel)
    assert np.asanyarray(nib.load(str(atlas)).dataobj)[2, 2, 2] == 7
    assert atlas.stat().st_size <= sidecar.HASH_MAX_BYTES  # the content-hash branch
    v = staleness.judge_all([spec])[0]
    assert v.status == staleness.OUT_OF_DATE
    assert v.reason == f"volume_path {str(atlas)!r} changed (modified since the output was built)"


def test_a_big_input_edited_in_place_same_size_is_out_of_date(built):
    """Inputs over HASH_MAX_BYTES have no hash: a new mtime alone must count as a change."""
    folder, spec = built
    trk = folder / "t.trk"
    # grow the trk past the hash limit first, then rebuild, so its record has no sha256
    sls = [np.full((4, 3), 1 + i % 17, np.float32) for i in range(sidecar.HASH_MAX_BYTES // 40)]
    write_trk(trk, sls, (10, 10, 10), (2, 2, 2), "RAS", AFFINE)
    assert trk.stat().st_size > sidecar.HASH_MAX_BYTES
    label_scan(trk, folder / "a.nii", spec.output, space="native")
    body, _ = sidecar.read(spec.output)
    assert "sha256" not in body["inputs"]["trk_file"]
    assert staleness.judge_all([spec])[0].status == staleness.OK

    def move_a_point(fh):  # the last coordinate of the last streamline
        fh.seek(-4, os.SEEK_END)
        fh.write(np.float32(3.5).tobytes())

    _rewrite_in_place(trk, move_a_point)
    v = staleness.judge_all([spec])[0]
    assert v.status == staleness.OUT_OF_DATE
    assert v.reason == f"trk_file {str(trk)!r} changed (modified since the output was built)"


def test_a_touched_input_with_the_same_content_is_still_up_to_date(built):
    folder, spec = built
    _rewrite_in_place(folder / "a.nii", lambda fh: None)
    assert staleness.judge_all([spec])[0].status == staleness.OK
    # and a real change of size is named with both sizes
    size = (folder / "a.nii").stat().st_size
    with open(folder / "a.nii", "ab") as fh:
        fh.write(b"\0")
    v = staleness.judge_all([spec])[0]
    assert v.status == staleness.OUT_OF_DATE
    assert f"changed (size {size} -> {size + 1} bytes)" in v.reason


def test_another_input_path_is_out_of_date_a_symlink_to_the_same_file_is_not(built):
    folder, spec = built
    other = folder / "b.nii"
    other.write_bytes((folder / "a.nii").read_bytes())  # the same bytes, another file
    os.symlink(folder / "a.nii", folder / "link.nii")

    def with_atlas(path):
        return JobSpec("label", spec.output, {**spec.inputs, "volume_path": str(path)},
                       space="native")

    v = staleness.judge_all([with_atlas(other)])[0]
    assert v.status == staleness.OUT_OF_DATE
    assert v.reason == f"volume_path was {str(folder / 'a.nii')!r}, now {str(other)!r}"
    assert v.buildable and v.missing == ()
    assert staleness.judge_all([with_atlas(folder / "link.nii")])[0].status == staleness.OK
    # ... which cannot be rebuilt while another input is gone (named, for the error)
    (folder / "t.trk").unlink()
    v = staleness.judge_all([with_atlas(other)])[0]
    assert v.status == staleness.OUT_OF_DATE and not v.buildable
    assert v.missing == (("trk_file", str(folder / "t.trk")),)



def test_an_output_replaced_by_another_file_is_out_of_date(built):
    folder, spec = built
    out = folder / "o.npy"
    np.save(out, np.arange(7))  # another output, another size, a sidecar that is not its own
    v = staleness.judge_all([spec])[0]
    assert v.status == staleness.OUT_OF_DATE and "not the one its sidecar describes" in v.reason


def test_a_changed_input_path_that_does_not_exist_cannot_be_built(built):
    folder, spec = built
    gone = folder / "gone.nii"
    v = staleness.judge_all([JobSpec("label", spec.output,
                                     {**spec.inputs, "volume_path": str(gone)},
                                     space="native")])[0]
    assert v.status == staleness.OUT_OF_DATE and not v.buildable
    assert v.missing == (("volume_path", str(gone)),) and v.built_from == str(folder / "a.nii")

"""A job's resources read its atlas's shape from the header's first bytes
(ltpa.study.resources.nifti_shape): the shape nibabel reads, for every kind of NIfTI file,
and None (nibabel then) for anything else."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from ltpa.study.resources import _voxels, nifti_shape


@pytest.mark.parametrize("kind", ["nifti1", "nifti2", "nifti1-big-endian"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("shape", [(7, 5, 3), (4, 3, 2, 6), (9, 1, 1)])
def test_the_header_shape_is_nibabels(tmp_path, kind, suffix, shape):
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    if kind == "nifti2":
        img = nib.Nifti2Image(data, np.eye(4))
    else:
        header = nib.Nifti1Header(endianness=">" if "big" in kind else "<")
        img = nib.Nifti1Image(data, np.eye(4), header=header)
    path = tmp_path / f"a{suffix}"
    nib.save(img, path)
    if "big" in kind:
        assert nib.load(path).header.endianness == ">"
    assert nifti_shape(path) == nib.load(path).shape == shape
    assert _voxels(path) == int(np.prod(shape))


def test_anything_else_is_left_to_nibabel(tmp_path):
    mgz = tmp_path / "a.mgz"
    nib.save(nib.MGHImage(np.zeros((4, 5, 6), np.int32), np.eye(4)), mgz)
    assert nifti_shape(mgz) is None and _voxels(mgz) == 120  # nibabel reads it
    text = tmp_path / "t.nii"
    text.write_text("not an image")
    short = tmp_path / "s.nii.gz"
    short.write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + b"\x00" * 20))  # 348, then nothing
    bad_gz = tmp_path / "b.nii.gz"
    bad_gz.write_bytes(b"\x1f\x8b not gzip")
    for p in (text, short, bad_gz):
        assert nifti_shape(p) is None and _voxels(p) == 0, p
    assert nifti_shape(tmp_path / "missing.nii") is None and _voxels(tmp_path / "none") == 0

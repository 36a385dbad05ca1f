"""The kinds of error a caller can tell apart, raised by real files (each still an LtpaError
whose message names the file)."""

import pickle

import numpy as np
import pytest

from ltpa import LtpaError, load_track_dataset
from ltpa.errors import (
    DamagedFileError,
    GeometryError,
    InputError,
    RefusedPickleError,
    StaleOutputError,
)
from ltpa.formats.convert import read_trk
from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
from ltpa.formats.trkwrite import write_trk
from ltpa.jobs.pipeline import index_scan, label_scan
from ltpa.study.localdata import load_local_data

KINDS = (InputError, GeometryError, DamagedFileError, StaleOutputError)


def _trk(path, dim=QSDR_DIM, voxel_size=(2.0, 2.0, 2.0)):
    sls = [np.array([[50.0, 60.0, 40.0], [52.0, 61.0, 41.0]], np.float32)] * 3
    write_trk(path, sls, dim, voxel_size, "LPS", QSDR_AFFINE)
    return path


def _only(exc, kind):
    assert isinstance(exc, LtpaError)
    assert [k for k in KINDS if isinstance(exc, k)] == [kind]


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist") as info:
        read_trk(tmp_path / "nope.trk")
    _only(info.value, InputError)


def test_truncated_trk_is_damaged_file(tmp_path):
    path = _trk(tmp_path / "t.trk")
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(DamagedFileError, match="t.trk") as info:
        read_trk(path)
    _only(info.value, DamagedFileError)


def test_grid_not_the_declared_space_is_geometry_error(tmp_path):
    path = _trk(tmp_path / "g.trk", dim=(10, 10, 10), voxel_size=(1.0, 1.0, 1.0))
    with pytest.raises(GeometryError, match="qsdr") as info:
        index_scan(path, tmp_path / "g.pkl", space="qsdr", scan_id="s1")
    _only(info.value, GeometryError)
    assert "s1" in str(info.value)  # the job runner's context keeps the kind
    assert not (tmp_path / "g.pkl").exists()


def test_pickle_naming_other_code_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(print))
    with pytest.raises(RefusedPickleError, match="evil.pkl") as info:
        load_track_dataset(path)
    _only(info.value, DamagedFileError)  # a refused pickle is a damaged file to a caller


@pytest.mark.filterwarnings("ignore:.*is out of date")
def test_npy_of_another_trk_is_stale_output(demo_study):
    from ltpa import TrackDataSource

    scans = load_local_data(demo_study)
    for rec in scans:
        index_scan(rec.trk_file, rec.pkl_path, scan_id=rec.scan_id)
        for lb in rec.labels:
            label_scan(rec.trk_file, lb.volume_path, lb.numpy_path, graphml_path=lb.graphml_path)
    rec, lab = scans[0], scans[0].labels[0]
    np.save(lab.numpy_path, np.zeros(3, dtype=np.int64))  # not one id per streamline
    source = TrackDataSource(demo_study)
    source.change_atlas(lab.name, **lab.parameters)
    with pytest.raises(StaleOutputError, match="connection ids but the pkl") as info:
        source.connection_matrices()
    _only(info.value, StaleOutputError)
    assert rec.scan_id in str(info.value)


def test_in_context_keeps_the_kind():
    err = GeometryError("file 'a.trk': grid").in_context("scan 's1'")
    assert type(err) is GeometryError and str(err) == "scan 's1': file 'a.trk': grid"

"""The kinds of error a caller can tell apart, raised by real files (each still an LtpaError
whose message names the file)."""

import json
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
from ltpa.prepared.patterns import check_radius, patterns_of_dataset, read_patterns
from ltpa.study import sidecar
from ltpa.study.init import merged_spec
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


def test_termination_pattern_errors_by_kind(demo_study, tmp_path):
    rec = load_local_data(demo_study)[0]
    lab = rec.labels[0]
    index_scan(rec.trk_file, rec.pkl_path, scan_id=rec.scan_id)
    label_scan(rec.trk_file, lab.volume_path, lab.numpy_path, graphml_path=lab.graphml_path)
    with pytest.raises(InputError, match="radius 'x'") as info:
        check_radius("x")
    _only(info.value, InputError)
    with pytest.raises(InputError, match="does not exist") as info:
        read_patterns(tmp_path / "none.npz")
    _only(info.value, InputError)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(DamagedFileError, match="junk.npz") as info:
        read_patterns(junk)
    _only(info.value, DamagedFileError)
    ds = load_track_dataset(rec.pkl_path)
    conn = np.load(lab.numpy_path)
    with pytest.raises(StaleOutputError, match="must be of the same scan") as info:
        patterns_of_dataset(ds, conn[:-1], 1)  # an npy of another scan
    _only(info.value, StaleOutputError)


@pytest.mark.filterwarnings("ignore:.*is out of date")
def test_edited_sidecar_region_ids_are_a_damaged_file(demo_study):
    from ltpa import TrackDataSource

    scans = load_local_data(demo_study)
    for rec in scans:
        index_scan(rec.trk_file, rec.pkl_path, scan_id=rec.scan_id)
        lab = rec.labels[0]
        label_scan(rec.trk_file, lab.volume_path, lab.numpy_path, graphml_path=lab.graphml_path)
    lab = scans[0].labels[0]
    side = sidecar.path_of(lab.numpy_path)
    body = json.loads(side.read_text())
    body["region_ids"] = body["region_ids"][::-1]  # no longer increasing
    side.write_text(json.dumps(body))
    source = TrackDataSource(demo_study)
    source.change_atlas(lab.name, **lab.parameters)
    with pytest.raises(DamagedFileError, match="region_ids are not strictly increasing") as info:
        source.connection_id(1, 2)
    _only(info.value, DamagedFileError)
    assert scans[0].scan_id in str(info.value)


def test_init_spec_not_yaml_is_input_error(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("tracks: [\n")
    with pytest.raises(InputError, match="is not valid YAML") as info:
        merged_spec(spec)
    _only(info.value, InputError)

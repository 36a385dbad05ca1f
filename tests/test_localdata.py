"""local_data.json validation: every problem at once, each naming scan, field and expectation."""

import json

import pytest

from ltpa.errors import LtpaError
from ltpa.study.localdata import load_local_data


def write(tmp_path, data, name="local_data.json"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def problems(tmp_path, data):
    """Every problem of a study, as the workflow, validate and status report them."""
    from ltpa.study.study import load_study

    with pytest.raises(LtpaError) as err:
        load_study(write(tmp_path, data))
    return str(err.value)


def test_not_json_gives_line_and_column(tmp_path):
    msg = problems(tmp_path, '[\n {"scan_id": "a",\n  "scan_group": }\n]')
    assert "is not valid JSON" in msg and "line 3 column 17" in msg


def test_top_level_and_empty(tmp_path):
    assert "the top level is a JSON object; expected a list of scan objects" in problems(
        tmp_path, {"scan_id": "a"})
    assert "the list of scans is empty" in problems(tmp_path, [])


def test_all_problems_reported_at_once(tmp_path):
    data = [
        {"scan_id": "a", "scan_group": "g", "trk_space": "talairach"},
        {"scan_group": "g"},
        {"scan_id": "c", "scan_group": 3, "track_labels": [{"numpy_path": 5}]},
        {"scan_id": "d", "scan_group": "g", "attributes": []},
    ]
    msg = problems(tmp_path, data)
    assert "5 problems" in msg
    assert ("scan #0 ('a'), field 'trk_space': is \"talairach\"; expected one of \"qsdr\", "
            "\"mni\", \"native\"") in msg
    assert "scan #1 (None), field 'scan_id': is required" in msg
    assert "scan #2 ('c'), field 'scan_group': is 3; expected a string" in msg
    assert ("scan #2 ('c'), field 'track_labels[0].numpy_path': is 5; expected a string or "
            "null") in msg
    assert "scan #3 ('d'), field 'attributes': is []; expected an object" in msg


def test_duplicates_and_shared_outputs(tmp_path):
    data = [
        {"scan_id": "a", "scan_group": "g", "pkl_path": "out/a.pkl"},
        {"scan_id": "a", "scan_group": "g"},
        {"scan_id": "b", "scan_group": "g", "pkl_path": "out/a.pkl",
         "track_labels": [{"numpy_path": "x.npy"}]},
    ]
    msg = problems(tmp_path, data)
    assert "scan #1 ('a'), field 'scan_id': duplicate of scan #0" in msg
    assert ("scan #2 ('b'), field 'pkl_path' " in msg
            and "is also written as scan #0 ('a'), field 'pkl_path'" in msg), msg
    assert ("scan #2 ('b'), field 'track_labels[0].volume_path': is required: to build "
            "numpy_path") in msg


def test_paths_resolve_against_json_folder_or_data_root(tmp_path):
    data = [{"scan_id": "a", "scan_group": "g", "trk_file": "a/a.trk", "pkl_path": "/abs/a.pkl",
             "track_labels": [{"numpy_path": "a/x.npy", "volume_path": "a/x.nii.gz"}],
             "extra_field": {"kept": True}}]
    p = write(tmp_path, data)
    (rec,) = load_local_data(p)
    assert rec.trk_file == tmp_path / "a" / "a.trk"
    assert str(rec.pkl_path) == "/abs/a.pkl"
    assert rec.labels[0].volume_path == tmp_path / "a" / "x.nii.gz"
    assert rec.metadata["extra_field"] == {"kept": True} and rec.space == "qsdr"
    (rec,) = load_local_data(p, data_root=tmp_path / "elsewhere")
    assert rec.trk_file == tmp_path / "elsewhere" / "a" / "a.trk"

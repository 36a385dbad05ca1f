"""Checks before any job (#19): one listing of every problem, outputs that may not overwrite,
the header cache, sidecars and caches that are special files or tampered with, names.

In process: each test calls ``ltpa.study.study.load_study`` (what the workflow, ``ltpa validate``
and ``ltpa status`` call) on a real demo study.
"""

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from ltpa.demo.small import make_demo
from ltpa.errors import LtpaError
from ltpa.study.config import with_defaults
from ltpa.study.study import load_study


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory):
    """The demo study as ``make_demo`` writes it (inputs only, relative paths), made once."""
    return make_demo(tmp_path_factory.mktemp("demo") / "study", n_scans=3, seed=2, n_per_side=8,
                     n_background=4)


@pytest.fixture
def study(tmp_path, demo_inputs):
    """A fresh copy of ``demo_inputs`` for this test: new files (new inodes, fresh mtimes), no
    output, no cache."""
    shutil.copytree(demo_inputs.parent, tmp_path / "study", copy_function=shutil.copyfile)
    return tmp_path / "study" / demo_inputs.name


def edit(local_data, fn):
    data = json.loads(Path(local_data).read_text())
    fn(data)
    Path(local_data).write_text(json.dumps(data, indent=1))


def problems_of(local_data, **config):
    with pytest.raises(LtpaError) as err:
        load_study(local_data, config)
    return str(err.value)


def truncate(path, n_bytes=1):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:-n_bytes])


# --------------------------------------------------------------------------- 2: required


def test_a_misspelt_trk_file_is_required_naming_scan_field_and_hint(study):
    def misspell(d):
        d[1]["trk_fiel"] = d[1].pop("trk_file")

    edit(study, misspell)
    text = problems_of(study)
    assert "scan #1 ('s2'), field 'trk_file': is required: to build pkl_path" in text
    assert "scan #1 ('s2'): unknown field 'trk_fiel': did you mean 'trk_file'?" in text
    # the hint comes right after its scan's problem
    lines = text.splitlines()
    at = [i for i, x in enumerate(lines) if "field 'trk_file': is required" in x][0]
    assert "did you mean 'trk_file'" in lines[at + 1]


def test_a_scalar_without_txt_path_is_required(study):
    edit(study, lambda d: d[0].update(track_scalars=[{"name": "fa", "numpy_path": "s1/fa.npy"}]))
    text = problems_of(study)
    assert "scan #0 ('s1'), field 'track_scalars[0].txt_path': is required" in text


# --------------------------------------------------------------------------- 4: one listing


def test_every_problem_of_every_stage_is_in_one_listing(study):
    folder = study.parent

    def damage(d):
        d[0]["trk_spce"] = d[0].pop("trk_space")  # a hint only
        d[0]["track_labels"][0]["volum_path"] = d[0]["track_labels"][0].pop("volume_path")
        d[1]["scan_grup"] = d[1].pop("scan_group")  # a schema error and its hint

    edit(study, damage)
    truncate(folder / "s3" / "s3.trk", 3)  # a header-level problem of another scan
    text = problems_of(study)
    assert "scan #0 ('s1'), field 'track_labels[0].volume_path': is required" in text
    assert "unknown field 'volum_path': did you mean 'volume_path'?" in text
    assert "scan #0 ('s1'): unknown field 'trk_spce': did you mean 'trk_space'?" in text
    assert "scan #1 ('s2'), field 'scan_group': is required" in text
    assert "unknown field 'scan_grup': did you mean 'scan_group'?" in text
    assert "scan #2 ('s3'), field 'trk_file'" in text and "s3.trk" in text
    head = text.splitlines()[0]
    assert head.endswith(f"{len(text.splitlines()) - 1} problems:")


def test_a_field_problem_of_one_atlas_does_not_hide_its_scans_header_problems(study):
    """A misspelt volume_path of one atlas and a truncated trk of the same scan: both in
    the first listing (the trk is read for the scan's pkl and its other atlas); a problem
    of the grid's own fields (trk_space) is not repeated as a header problem."""
    folder = study.parent

    def damage(d):
        d[1]["track_labels"][0]["volum_path"] = d[1]["track_labels"][0].pop("volume_path")
        d[1]["scan_group"] = 7  # a field that says nothing of the headers
        d[2]["trk_space"] = "tal"

    edit(study, damage)
    truncate(folder / "s2" / "s2.trk", 3)
    truncate(folder / "s3" / "s3.trk", 3)
    text = problems_of(study)
    assert "scan #1 ('s2'), field 'track_labels[0].volume_path': is required" in text
    assert "scan #1 ('s2'), field 'trk_file'" in text and "s2.trk" in text
    assert "scan #2 ('s3'), field 'trk_space'" in text
    assert "scan #2 ('s3'), field 'trk_file'" not in text


def test_hints_alone_stay_warnings(study):
    edit(study, lambda d: d[0].update(trk_spce="qsdr"))
    s = load_study(study, {})
    assert any("did you mean 'trk_space'" in w for w in s.warnings)


# --------------------------------------------------------------------------- 1: keep going


def test_keep_going_leaves_out_the_scans_with_problems_and_keeps_the_others(study):
    folder = study.parent
    truncate(folder / "s2" / "s2.trk", 3)
    edit(study, lambda d: d[2]["track_labels"][0].update(volume_path="s3/nothing.nii.gz"))
    edit(study, lambda d: d[0].update(trk_spce="qsdr"))  # a hint for a scan that is fine
    with pytest.raises(LtpaError):
        load_study(study, {})
    s = load_study(study, {}, keep_going=True)
    assert [x.scan_id for x in s.scans] == ["s1"]
    assert {t.scan.scan_id for t in s.targets} == {"s1"}
    assert len(s.verdicts) == len(s.targets)
    assert set(s.left_out) == {"s2", "s3"}
    assert any("s2.trk" in p for p in s.left_out["s2"])
    assert any("nothing.nii.gz" in p for p in s.left_out["s3"])
    assert not any("trk_spce" in p for ps in s.left_out.values() for p in ps)
    assert any("did you mean 'trk_space'" in w for w in s.warnings)


def test_keep_going_stops_on_the_jsons_own_problems_and_when_no_scan_is_left(study):
    edit(study, lambda d: d[1].update(trk_fiel="x"))  # a hint: fine
    edit(study, lambda d: d.append(5))  # a problem of the JSON itself: fix the JSON
    with pytest.raises(LtpaError, match="scan #3"):
        load_study(study, {}, keep_going=True)
    edit(study, lambda d: d.pop())
    truncate(study.parent / "s1" / "s1.trk", 3)
    edit(study, lambda d: [x.update(trk_file="s1/s1.trk") for x in d[:3]])
    with pytest.raises(LtpaError, match="every scan has a problem"):
        load_study(study, {}, keep_going=True)


# --------------------------------------------------------------------------- 5: overwrites


@pytest.mark.parametrize("where", ["qc/s1.npy", "cache/inputs.json", "logs/x.pkl",
                                   "provenance/a.npy", "report/s1.npy"])
def test_outputs_inside_the_study_folder_are_refused(study, where):
    path = str(study.parent / "local_data.ltpa" / where)
    fld = "pkl_path" if where.endswith(".pkl") else None

    def put(d):
        if fld:
            d[0]["pkl_path"] = path
        else:
            d[0]["track_labels"][0]["numpy_path"] = path

    edit(study, put)
    text = problems_of(study)
    assert "scan #0 ('s1')" in text and "is inside the study's own folder" in text
    assert repr(path) in text


def test_a_file_of_another_format_at_an_output_path_is_refused_unless_forced(study, tmp_path):
    folder = study.parent
    other = tmp_path / "other_study"
    other.mkdir()
    (other / "local_data.json").write_text('[{"scan_id": "x", "scan_group": "g"}]\n')
    foreign = other / "keep.npy"
    shutil.copy(other / "local_data.json", foreign)
    trk_as_pkl = folder / "s1" / "old.pkl"
    shutil.copy(folder / "s1" / "s1.trk", trk_as_pkl)

    def point(d):
        d[0]["track_labels"][0]["numpy_path"] = str(foreign)
        d[0]["pkl_path"] = "s1/old.pkl"

    edit(study, point)
    before = foreign.read_bytes(), trk_as_pkl.read_bytes()
    text = problems_of(study)
    assert (f"scan #0 ('s1'), field 'track_labels[0].numpy_path' {str(foreign)!r}: the existing "
            f"file there is a JSON file, not this output's format; refusing to replace it") in text
    assert "field 'pkl_path'" in text and "is a TrackVis .trk" in text
    assert "overwrite_foreign: true" in text
    assert (foreign.read_bytes(), trk_as_pkl.read_bytes()) == before
    s = load_study(study, {"overwrite_foreign": True})
    assert str(foreign) in {str(t.output) for t in s.targets}


def test_a_pattern_file_path_holding_another_format_is_refused(study):
    """Termination-pattern targets (config patterns) are outputs like the others: a JSON at
    their path is refused, an .npz (their own format, a zip) is replaced."""
    config = {"patterns": {"radii": [1], "atlases": [
        {"name": "Lausanne2008", "parameters": {"scale": 33}}]}}
    s = load_study(study, config)
    target = next(str(t.output) for t in s.targets if str(t.output).endswith(".npz"))
    Path(target).write_text('{"not": "patterns"}\n')
    text = problems_of(study, **config)
    assert f"{target!r}: the existing file there is a JSON file" in text
    assert Path(target).read_text() == '{"not": "patterns"}\n'
    np.savez(target, x=np.arange(3))
    s = load_study(study, config)
    v = {str(t.output): v for t, v in zip(s.targets, s.verdicts)}[target]
    assert v.status == "out of date" and "has no sidecar" in v.reason


def test_an_output_of_its_own_format_without_sidecar_is_rebuilt_and_says_so(study):
    folder = study.parent
    np.save(folder / "s1" / "scale33.npy", np.arange(5))  # e.g. made by dsi2
    import pickle

    (folder / "s1" / "s1.pkl").write_bytes(pickle.dumps({"dsi2": 1}, protocol=2))
    s = load_study(study, {})
    by_out = {str(t.output): v for t, v in zip(s.targets, s.verdicts)}
    for name in ("scale33.npy", "s1.pkl"):
        v = by_out[str(folder / "s1" / name)]
        assert v.status == "out of date"
        assert "has no sidecar" in v.reason and "rebuilt" in v.reason


# --------------------------------------------------------------------------- 8: names


def test_a_scan_id_with_braces_is_refused_before_any_job(study):
    edit(study, lambda d: d[1].update(scan_id="s{x}"))
    text = problems_of(study)
    assert "scan #1 ('s{x}'), field 'scan_id': 's{x}' contains a brace" in text


def test_output_names_too_long_for_the_temp_and_sidecar_files_are_refused(study):
    name = "n" * 236 + ".npy"  # 240 bytes: a file system takes it, its sidecar's temp not
    edit(study, lambda d: d[2]["track_labels"][1].update(numpy_path=f"s3/{name}"))
    text = problems_of(study)
    assert "scan #2 ('s3'), field 'track_labels[1].numpy_path'" in text
    assert "its file name is 240 bytes" in text
    ok = "n" * 227 + ".npy"  # the longest name the workflow can write with its temp files
    edit(study, lambda d: d[2]["track_labels"][1].update(numpy_path=f"s3/{ok}"))
    load_study(study, {})
    from ltpa.io import atomic_path
    from ltpa.study.sidecar import path_of

    with atomic_path(path_of(study.parent / "s3" / ok)) as tmp:  # the longest temp name
        tmp.write_text("{}")
    assert path_of(study.parent / "s3" / ok).exists()
    longer = "n" * 228 + ".npy"
    with pytest.raises(LtpaError, match="File name too long"):
        with atomic_path(path_of(study.parent / "s3" / longer)) as tmp:
            tmp.write_text("{}")


# --------------------------------------------------------------------------- 6: input cache


def test_a_read_error_is_not_cached(study):
    """An atlas that cannot be read (chmod 000) is a problem; once readable again it is
    read, not reported from the cache. Root reads any file: as root the first check runs
    in a process without the capabilities that override file permissions (setpriv)."""
    import subprocess

    from conftest import BIN

    atlas = study.parent / "s2" / "s2.scale33.QSDR.nii.gz"
    validate = [str(BIN / "ltpa"), "validate", str(study)]
    if os.geteuid() == 0:
        caps = "-dac_override,-dac_read_search"
        validate = [shutil.which("setpriv") or "setpriv", f"--inh-caps={caps}",
                    f"--bounding-set={caps}", *validate]
    os.chmod(atlas, 0)
    try:
        proc = subprocess.run(validate, capture_output=True, text=True, timeout=300)
    finally:
        os.chmod(atlas, 0o644)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "s2.scale33.QSDR.nii.gz" in proc.stderr and "could not be read" in proc.stderr
    load_study(study, {})  # fixed: no stale error from the cache


def test_a_failed_read_is_not_cached_whoever_runs_the_test(study, tmp_path):
    """The chmod test above as root: a read that fails once (an NFS hiccup), then works."""
    from ltpa.study.headers import InputFacts, _nifti_header

    atlas = study.parent / "s2" / "s2.scale33.QSDR.nii.gz"
    calls = []

    def hiccup_then_read(path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        return _nifti_header(path)

    cache = tmp_path / "inputs.json"
    facts = InputFacts(cache)
    with pytest.raises(LtpaError, match="Input/output error"):
        facts._get("nifti", atlas, hiccup_then_read)
    facts.save()
    again = InputFacts(cache)
    assert again._get("nifti", atlas, hiccup_then_read)["shape"] == [79, 95, 69]
    again.save()
    assert InputFacts(cache)._get("nifti", atlas, hiccup_then_read)["shape"] == [79, 95, 69]
    assert len(calls) == 2  # the good read was cached


def test_a_refused_header_is_read_again_not_cached(study):
    trk = study.parent / "s2" / "s2.trk"
    good = trk.read_bytes()
    truncate(trk, 3)
    problems_of(study)
    cache = study.parent / "local_data.ltpa" / "cache" / "inputs.json"
    if cache.exists():
        assert "error" not in cache.read_text()
    trk.write_bytes(good)
    load_study(study, {})


@pytest.mark.parametrize("garbage", [
    lambda facts: {k: {"ok": "garbage"} for k in facts},
    lambda facts: {k: [] for k in facts},
    lambda facts: {k: {"ok": {"shape": "x", "affine": 5}} for k in facts},
    lambda facts: {k: {"ok": {"kind": ".trk", "dim": [1, 2]}} for k in facts},
    lambda facts: {k: {"ok": [1.5, "a"]} for k in facts},
    lambda facts: {k: {"error": "stale error"} for k in facts},
    lambda facts: [],
])
def test_malformed_input_cache_entries_are_dropped_and_read_again(study, garbage):
    load_study(study, {})
    cache = study.parent / "local_data.ltpa" / "cache" / "inputs.json"
    body = json.loads(cache.read_text())
    facts = body["facts"]
    assert facts
    bad = garbage(facts)
    cache.write_text(json.dumps({"version": body["version"], "facts": bad}))
    s = load_study(study, {})
    assert not s.problems
    reread = json.loads(cache.read_text())["facts"]
    assert reread == facts


# --------------------------------------------------------------------------- 7: special files


def _with_timeout(fn, seconds=20):
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (blocked on a special file?)"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def test_fifos_at_the_cache_and_sidecar_paths_neither_hang_nor_fail(study):
    cache = study.parent / "local_data.ltpa" / "cache"
    cache.mkdir(parents=True)
    for name in ("inputs.json", "schema.json", "outputs.json"):
        os.mkfifo(cache / name)
    os.mkfifo(study.parent / "s1" / "scale33.npy.json")
    np.save(study.parent / "s1" / "scale33.npy", np.arange(3))
    s = _with_timeout(lambda: load_study(study, {}))
    v = {str(t.output): v for t, v in zip(s.targets, s.verdicts)}
    assert "not a regular file" in v[str(study.parent / "s1" / "scale33.npy")].reason


def test_dev_zero_at_a_sidecar_path_is_refused_without_reading_it(study):
    from ltpa.study import sidecar

    out = study.parent / "s1" / "scale33.npy"
    np.save(out, np.arange(3))
    os.symlink("/dev/zero", sidecar.path_of(out))
    body, why = _with_timeout(lambda: sidecar.read(out))
    assert body is None and "not a regular file" in why


def test_sidecar_region_ids_beyond_int64_make_the_sidecar_invalid(tmp_path):
    from ltpa.study import sidecar

    out = tmp_path / "x.npy"
    np.save(out, np.arange(3))
    sidecar.write(out, "connection_ids", inputs={}, params={}, region_ids=[1, 2, 3],
                  connection_ids_start_at=1)
    assert sidecar.read(out)[0] is not None
    body = json.loads(sidecar.path_of(out).read_text())
    body["region_ids"] = [1, 2, 2**70]
    sidecar.path_of(out).write_text(json.dumps(body))
    got, why = sidecar.read(out)
    assert got is None and "region_ids" in why


def test_config_defaults_know_overwrite_foreign():
    assert with_defaults({})["overwrite_foreign"] is False


# --------------------------------------------------------------------------- 7: tampering


@pytest.fixture
def built(study):
    """The demo study with every output built in process (the jobs' own function)."""
    from ltpa.jobs.pipeline import run

    s = load_study(study, {})
    for spec in s.specs.values():
        run(spec)
    return study


def verdict_of(local_data, output):
    s = load_study(local_data, {}, strict=False)
    return {str(t.output): v for t, v in zip(s.targets, s.verdicts)}[str(output)]


def test_an_in_place_edit_of_an_output_with_a_fresh_mtime_is_out_of_date(built):
    npy = built.parent / "s2" / "scale33.npy"
    assert verdict_of(built, npy).status == "ok"
    st = os.stat(npy)
    data = bytearray(npy.read_bytes())
    data[len(data) // 2] ^= 1  # one connection id changed
    npy.write_bytes(bytes(data))  # same size, fresh mtime (within Snakemake's touch window)
    assert os.stat(npy).st_size == st.st_size
    v = verdict_of(built, npy)
    assert v.status == "out of date" and "not the one its sidecar describes" in v.reason
    # touched only (as Snakemake does after a job): still the output its sidecar describes
    pkl = built.parent / "s1" / "s1.pkl"
    os.utime(pkl, ns=(st.st_atime_ns, os.stat(pkl).st_mtime_ns + 10**9))
    assert verdict_of(built, pkl).status == "ok"
    cache = json.loads((built.parent / "local_data.ltpa" / "cache" / "outputs.json").read_text())
    # hashed: the two outputs whose mtime moved; the others are judged by their mtime
    assert len(cache["sha256"]) == 2


def test_sidecar_region_ids_edited_in_range_are_an_error_when_read(built):
    from ltpa.analysis.reader import TrackDataSource
    from ltpa.study import sidecar

    npy = built.parent / "s1" / "scale33.npy"
    src = TrackDataSource(built)
    src.change_atlas("Lausanne2008", scale=33)
    before = src.decode([1, 2, 3], scan=0)
    body = json.loads(sidecar.path_of(npy).read_text())
    ids = body["region_ids"]
    body["region_ids"] = [ids[1], ids[0]] + ids[2:]  # not sorted: a clumsy edit
    sidecar.path_of(npy).write_text(json.dumps(body))
    src = TrackDataSource(built)
    src.change_atlas("Lausanne2008", scale=33)
    with pytest.raises(LtpaError, match="not strictly increasing"):
        src.decode([1], scan=0)
    body["region_ids"] = ids[:-1] + [ids[-1] + 1]  # sorted, in range, another region
    sidecar.path_of(npy).write_text(json.dumps(body))
    src = TrackDataSource(built)
    src.change_atlas("Lausanne2008", scale=33)
    with pytest.raises(LtpaError, match=r"scan #0 \('s1'\).*region_ids .* differ from the region "
                                        r"list graphml_path"):
        src.decode([1, 2, 3], scan=0)
    body["region_ids"] = ids
    sidecar.path_of(npy).write_text(json.dumps(body))
    src = TrackDataSource(built)
    src.change_atlas("Lausanne2008", scale=33)
    assert repr(src.decode([1, 2, 3], scan=0)) == repr(before)


# --------------------------------------------------------------------------- 18: native queries


@pytest.fixture
def mixed_orders(tmp_path):
    """Two scans of the same streamlines in native space: one trk in RAS voxel order, one in
    LPS (x and y axes flipped), with their pkls; and the RAS grid's affine."""
    from ltpa.demo.small import make_streamlines
    from ltpa.formats.grids import QSDR_DIM
    from ltpa.formats.trkwrite import write_trk
    from ltpa.jobs.pipeline import run

    rng = np.random.default_rng(7)
    streamlines, _ = make_streamlines(rng, 20, 10)
    dim, vs = np.array(QSDR_DIM), 2.0
    ras = np.diag([vs, vs, vs, 1.0])
    ras[:3, 3] = [-78.0, -112.0, -50.0]
    flip = np.array([[-1, 0, 0, dim[0] - 1], [0, -1, 0, dim[1] - 1], [0, 0, 1, 0],
                     [0, 0, 0, 1]], dtype=float)
    lps = ras @ flip
    # the same physical points in the LPS grid's voxmm: x -> D0 vs - x, y -> D1 vs - y
    flipped = [np.column_stack([dim[0] * vs - s[:, 0], dim[1] * vs - s[:, 1], s[:, 2]])
               .astype(np.float32) for s in streamlines]
    folder = tmp_path / "native"
    folder.mkdir()
    entries = []
    for sid, order, affine, sls in (("ras", "RAS", ras, streamlines),
                                    ("lps", "LPS", lps, flipped)):
        trk = folder / f"{sid}.trk"
        write_trk(trk, sls, tuple(dim), (vs, vs, vs), order, affine)
        entries.append({"scan_id": sid, "scan_group": "g", "trk_space": "native",
                        "trk_file": f"{sid}.trk", "pkl_path": f"{sid}.pkl"})
    (folder / "local_data.json").write_text(json.dumps(entries))
    for spec in load_study(folder / "local_data.json", {}).specs.values():
        run(spec)
    return folder / "local_data.json", ras, streamlines


def test_a_mask_in_any_voxel_order_selects_the_same_streamlines_in_every_scan(mixed_orders,
                                                                              tmp_path):
    import nibabel as nib

    from ltpa.analysis.reader import TrackDataSource
    from ltpa.formats.grids import QSDR_DIM

    local_data, ras, streamlines = mixed_orders
    mask = np.zeros(QSDR_DIM, np.uint8)
    mask[50:70, 10:80, 5:60] = 1
    # slow reference: the streamlines with a point in the box, from their RAS voxmm
    expected = [i for i, s in enumerate(streamlines)
                if (mask[tuple(np.floor(s / 2.0).astype(int).T)] != 0).any()]
    assert 0 < len(expected) < len(streamlines)
    source = TrackDataSource(local_data)
    for name, affine, data in (("ras", ras, mask),
                               ("lps", ras @ np.array([[-1, 0, 0, QSDR_DIM[0] - 1],
                                                       [0, -1, 0, QSDR_DIM[1] - 1],
                                                       [0, 0, 1, 0], [0, 0, 0, 1]]),
                                mask[::-1, ::-1, :])):
        path = tmp_path / f"mask_{name}.nii.gz"
        nib.Nifti1Image(np.ascontiguousarray(data), affine).to_filename(str(path))
        results = source.query_ijk(str(path))
        assert [q.ids.tolist() for q in results] == [expected, expected], name
    # the same places as points in mm: the voxel centres of the mask
    centres = np.argwhere(mask)[::97] @ ras[:3, :3].T + ras[:3, 3]
    by_mm = source.query_mm(centres)
    assert by_mm[0].ids.tolist() == by_mm[1].ids.tolist()
    # voxels mean different places in the two scans: refused, saying why
    with pytest.raises(LtpaError, match=r"different voxel orders \(RAS: scan 'ras'; LPS: scan "
                                        r"'lps'\).*--mm"):
        source.query_ijk([(40, 40, 20)])


def test_the_query_command_takes_mm_and_refuses_ijk_on_mixed_orders(mixed_orders, capsys):
    from ltpa.cli import main

    local_data, ras, streamlines = mixed_orders
    s = streamlines[0]
    voxel = np.floor(s[len(s) // 2] / 2.0).astype(int)  # a voxel the first streamline crosses
    assert main(["query", str(local_data), "--ijk", ",".join(map(str, voxel))]) == 1
    assert "different voxel orders" in capsys.readouterr().err
    x, y, z = ras[:3, :3] @ voxel + ras[:3, 3]
    assert main(["query", str(local_data), f"--mm={x},{y},{z}", "--mm", "1,2,3"]) == 0
    rows = [r.split("\t") for r in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows[1:]] == ["ras", "lps"] and rows[1][1:] == rows[2][1:]
    assert int(rows[1][rows[0].index("n_streamlines")]) > 0, rows


def test_an_edited_region_list_in_an_npy_sidecar_stops_its_patterns(built, tmp_path):
    """The patterns job records the npy's region ids in its file: an edited sidecar is the
    same clear error there as in the reader, not a silently wrong decoding later."""
    from ltpa.jobs.pipeline import write_patterns
    from ltpa.study import sidecar

    npy = built.parent / "s1" / "scale33.npy"
    pkl = built.parent / "s1" / "s1.pkl"
    body = json.loads(sidecar.path_of(npy).read_text())
    ids = body["region_ids"]
    body["region_ids"] = ids[:-1] + [ids[-1] + 1]
    sidecar.path_of(npy).write_text(json.dumps(body))
    out = tmp_path / "p.npz"
    with pytest.raises(LtpaError, match="differ from the region list graphml_path"):
        write_patterns(pkl, npy, out, 1)
    assert not out.exists()
    body["region_ids"] = ids
    sidecar.path_of(npy).write_text(json.dumps(body))
    write_patterns(pkl, npy, out, 1)
    from ltpa.prepared.patterns import read_patterns

    assert read_patterns(out).meta["region_ids"] == ids


@pytest.mark.slow  # a 3-second fuzz budget per format; the hand-made cases above stay fast
@pytest.mark.parametrize("fmt", ["cache", "sidecar"])
def test_bounded_fuzz_of_the_input_cache_and_the_sidecars_finds_nothing(fmt):
    """benchmarks/fuzz.py --format cache|sidecar (items 6 and 7): mutated header caches and
    output sidecars, read by the study's own readers and judged: no crash, no wrong
    verdict (a malformed cache entry kept, a changed sidecar judged up to date)."""
    import subprocess

    from conftest import BIN, REPO

    proc = subprocess.run([str(BIN / "python"), str(REPO / "benchmarks" / "fuzz.py"),
                           "--format", fmt, "--seconds", "3", "--seed", "5", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout[proc.stdout.index("{"):])["results"][0]
    assert res["crash"] == 0 and res["wrong"] == 0, res["distinct"]
    assert res["inputs"] > 50 and res["equal"] > 0, res

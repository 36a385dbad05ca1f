"""ltpa init: a BIDS-derivatives tree made from the demo's files becomes a study that validates,
builds the same npys as the demo's own JSON, grows by exactly the new scans, and refuses (or,
with --allow-missing, leaves out) scans with a problem, naming the file and the subject."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from bids_study import (
    PARTICIPANTS,
    SPEC,
    TRACKS,
    add_session,
    make_bids_tree,
    make_demo_source,
    write_participants,
)
from conftest import BIN, ltpa_main, run_snakemake
from ltpa.errors import LtpaError
from ltpa.formats.regions import region_names, regions_from_graphml, regions_from_table
from ltpa.study.init import check_spec, init_study, merged_spec, scan_id_of


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_source(tmp_path_factory.mktemp("demo") / "demo").parent


@pytest.fixture
def tree(tmp_path, demo):
    """(ROOT, spec file, JSON to write), in folders whose names have spaces."""
    root = make_bids_tree(tmp_path / "bids derivatives", demo)
    spec = tmp_path / "init.yaml"
    spec.write_text(SPEC)
    (tmp_path / "my study").mkdir()
    return root, spec, tmp_path / "my study" / "local_data.json"


def ltpa(*args, cwd=None):
    """The real ``ltpa`` command (the slow test, and one ``ltpa init`` of the fast ones); the
    other fast tests run ``ltpa.cli.main`` in process (``ltpa_main``)."""
    return subprocess.run([str(BIN / "ltpa"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def init(root, spec, out, **kw):
    return init_study(root, merged_spec(spec), out, **kw)


# --------------------------------------------------------------------------- the study


@pytest.mark.slow
def test_init_gives_a_study_that_validates_and_builds_the_demos_npys(tree, demo):
    root, spec, out = tree
    proc = ltpa("init", root, "--spec", spec, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "3 added, 0 unchanged, 0 gone" in proc.stdout
    proc = ltpa("validate", out)
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(out.read_text())
    assert [e["scan_id"] for e in entries] == ["sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1"]
    by_id = {e["scan_id"]: e for e in entries}
    assert [e["subject_id"] for e in entries] == ["sub-01", "sub-01", "sub-02"]
    assert [e["scan_group"] for e in entries] == ["control", "control", "patient"]
    assert by_id["sub-01_ses-1"]["attributes"] == {"age": 34, "sex": "F"}
    assert by_id["sub-02_ses-1"]["attributes"] == {"age": 51.5}  # sex n/a: left out
    assert by_id["sub-02_ses-1"]["trk_file"].endswith("_streamlines.tck")
    for e in entries:
        assert (e["study"], e["software"], e["reconstruction"], e["trk_space"]) == \
            ("bids-demo", "DSI Studio", "qsdr", "qsdr")
        for path in [e["pkl_path"], e["pkl_trk_path"]] + \
                [lab["numpy_path"] for lab in e["track_labels"]]:
            assert path.startswith(f"prepared/{e['scan_id']}/"), path
    run_snakemake(out.parent, local_data=out)
    assert not list(root.rglob("*.npy")) and not list(root.rglob("*.pkl"))  # nothing in ROOT
    # the demo's own entries for the same scans, labeled by the package function the
    # workflow's jobs call
    from bids_study import SESSIONS
    from ltpa.jobs.pipeline import label_scan

    demo_records = {r["scan_id"]: r for r in json.loads((demo / "local_data.json").read_text())}
    for (subject, session), scan in SESSIONS.items():
        entry = by_id[f"sub-{subject}_ses-{session}"]
        rec = demo_records[scan]
        for ours, theirs in zip(entry["track_labels"], rec["track_labels"]):
            assert ours["parameters"]["scale"] == theirs["parameters"]["scale"]
            ref = out.parent / "ref" / scan / Path(theirs["numpy_path"]).name
            ref.parent.mkdir(parents=True, exist_ok=True)
            region_list = {k: str(demo / theirs[k]) for k in ("graphml_path", "labels_path")
                           if k in theirs}
            label_scan(str(demo / rec["trk_file"]), str(demo / theirs["volume_path"]),
                       str(ref), graphml_path=region_list.get("graphml_path"),
                       labels_path=region_list.get("labels_path"), space="qsdr")
            built = np.load(out.parent / ours["numpy_path"])
            assert built.shape[0] > 1000 and np.count_nonzero(built) > 0
            assert np.array_equal(built, np.load(ref)), (scan, ours["numpy_path"])


def test_rerun_adds_exactly_the_new_subject_and_keeps_hand_edits(tree, demo, capfd):
    root, spec, out = tree
    first = init(root, spec, out)
    assert first.written and first.added == ["sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1"]
    entries = json.loads(out.read_text())
    entries[0]["scan_group"] = "control-relabeled"  # hand edits
    entries[1]["notes"] = "motion in run 2"
    out.write_text(json.dumps(entries, indent=1))
    edited = out.read_bytes()
    again = init(root, spec, out)  # nothing new: the file is left alone
    assert not again.written and again.added == [] and out.read_bytes() == edited
    assert again.unchanged == ["sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1"]
    add_session(root, demo, "03", "1", "s01")
    write_participants(root, PARTICIPANTS + [("sub-03", "patient", "60", "M")])
    grown = init(root, spec, out)
    assert grown.written and grown.added == ["sub-03_ses-1"] and grown.gone == []
    assert len(grown.unchanged) == 3
    assert grown.backup.read_bytes() == edited
    assert re.fullmatch(r"local_data\.json\.\d{8}T\d{6}Z(-\d+)?\.bak", grown.backup.name)
    # a file already at the backup's name is never replaced: the next one gets another
    taken = grown.backup
    add_session(root, demo, "04", "1", "s01")
    write_participants(root, PARTICIPANTS + [("sub-03", "patient", "60", "M"),
                                             ("sub-04", "control", "41", "F")])
    third = init(root, spec, out)
    assert third.written and third.backup != taken and taken.read_bytes() == edited
    now = json.loads(out.read_text())
    assert now[:3] == entries  # every existing entry as it was
    assert now[3]["scan_id"] == "sub-03_ses-1" and now[3]["scan_group"] == "patient"
    assert now[3]["attributes"] == {"age": 60, "sex": "M"}
    assert ltpa_main(capfd, "validate", out).returncode == 0
    # a scan whose files are gone is kept as it is: with its outputs never built, the study
    # would not validate, which the error says, naming the scan
    shutil.rmtree(root / "sub-02")
    write_participants(root, [r for r in PARTICIPANTS if r[0] != "sub-02"]
                       + [("sub-03", "patient", "60", "M")])
    add_session(root, demo, "03", "2", "s04")
    before = out.read_bytes()
    with pytest.raises(LtpaError, match=r"(?s)sub-02_ses-1.*no file matches any more, kept "
                                        r"as they are: sub-02_ses-1"):
        init(root, spec, out)
    assert out.read_bytes() == before
    out.write_text(json.dumps([e for e in now if e["scan_id"] != "sub-02_ses-1"]))
    later = init(root, spec, out)
    assert later.added == ["sub-03_ses-2"] and later.gone == []
    assert "sub-02_ses-1" not in out.read_text()


def test_every_problem_is_listed_at_once_with_its_file_and_subject(tree, demo, capfd):
    root, spec, out = tree
    missing_atlas = root / "sub-01/ses-2/dwi/sub-01_ses-2_seg-scale60_dseg.nii.gz"
    missing_atlas.unlink()
    no_row = add_session(root, demo, "04", "1", "s01")  # sub-04: not in participants.tsv
    twin = Path(str(root / TRACKS.format(subject="02", session="1")) + ".trk")
    shutil.copyfile(demo / "s01" / "s01.trk", twin)  # beside the .tck of the same scan
    write_participants(root, PARTICIPANTS + [("sub-09", "control", "40", "F")])
    with pytest.raises(LtpaError) as err:
        init(root, spec, out)
    text = str(err.value)
    assert "4 problem(s)" in text and "nothing was written" in text
    assert str(missing_atlas) in text and "atlases[1].volume" in text
    assert str(no_row) in text and "sub-04 has no row" in text
    assert str(twin) in text and "two tracks files" in text and "sub-02" in text
    assert "participant sub-09" in text and "line 4" in text
    assert not out.exists()
    proc = ltpa_main(capfd, "init", root, "--spec", spec, "-o", out)  # the command line too
    assert proc.returncode == 1 and str(missing_atlas) in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    kept = init(root, spec, out, allow_missing=True)
    assert kept.added == ["sub-01_ses-1"]
    assert kept.left_out == ["sub-01_ses-2", "sub-02_ses-1", "sub-04_ses-1"]
    assert any(str(missing_atlas) in w for w in kept.warnings)
    assert any("sub-09" in w for w in kept.warnings)
    assert [e["scan_id"] for e in json.loads(out.read_text())] == ["sub-01_ses-1"]


def test_a_result_that_fails_validation_is_not_written(tree):
    root, spec, out = tree
    # an atlas of another grid: found only by the header checks ltpa validate makes
    import nibabel as nib

    vol = root / "sub-01/ses-1/dwi/sub-01_ses-1_seg-scale33_dseg.nii.gz"
    img = nib.load(vol)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine), vol)
    with pytest.raises(LtpaError, match=r"(?s)does not pass ltpa validate.*sub-01_ses-1"):
        init(root, spec, out)
    assert not out.exists() and not list(out.parent.glob(".*ltpa-tmp*"))
    assert "local_data.json" in str(init(root, spec, out, check_headers=False).path)


def test_simple_case_from_options_alone(tree, capfd):
    root, _, out = tree
    proc = ltpa("init", root, "-o", out, "--tracks", TRACKS + ".trk", "--tracks",
                TRACKS + ".tck", "--participants", "participants.tsv", "--group-column",
                "group", "--space", "qsdr")
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(out.read_text())
    assert [e["scan_group"] for e in entries] == ["control", "control", "patient"]
    assert all("track_labels" not in e for e in entries)
    assert ltpa_main(capfd, "validate", out).returncode == 0


def test_outputs_inside_root_are_refused(tree):
    root, spec, _ = tree
    with pytest.raises(LtpaError, match="outputs: .* is inside ROOT"):
        init(root, spec, root / "local_data.json")


def test_spec_errors_name_their_keys(tree):
    root, spec_path, out = tree
    spec = yaml.safe_load(SPEC)
    bad = dict(spec, trakcs="x", space="talairach")
    bad["atlases"] = [dict(spec["atlases"][0], volum="v.nii.gz"), {"name": "x"}]
    bad["metadata"] = {"scan_id": "x", "software": "MRtrix3"}
    with pytest.raises(LtpaError) as err:
        check_spec(bad)
    text = str(err.value)
    assert "trakcs: unknown key; did you mean 'tracks'?" in text
    assert "space: 'talairach' is not one of" in text
    assert "atlases[0].volum: unknown key; did you mean 'volume'?" in text
    assert "atlases[1]: 'volume' is a required property" in text
    assert "metadata.scan_id: set by ltpa init itself" in text
    wrong = dict(spec)
    wrong["atlases"] = [dict(spec["atlases"][0], volume="sub-{subject}_run-{run}.nii.gz")]
    with pytest.raises(LtpaError, match=r"atlases\[0\]\.volume: wildcard\(s\) run"):
        init_study(root, check_spec(wrong), out)
    with pytest.raises(LtpaError, match=r"tracks\[1\]: wildcards"):
        init_study(root, check_spec(dict(spec, tracks=[TRACKS + ".trk", "sub-{subject}.tck"])),
                   out)
    spec_path.write_text("tracks: [a\n")
    with pytest.raises(LtpaError, match="is not valid YAML"):
        merged_spec(spec_path)


def test_scan_ids_join_the_wildcards_bids_style():
    assert scan_id_of(["subject", "session"], {"subject": "01", "session": "1"}) == \
        "sub-01_ses-1"
    assert scan_id_of(["subject", "run"], {"subject": "sub-7", "run": "2"}) == "sub-7_run-2"
    assert scan_id_of(["scan"], {"scan": "ab12"}) == "scan-ab12"


# --------------------------------------------------------------------------- dseg.tsv


def test_a_bids_dseg_table_gives_the_graphmls_regions_and_names(tmp_path, demo):
    graphml = demo / "atlases" / "scale33.graphml"
    names = region_names(graphml, "graphml")
    ids = regions_from_graphml(graphml)
    # BIDS fixes the column names, not their order
    rows = ["name\tindex\tcolor"] + [f"{names[i]}\t{i}\t#ff0000" for i in ids[::-1]]
    table = tmp_path / "atlas-scale33_dseg.tsv"
    table.write_text("\n".join(rows) + "\n")
    assert np.array_equal(regions_from_table(table), ids)
    assert region_names(table) == names
    lut = demo / "atlases" / "scale60_LUT.txt"  # a FreeSurfer LUT names its regions too
    assert region_names(lut) == region_names(demo / "atlases" / "scale60.graphml", "graphml")
    with pytest.raises(LtpaError, match=r"line 3: column index 'x' is not an integer"):
        table.write_text("name\tindex\nA\t1\nB\tx\n")
        regions_from_table(table)


def test_rerun_reports_a_second_tracks_file_beside_a_scan_already_listed(tree, demo, capfd):
    root, spec, out = tree
    assert init(root, spec, out).written
    listed = out.read_bytes()
    listed_trk = Path(str(root / TRACKS.format(subject="01", session="1")) + ".trk")
    twin = listed_trk.with_suffix(".tck")
    shutil.copyfile(demo / "s03" / "s03.tck", twin)  # a .tck appears beside the listed .trk
    with pytest.raises(LtpaError) as err:
        init(root, spec, out)
    text = str(err.value)
    assert "1 problem(s)" in text and "nothing was written" in text
    assert "two tracks files" in text and "sub-01_ses-1" in text and "subject sub-01" in text
    assert str(listed_trk) in text and str(twin) in text and str(out) in text
    assert out.read_bytes() == listed
    proc = ltpa_main(capfd, "init", root, "--spec", spec, "-o", out)  # the command line too
    assert proc.returncode == 1 and str(twin) in proc.stderr and "Traceback" not in proc.stderr
    # --allow-missing: the entry stays as it is, with a warning naming both files
    kept = init(root, spec, out, allow_missing=True)
    assert kept.unchanged == ["sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1"]
    assert kept.left_out == [] and not kept.written and out.read_bytes() == listed
    assert [w for w in kept.warnings if str(twin) in w and str(listed_trk) in w]


# --------------------------------------------------------------------------- atlas label sets


def _labels_reference(path):
    """The label set as plain Python reads it: every voxel nibabel gives, as a set."""
    import nibabel as nib

    return sorted({int(v) for v in np.asarray(nib.load(path).dataobj).ravel().tolist()} - {0})


def _atlas_volumes(folder):
    """Atlas files of every kind the label-set read meets: (name, path, fast route expected)."""
    import gzip

    import nibabel as nib

    rng = np.random.default_rng(7)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    base = np.zeros((23, 19, 17), np.int16)  # mostly background, as atlases are
    base[rng.random(base.shape) < 0.2] = 2035
    base.flat[rng.choice(base.size, 40, replace=False)] = rng.integers(1, 200, 40)
    cases = []

    def save(name, data, *, img_class=nib.Nifti1Image, edit=None):
        img = img_class(data, affine)
        if edit:
            edit(img.header)
        path = folder / name
        nib.save(img, path)
        cases.append((name, path))

    save("int16.nii.gz", base)
    save("uint8.nii.gz", (base % 256).astype(np.uint8))
    save("int32-big.nii.gz", base.astype(np.int32) * 5000)  # labels > 2^20: the sorting path
    save("uint16.nii", base.astype(np.uint16))  # uncompressed
    save("float-integral.nii.gz", base.astype(np.float32))
    save("zeros.nii.gz", np.zeros((4, 5, 6), np.int16))
    save("nifti2.nii.gz", base, img_class=nib.Nifti2Image)
    save("slope2.nii.gz", base, edit=lambda h: h.set_slope_inter(2.0, 0.0))
    save("inter1.nii.gz", base, edit=lambda h: h.set_slope_inter(1.0, 1.0))
    big_endian = nib.Nifti1Image(base.astype(">i2"), affine)
    big_endian.header.set_data_dtype(">i2")
    nib.save(big_endian, folder / "big-endian.nii.gz")
    cases.append(("big-endian.nii.gz", folder / "big-endian.nii.gz"))
    # two gzip members (as some tools append): nibabel reads on past the first
    body = gzip.decompress((folder / "int16.nii.gz").read_bytes())
    (folder / "two-members.nii.gz").write_bytes(gzip.compress(body[:3000]) +
                                               gzip.compress(body[3000:]))
    cases.append(("two-members.nii.gz", folder / "two-members.nii.gz"))
    # refused volumes: the same error as read_label_volume's
    neg = base.copy()
    neg[0, 0, 0] = -3
    save("negative.nii.gz", neg)
    save("four-d.nii.gz", base[..., None].repeat(2, axis=3))
    save("non-integral.nii.gz", base.astype(np.float32) + 0.5)
    whole = (folder / "int16.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(gzip.compress(gzip.decompress(whole)[:2000]))
    cases.append(("truncated.nii.gz", folder / "truncated.nii.gz"))
    (folder / "not-gzip.nii.gz").write_bytes(b"not a gzip file at all")
    cases.append(("not-gzip.nii.gz", folder / "not-gzip.nii.gz"))
    cases.append(("missing.nii.gz", folder / "missing.nii.gz"))
    return cases


def test_atlas_label_sets_are_those_of_the_exact_read_for_every_kind_of_volume(tmp_path):
    import nibabel as nib

    from ltpa.prepared.labels import read_label_volume
    from ltpa.study.headers import _atlas_labels

    refused = {"negative.nii.gz", "four-d.nii.gz", "non-integral.nii.gz", "truncated.nii.gz",
               "not-gzip.nii.gz", "missing.nii.gz"}
    for name, path in _atlas_volumes(tmp_path):
        if name in refused:
            with pytest.raises(LtpaError) as exact:
                read_label_volume(path)
            with pytest.raises(LtpaError) as fast:
                _atlas_labels(path)
            assert str(fast.value) == str(exact.value) and str(path) in str(fast.value), name
            continue
        expected = _labels_reference(path)
        if name.startswith(("slope2", "inter1")):  # scaled by nibabel: not the stored values
            stored = np.asarray(nib.load(path).dataobj.get_unscaled())
            assert expected != sorted(set(stored.ravel().tolist()) - {0}), name
        assert _atlas_labels(path) == expected, name
        assert name == "zeros.nii.gz" or expected, name


def test_the_label_set_read_skips_nibabels_image_only_when_nibabel_reads_it_unscaled(tmp_path):
    from ltpa.study.headers import _stored_nifti_gz

    direct = {name for name, path in _atlas_volumes(tmp_path)
              if path.exists() and _stored_nifti_gz_or_none(_stored_nifti_gz, path) is not None}
    assert direct == {"int16.nii.gz", "uint8.nii.gz", "int32-big.nii.gz", "zeros.nii.gz",
                      "big-endian.nii.gz", "negative.nii.gz"}
    import nibabel as nib

    for name in direct:  # the voxels themselves, as nibabel gives them
        path = tmp_path / name
        assert np.array_equal(_stored_nifti_gz(path), np.asarray(nib.load(path).dataobj)), name


def _stored_nifti_gz_or_none(read, path):
    try:
        return read(path)
    except Exception:  # noqa: BLE001 - a file the direct route cannot read: not direct
        return None

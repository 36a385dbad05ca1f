"""Robustness (#7): bad input through the real command line and workflow, faults, edge streamlines.

Every bad input must fail with the project's own one-line message (``ltpa error: ...``
naming the file / scan / field, no traceback) and leave a previously good output at
the same path byte-identical, with no temp file beside it.

The commands run here as ``ltpa.cli.main`` in process (``ltpa_main``: the same code, its exit
status and what it wrote on fds 1 and 2). The real ``ltpa`` command runs where the process
itself is the point, and so once per concern (exit status 1, no traceback): a job step's
failure (``ltpa index`` on a .trk whose n_count asks for 2^31 streamlines, under an
address-space limit), a plain command's (``ltpa validate`` on bad JSON, beside the in-process
cases); a write cut short by a file-size limit runs the index step in a fresh process too.
"""

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import networkx as nx
import nibabel as nib
import numpy as np
import pytest

from conftest import BIN, SNAKEFILE, SNAKEMAKE, ltpa_main, run_snakemake, study_folder
from ltpa import LtpaError, load_track_dataset
from ltpa.demo.small import make_demo, make_streamlines
from ltpa.formats.grids import MNI_DIM, QSDR_AFFINE, QSDR_DIM
from ltpa.formats.trkwrite import write_trk
from reference import hash_slow, label_slow, read_trk_slow

LTPA = str(BIN / "ltpa")
OFF_NCOUNT = 988


def qsdr_key(v):
    return (v[0] + 6, 101 - v[1], v[2] + 11)


def start(cmd):
    """Start the real command ``cmd`` (output piped), to run beside the in-process cases; use
    as a context manager (it is waited for) and get its result with ``finish``."""
    return subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(popen, timeout=300):
    """The started command's exit status and output (like ``subprocess.run``'s result)."""
    out, err = popen.communicate(timeout=timeout)
    return SimpleNamespace(returncode=popen.returncode, stdout=out, stderr=err)


def fresh_out(good, folder, i):
    """A copy of the good outputs for one command (jobs for one output exclude each other)."""
    dest = Path(folder) / f"out{i}"
    shutil.copytree(good["out"], dest)
    return dest


def snapshot(folder):
    """{name: bytes} of every file in ``folder`` (temp files included, so leftovers show)."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def assert_clean_failure(proc, *fragments):
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    # `ltpa` logs the message as an ERROR line (and, with --log, also prints "ltpa error: ...")
    errors = [line for line in proc.stderr.splitlines()
              if line.startswith("ltpa error: ") or " ERROR " in line]
    assert errors, proc.stderr[-3000:]
    message = proc.stderr[proc.stderr.index(errors[0]):]  # the message, with any problem list
    for frag in fragments:
        assert frag in message, (frag, message)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small QSDR scan (trk, atlas, graphml) and its good outputs, built with the CLI."""
    root = tmp_path_factory.mktemp("cli")
    study = make_demo(root / "study", n_scans=1, seed=3, n_per_side=10, n_background=5).parent
    trk = study / "s1" / "s1.trk"
    atlas = study / "s1" / "s1.scale33.QSDR.nii.gz"
    graphml = study / "atlases" / "scale33.graphml"
    out = root / "out"
    out.mkdir()
    # in process (the job steps log on fd 2, which pytest keeps for a failure's report)
    for args in (["index", trk, out / "s1.pkl"],
                 ["label", trk, atlas, out / "s1.npy", "--graphml", graphml]):
        assert ltpa_main(None, *args).returncode == 0, args
    return dict(root=root, study=study, trk=trk, atlas=atlas, graphml=graphml, out=out,
                before=snapshot(out), n=len(read_trk_slow(trk)))


# --------------------------------------------------------------------------- bad .trk

def bad_trks(good, folder):
    raw = good["trk"].read_bytes()
    n = good["n"]
    sls = read_trk_slow(good["trk"])
    k = next(i for i, s in enumerate(sls) if i > 2 and len(s) > 3)

    def with_ncount(value):
        data = bytearray(raw)
        data[OFF_NCOUNT:OFF_NCOUNT + 4] = np.int32(value).tobytes()
        return bytes(data)

    def with_value(value):
        bad = [s.copy() for s in sls]
        bad[k][1, 2] = value
        p = folder / "tmp.trk"
        write_trk(p, bad, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
        return p.read_bytes()

    cases = {
        "header only.trk": (raw[:1000],
                            f"header n_count says {n} streamlines but the file holds 0"),
        "cut mid-streamline.trk": (raw[:-8], "file ends 8 bytes early; the file is truncated"),
        "cut odd.trk": (raw[:-6], "is not a whole number of 4-byte values; the file is truncated"),
        "n_count.trk": (with_ncount(n + 3),
                        f"header n_count says {n + 3} streamlines but the file holds {n}; the file "
                        f"is truncated or its header is wrong"),
        "magic.trk": (b"TRACX" + raw[5:],
                      "not a TrackVis .trk file (magic b'TRACX\\x00', expected b'TRACK')"),
        "nan.trk": (with_value(np.nan), f"streamline {k} has a NaN or infinite coordinate; "
                                        f"expected finite voxmm coordinates"),
        "inf.trk": (with_value(np.inf), f"streamline {k} has a NaN or infinite coordinate"),
        "minus inf.trk": (with_value(-np.inf), f"streamline {k} has a NaN or infinite coordinate"),
    }
    paths = {}
    for name, (data, msg) in cases.items():
        p = folder / name
        p.write_bytes(data)
        paths[p] = msg
    (folder / "tmp.trk").unlink()
    paths[folder / "missing.trk"] = "does not exist"
    return paths


def test_cli_bad_trk_fails_cleanly_and_keeps_the_previous_outputs(good, tmp_path, capfd):
    """In process (the real ``ltpa index`` on a bad .trk: test_huge_header_n_count_...)."""
    runs = []
    for path, msg in bad_trks(good, tmp_path).items():
        out = fresh_out(good, tmp_path, len(runs))
        runs.append((["index", path, out / "s1.pkl", "--trk-out", out / "s1.pkl.trk"],
                     path, msg, out))
        if path.name in ("n_count.trk", "inf.trk", "cut mid-streamline.trk"):
            out = fresh_out(good, tmp_path, len(runs))
            runs.append((["label", path, good["atlas"], out / "s1.npy", "--graphml",
                          good["graphml"]], path, msg, out))
    for args, path, msg, out in runs:
        assert_clean_failure(ltpa_main(capfd, *args), f"file {str(path)!r}", msg)
        # the good pkl, npy and their sidecars: byte-identical; no temp file, no pkl.trk
        assert snapshot(out) == good["before"]


# --------------------------------------------------------------------------- bad atlas / graphml

def test_cli_bad_atlas_or_graphml_fails_cleanly_and_keeps_the_previous_output(good, tmp_path,
                                                                              capfd):
    img = nib.load(str(good["atlas"]))
    base = np.asanyarray(img.dataobj).astype(np.int16)
    cases = {}

    def atlas(name, data, msg):
        p = tmp_path / name
        nib.Nifti1Image(data, QSDR_AFFINE).to_filename(str(p))
        cases[p] = ("atlas", msg)

    nan = base.astype(np.float32)
    nan[0, 0, 0] = np.nan
    atlas("nan atlas.nii.gz", nan, "contains NaN or infinite values; expected integer labels")
    neg = base.copy()
    neg[1, 2, 3] = -4
    atlas("negative.nii.gz", neg, "has negative labels (min -4); expected 0 for background")
    flt = base.astype(np.float32)
    flt[5, 5, 5] = 2.5
    atlas("float.nii.gz", flt, "has non-integral values (e.g. 2.5); expected integer labels")
    atlas("four_d.nii.gz", base[..., None].repeat(2, axis=3),
          "has 4 dimensions (79, 95, 69, 2); expected a 3-D label volume")
    raw = good["atlas"].read_bytes()
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(raw[: len(raw) // 2])
    cases[corrupt] = ("atlas", "could not be read as an image")
    notgz = tmp_path / "not gzip.nii.gz"
    notgz.write_bytes(b"\x1f\x8b" + os.urandom(200))
    cases[notgz] = ("atlas", "could not be read as an image")
    g = nx.Graph()
    g.add_nodes_from(["1", "2", "ctx-lh-precentral"])
    nx.write_graphml(g, str(tmp_path / "names.graphml"))
    cases[tmp_path / "names.graphml"] = ("graphml", "has node id 'ctx-lh-precentral'; expected "
                                                    "integer node ids (the atlas labels)")
    for k, (path, (kind, msg)) in enumerate(cases.items()):
        out = fresh_out(good, tmp_path, k)
        if kind == "atlas":
            args = [good["trk"], path, out / "s1.npy", "--graphml", good["graphml"]]
        else:
            args = [good["trk"], good["atlas"], out / "s1.npy", "--graphml", path]
        proc = ltpa_main(capfd, "label", *args, "--scan-id", "s1")
        fld = "volume_path" if kind == "atlas" else "graphml_path"
        assert_clean_failure(proc, f"scan 's1', field {fld!r}: {kind} file {str(path)!r}", msg)
        assert snapshot(out) == good["before"]


# --------------------------------------------------------------------------- bad JSON

def test_cli_validate_reports_bad_json(tmp_path, capfd):
    scan = {"scan_id": "a", "scan_group": "g"}
    cases = {
        "not json.json": ('[\n  {"scan_id": "a",\n   "scan_group": "g",,}\n]',
                          "is not valid JSON: Expecting property name enclosed in double quotes "
                          "at line 3 column 22"),
        "object.json": (json.dumps(scan), "the top level is a JSON object; expected a list of "
                                          "scan objects (dsi2's format)"),
        "string.json": ('"scans"', "the top level is a JSON str; expected a list"),
        "empty.json": ("[]", "the list of scans is empty; expected at least one scan"),
        "types.json": (json.dumps([{"scan_id": 7, "scan_group": "g", "track_labels": {}}]),
                       "scan #0 (7), field 'scan_id': is 7; expected a string"),
        "duplicate.json": (json.dumps([scan, dict(scan)]),
                           "scan #1 ('a'), field 'scan_id': duplicate of scan #0"),
    }
    for name, (text, _) in cases.items():
        (tmp_path / name).write_text(text)
    first = next(iter(cases))
    with start([LTPA, "validate", tmp_path / first]) as real:  # the real command too, for one
        procs = {name: ltpa_main(capfd, "validate", tmp_path / name) for name in cases}
        runs = [*procs.items(), (first, finish(real))]
    for name, proc in runs:
        assert_clean_failure(proc, cases[name][1])
        assert name in proc.stderr
    assert "field 'track_labels': is {}; expected a list" in procs["types.json"].stderr


# --------------------------------------------------------------------------- unwritable output

def test_cli_output_folder_not_writable(good, tmp_path, capfd):
    """As root, permissions do not stop writes: a file in the way, and a read-only mount."""
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should be\n")
    proc = ltpa_main(capfd, "index", good["trk"], blocker / "s1" / "s1.pkl")
    assert_clean_failure(proc, f"cannot create output folder {str(blocker / 's1')!r}: "
                               "Not a directory")
    proc = ltpa_main(capfd, "label", good["trk"], good["atlas"], blocker / "s1.npy")
    assert_clean_failure(proc, f"cannot create output folder {str(blocker)!r}: File exists "
                               "(a file, not a folder, has that name)")
    with mounted_tmpfs(tmp_path / "ro", "size=4m") as ro:
        proc = ltpa_main(capfd, "index", good["trk"], ro / "s1.pkl")
        assert proc.returncode == 0, proc.stderr
        before = snapshot(ro)
        remount(ro, "ro")
        try:
            proc = ltpa_main(capfd, "index", good["trk"], ro / "s1.pkl")
            assert_clean_failure(proc, f"cannot write in output folder {str(ro)!r}: "
                                       "Read-only file system")
            assert snapshot(ro) == before
        finally:
            remount(ro, "rw")


@contextlib.contextmanager
def mounted_tmpfs(path, options):
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # CI (.ci/run) sets LTPA_REQUIRE_TMPFS=1: there a test that cannot mount fails, not skips
    give_up = pytest.fail if os.environ.get("LTPA_REQUIRE_TMPFS") else pytest.skip
    if os.geteuid() != 0:
        give_up("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        give_up(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path, mode):
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


# --------------------------------------------------------------------------- full disk

@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A .trk of 4,800 streamlines (> 3 MB): its pkl cannot fit where 2 MB may be written
    (800 drawn streamlines, six times over)."""
    part, _ = make_streamlines(np.random.default_rng(2), 400, 0)
    path = tmp_path_factory.mktemp("big") / "big.trk"
    write_trk(path, part * 6, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    return path


def test_full_disk_fails_cleanly_and_keeps_the_previous_output(good, big, tmp_path, capfd):
    assert big.stat().st_size > 3 << 20  # its pkl holds the streamlines: cannot fit in 2 MB
    with mounted_tmpfs(tmp_path / "full", "size=2m") as full:
        for args in (["index", good["trk"], full / "s1.pkl"],
                     ["label", good["trk"], good["atlas"], full / "s1.npy"]):
            proc = ltpa_main(capfd, *args)
            assert proc.returncode == 0, proc.stderr
        before = snapshot(full)
        for name in ("s1.pkl", "new.pkl"):  # replace the good one; a new one
            proc = ltpa_main(capfd, "index", big, full / name)
            assert_clean_failure(proc, f"could not write {str(full / name)!r}: "
                                       "No space left on device")
        # the good outputs are intact, no temp file and no partial new.pkl
        assert snapshot(full) == before
        ds = load_track_dataset(full / "s1.pkl")
        assert ds.get_ntracks() == good["n"]
        # and the disk is usable again: a small output still fits
        proc = ltpa_main(capfd, "label", good["trk"], good["atlas"], full / "again.npy")
        assert proc.returncode == 0, proc.stderr
        assert np.array_equal(np.load(full / "again.npy"), np.load(full / "s1.npy"))


def _file_size_limit(limit):
    """preexec_fn: writes past ``limit`` bytes fail with EFBIG (SIGXFSZ ignored so the write
    returns the error instead of killing the process): a full disk without mounting one."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


# ``ltpa index TRK OUT`` for each OUT in one process (``ltpa.cli.main``, as the command runs
# it), each followed on stderr by a line SEP <exit status>
SEP = "=== ltpa index exited with"
INDEX_EACH = ("import sys\n"
              "from ltpa.cli import main\n"
              "for out in sys.argv[2:]:\n"
              "    try:\n        rc = main(['index', sys.argv[1], out])\n"
              "    except SystemExit as e:\n        rc = e.code\n"
              f"    print({SEP!r}, rc, file=sys.stderr, flush=True)\n")


def index_each(trk, outs, **popen):
    """``INDEX_EACH`` in a fresh process: per output, its exit status and stderr."""
    proc = subprocess.run([str(BIN / "python"), "-c", INDEX_EACH, str(trk), *map(str, outs)],
                          capture_output=True, text=True, timeout=300, **popen)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parts = proc.stderr.split(SEP + " ")
    assert len(parts) == len(outs) + 1 and not parts[-1].strip("0123456789\n"), proc.stderr
    return [SimpleNamespace(returncode=int(rc.split("\n", 1)[0]), stderr=err)
            for err, rc in zip(parts[:-1], parts[1:])]


def test_a_write_cut_short_by_a_file_size_limit_keeps_the_previous_output(good, big, tmp_path):
    """The full-disk test without root or tmpfs: any machine runs it (the limit is the
    process's: both writes in one fresh process)."""
    out = fresh_out(good, tmp_path, 0)
    before = snapshot(out)
    assert big.stat().st_size > 3 << 20 and max(len(b) for b in before.values()) < 2 << 20
    names = ("s1.pkl", "new.pkl")  # replace the good one; a new one
    procs = index_each(big, [out / name for name in names],
                       preexec_fn=_file_size_limit(2 << 20))
    for proc, name in zip(procs, names):
        assert_clean_failure(proc, f"could not write {str(out / name)!r}: File too large")
    assert snapshot(out) == before  # no temp file, no partial new.pkl, the old pkl intact
    assert load_track_dataset(out / "s1.pkl").get_ntracks() == good["n"]


# --------------------------------------------------------------------------- a pkl that runs code

def test_pickle_that_runs_code_is_refused_by_the_cli_loader(tmp_path):
    """Plain pickle.load would run os.system; load_track_dataset refuses before anything runs."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(Evil()))
    # in this process (test_loader loads the same payload in a fresh one)
    with pytest.raises(LtpaError, match="'posix.system' is not one of the names"):
        load_track_dataset(bad)
    assert not marker.exists()


# --------------------------------------------------------------------------- workflow level

pytest_slow = pytest.mark.slow


def edge_streamlines():
    """Not errors: zero-length, one-point, negative and out-of-grid coordinates."""
    return [
        np.zeros((0, 3), np.float32),  # zero-length: no voxel, id 0
        np.array([[70.0, 80.0, 60.0]], np.float32),  # one point: id 0
        np.array([[-40.0, -3.0, -1.5], [-0.5, 10.0, 10.0], [20.0, 30.0, 40.0]], np.float32),
        np.array([[-300.0, -300.0, -300.0], [-1e-3, -1e-3, -1e-3]], np.float32),
        np.array([[400.0, 10.0, 10.0], [10.0, 400.0, 10.0]], np.float32),  # beyond the grid
    ]


@pytest_slow
def test_study_under_spaces_and_unicode_with_edge_streamlines(tmp_path):
    folder = tmp_path / "my study" / "ünïcødé 研究"
    local_data = make_demo(folder, n_scans=2, seed=4, n_per_side=10, n_background=5)
    sls2 = read_trk_slow(folder / "s2" / "s2.trk") + edge_streamlines()
    write_trk(folder / "s2" / "s2.trk", sls2, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    work = tmp_path / "wörk dir"
    run_snakemake(work, local_data=local_data)
    for s in ("s1", "s2"):
        sls = read_trk_slow(folder / s / f"{s}.trk")
        ds = load_track_dataset(folder / s / f"{s}.pkl")
        assert {k: ds.tracks_at_ijk[k].tolist() for k in ds.tracks_at_ijk} == hash_slow(
            sls, (2, 2, 2), qsdr_key, MNI_DIM)
        assert ds.get_ntracks() == len(sls)
        for scale, n_regions in (("scale33", 83), ("scale60", 129)):
            atlas = np.asanyarray(nib.load(str(folder / s / f"{s}.{scale}.QSDR.nii.gz")).dataobj)
            got = np.load(folder / s / f"{scale}.npy")
            np.testing.assert_array_equal(got, label_slow(sls, atlas, (2, 2, 2),
                                                          range(1, n_regions + 1)))
            if s == "s1":  # and the demo's own answer, from the drawn region pairs
                np.testing.assert_array_equal(got, np.load(folder / "expected" / f"s1.{scale}.npy"))
            else:  # zero-, one-point and out-of-atlas streamlines: id 0
                assert got[-5:].tolist() == [0] * 5
    # points outside the key grid are left out and counted in the log
    outside = sum(1 for sl in sls2 for p in sl
                  if not all(0 <= qsdr_key(tuple(int(np.floor(c / 2)) for c in p))[a] < MNI_DIM[a]
                             for a in range(3)))
    assert outside >= 3
    (log,) = [p for p in study_folder(local_data).rglob("s2.pkl.log")]
    n_points = sum(len(s) for s in sls2)
    assert (f"{outside} of {n_points} points fall outside the 91x109x91 key grid and are left "
            f"out of the index") in log.read_text()
    # a broken JSON afterwards fails before any job, with line and column; nothing is lost
    outputs = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")
               if p.suffix in (".pkl", ".npy", ".trk", ".json") and p.is_file() and p != local_data}
    good_json = local_data.read_text()
    local_data.write_text(
        good_json.replace('"scan_group": "control",', '"scan_group": "control"', 1))
    proc = run_snakemake(work, local_data=local_data, check=False)
    assert proc.returncode != 0
    line = good_json[:good_json.index('"scan_group": "control",')].count("\n") + 2
    assert (f"local_data file {str(local_data)!r} is not valid JSON: Expecting ',' delimiter at "
            f"line {line} column") in proc.output, proc.output[-3000:]
    local_data.write_text(good_json)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in outputs} == outputs
    assert not [p for p in folder.rglob("*") if "ltpa-tmp" in p.name]


@pytest_slow
def test_second_snakemake_on_the_same_study_is_locked_out(tmp_path):
    """While one run works on a study (its running job held stopped), a second one is refused."""
    import psutil

    study_json = make_demo(tmp_path / "study", n_scans=1, seed=6, n_per_side=10, n_background=5)
    study = study_json.parent
    sls = read_trk_slow(study / "s1" / "s1.trk")
    work = tmp_path / "work"
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    first = subprocess.Popen(
        [SNAKEMAKE, "-s", SNAKEFILE, "-d", str(work), "--cores", "1", "--config",
         f"local_data={study_json}", "qc=False"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    stopped = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not stopped and first.poll() is None:
            for child in psutil.Process(first.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if any(part.endswith("ltpa-job") for part in child.cmdline()):
                        child.suspend()  # SIGSTOP: the first run now holds the lock for sure
                        stopped.append(child)
            time.sleep(0.02)
        assert stopped, "no job of the first run was seen running"
        second = run_snakemake(work, local_data=study_json, check=False)
        for child in stopped:
            child.resume()
        output, _ = first.communicate(timeout=300)
    finally:
        for child in stopped:
            with contextlib.suppress(psutil.Error):
                child.resume()
        if first.poll() is None:
            first.kill()
    assert second.returncode != 0
    assert ("Error: Directory cannot be locked. Please make sure that no other Snakemake "
            "process is trying to create the same files in the following directory:"
            in second.output), second.output[-3000:]
    assert "--unlock" in second.output
    assert first.returncode == 0, output[-3000:]
    # the first run's outputs are whole and right
    from ltpa.jobs.pipeline import index_scan, label_scan

    ref = tmp_path / "ref"
    index_scan(study / "s1" / "s1.trk", ref / "s1.pkl", space="qsdr")
    label_scan(study / "s1" / "s1.trk", study / "s1" / "s1.scale33.QSDR.nii.gz", ref / "a.npy",
               graphml_path=study / "atlases" / "scale33.graphml")
    got = load_track_dataset(study / "s1" / "s1.pkl")
    want = load_track_dataset(ref / "s1.pkl").tracks_at_ijk
    np.testing.assert_array_equal(got.tracks_at_ijk.voxels, want.voxels)
    np.testing.assert_array_equal(got.tracks_at_ijk.ids, want.ids)
    assert got.get_ntracks() == len(sls)
    np.testing.assert_array_equal(np.load(study / "s1" / "scale33.npy"), np.load(ref / "a.npy"))
    assert (study / "s1" / "s1.pkl.trk").stat().st_size == (study / "s1" / "s1.trk").stat().st_size
    assert not [p for p in study.rglob("*") if "ltpa-tmp" in p.name]
    # the lock is gone: the next run has nothing to do
    assert "Nothing to be done" in run_snakemake(work, "-n", local_data=study_json).output


# --------------------------------------------------------------------------- fuzz findings

def small_native_trk(path, **header):
    from nibabel.streamlines.trk import header_2_dtype

    rng = np.random.default_rng(0)
    sls = [rng.uniform(0, 20, (4, 3)).astype(np.float32) for _ in range(5)]
    write_trk(path, sls, (10, 10, 10), (2, 2, 2), "LAS", np.diag([2.0, 2, 2, 1]))
    raw = bytearray(path.read_bytes())
    for name, value in header.items():
        dt, off = header_2_dtype.fields[name]
        raw[off:off + dt.itemsize] = np.asarray(value, dtype=dt.base.newbyteorder("<")).tobytes()
    path.write_bytes(bytes(raw))
    return path


def test_garbage_voxel_order_is_an_error_in_native_space(tmp_path):
    from ltpa.errors import LtpaError
    from ltpa.jobs.pipeline import index_scan

    trk = small_native_trk(tmp_path / "order.trk", voxel_order=b"\x03\xf4<)")
    with pytest.raises(LtpaError, match=r"order.trk': the trk header's voxel_order '.*' is not "
                                          r"three letters; expected e.g. 'LAS' or 'LPS'"):
        index_scan(trk, tmp_path / "o.pkl", space="native")
    assert not (tmp_path / "o.pkl").exists()


def test_header_grid_too_big_for_memory_is_a_clear_error(tmp_path):
    from ltpa.errors import LtpaError
    from ltpa.jobs.pipeline import index_scan

    trk = small_native_trk(tmp_path / "huge.trk", dimensions=[32767, 32767, 32767])
    with pytest.raises(LtpaError, match=r"huge.trk'?: the key grid 32767x32767x32767 "
                                        r"\(35181150961663 voxels\) needs .* GiB for the index, "
                                        r"more than this machine's"):
        index_scan(trk, tmp_path / "h.pkl", space="native")


# fuzz finding (benchmarks/fuzz_trk.py), fixed: the header's n_count is capped by what the body
# can hold
def test_huge_header_n_count_is_the_n_count_error_not_memory_error(tmp_path):
    """The real command under an address-space limit (also this module's check that a bad
    .trk makes ``ltpa index`` itself exit 1 with its message and no traceback)."""
    import resource

    trk = small_native_trk(tmp_path / "ncount.trk", nb_streamlines=2**31 - 1)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    proc = subprocess.run([LTPA, "index", str(trk), str(tmp_path / "n.pkl"), "--space", "native"],
                          capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert_clean_failure(proc, "header n_count says 2147483647 streamlines but the file holds 5")


# fuzz findings (benchmarks/fuzz.py, #10): the saved inputs under benchmarks/out/fuzz_crashes


def small_trx(folder, rng):
    """A real .trx (trx-python, stored members) of 12 streamlines inside the QSDR grid."""
    from trx.trx_file_memmap import TrxFile, save

    sls = [rng.uniform(-40, 40, (int(rng.integers(2, 9)), 3)).astype(np.float32)
           for _ in range(12)]
    ref = nib.Nifti1Image(np.zeros(QSDR_DIM, np.int16), QSDR_AFFINE)
    trx_obj = TrxFile.from_tractogram(nib.streamlines.Tractogram(sls, affine_to_rasmm=np.eye(4)),
                                      reference=ref)
    path = Path(folder) / "s.trx"
    save(trx_obj, str(path))
    trx_obj.close()
    return path


def zip_member_patched(src, dst, prefix, *, method=None, flags=0):
    """``src`` with the central-directory entry of the member named ``prefix...`` given another
    compression method and/or more general-purpose flag bits (bit 0: encrypted)."""
    raw = bytearray(Path(src).read_bytes())
    i, found = 0, None
    while (i := raw.find(b"PK\x01\x02", i)) >= 0:
        n = int.from_bytes(raw[i + 28:i + 30], "little")
        name = bytes(raw[i + 46:i + 46 + n]).decode()
        if name.startswith(prefix):
            found = name
            if method is not None:
                raw[i + 10:i + 12] = method.to_bytes(2, "little")
            bits = int.from_bytes(raw[i + 8:i + 10], "little") | flags
            raw[i + 8:i + 10] = bits.to_bytes(2, "little")
        i += 4
    assert found, prefix
    Path(dst).write_bytes(bytes(raw))
    return found


def test_trx_header_json_nested_too_deep_is_an_ltpa_error(tmp_path):
    """Finding 1 (RecursionError in TrxReader._find): json's recursion limit, not a crash."""
    import zipfile

    from ltpa.errors import LtpaError
    from ltpa.jobs.pipeline import index_scan

    trx = tmp_path / "deep.trx"
    deep = "[" * 100_000 + "]" * 100_000
    with zipfile.ZipFile(trx, "w") as z:
        z.writestr("header.json", '{"NB_VERTICES": 0, "NB_STREAMLINES": 0, "VOXEL_TO_RASMM": '
                                  + deep + "}")
    with pytest.raises(LtpaError, match=r"file '.*deep\.trx': header\.json is nested more "
                                        r"deeply than Python's JSON reader can follow"):
        index_scan(trx, tmp_path / "o.pkl", space="qsdr")
    assert not (tmp_path / "o.pkl").exists()
    # found beside it: Python's json reads Infinity, and int(inf) is an OverflowError
    with zipfile.ZipFile(tmp_path / "inf.trx", "w") as z:
        z.writestr("header.json", '{"NB_VERTICES": Infinity, "NB_STREAMLINES": 1}')
    with pytest.raises(LtpaError, match=r"file '.*inf\.trx': header\.json lacks integer "
                                        r"NB_VERTICES and NB_STREAMLINES"):
        index_scan(tmp_path / "inf.trx", tmp_path / "o.pkl", space="qsdr")


def test_trx_member_compressed_unknown_way_or_encrypted_is_an_ltpa_error(tmp_path, rng):
    """Finding 2 (NotImplementedError / RuntimeError from zipfile): clear errors naming the file."""
    from ltpa.errors import LtpaError
    from ltpa.jobs.pipeline import index_scan

    good = small_trx(tmp_path, rng)
    index_scan(good, tmp_path / "good.pkl", space="qsdr")  # the unpatched file is fine
    cases = [("header.json", dict(method=99), "That compression method is not supported"),
             ("offsets.", dict(flags=0x1), "is encrypted, password required"),
             ("positions.", dict(method=99), "That compression method is not supported"),
             ("positions.", dict(flags=0x1), "is encrypted, password required")]
    for k, (member, how, why) in enumerate(cases):
        bad = tmp_path / f"bad{k}.trx"
        zip_member_patched(good, bad, member, **how)
        with pytest.raises(LtpaError) as err:
            index_scan(bad, tmp_path / f"o{k}.pkl", space="qsdr")
        text = str(err.value)
        assert f"file '{bad}'" in text and why in text, (member, how, text)
        assert "not a readable .trx file" in text or "could not be read" in text, text
        assert not (tmp_path / f"o{k}.pkl").exists()


def write_text_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def test_graphml_with_an_unknown_encoding_is_an_ltpa_error(good, tmp_path):
    """Finding 3 (LookupError from the XML parser)."""
    from ltpa.errors import LtpaError
    from ltpa.jobs.pipeline import label_scan

    head, rest = good["graphml"].read_bytes().split(b"?>", 1)
    gml = write_text_bytes(tmp_path / "bogus.graphml",
                           b"<?xml version='1.0' encoding='bogus'?>" + rest)
    assert head.startswith(b"<?xml")
    with pytest.raises(LtpaError, match=r"field 'graphml_path': graphml file '.*bogus\.graphml' "
                                        r"could not be read \(LookupError: unknown encoding: "
                                        r"bogus\)"):
        label_scan(good["trk"], good["atlas"], tmp_path / "o.npy", graphml_path=gml)
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize("node_id", ["-9223372036854775809", "-1", "0"])
def test_graphml_node_ids_below_one_are_an_ltpa_error(tmp_path, node_id):
    """Finding 4 (OverflowError for a node id < -2^63): ids are checked before any conversion."""
    from ltpa.errors import LtpaError
    from ltpa.formats.regions import regions_from_graphml

    g = nx.Graph()
    g.add_nodes_from(["4", node_id, "9"])
    nx.write_graphml(g, str(tmp_path / "neg.graphml"))
    with pytest.raises(LtpaError, match=rf"graphml file '.*neg\.graphml' has node id {node_id}; "
                                        rf"region ids must be positive \(0 is background\)"):
        regions_from_graphml(tmp_path / "neg.graphml")


GML = '<?xml version="1.0" encoding="utf-8"?>\n<graphml xmlns="http://graphml.graphdrawing.org/xmlns">'


@pytest.mark.parametrize("case", ["edge-only nodes", "node in a node", "nested graph",
                                  "nested yEd group"])
def test_graphml_region_list_is_what_networkx_reads(good, tmp_path, case):
    """Findings 5/6: the region list is networkx's node ids (a node only an edge names counts;
    a node inside a node, or in a graph nested in a node, does not unless networkx reads it),
    checked through label_scan's sidecar against networkx itself."""
    from ltpa.jobs.pipeline import label_scan

    ids = sorted(int(n) for n in nx.read_graphml(str(good["graphml"])).nodes)
    nodes = "".join(f'<node id="{i}"/>' for i in ids[1:])
    body, extra = {
        "edge-only nodes": (f'<node id="{ids[0]}"/>{nodes}<edge source="{ids[0]}" target="777"/>'
                            f'<edge source="900" target="901"/>', [777, 900, 901]),
        "node in a node": (f'<node id="{ids[0]}"><node id="554"/></node>{nodes}', []),
        "nested graph": (f'<node id="{ids[0]}"><graph id="sub" edgedefault="undirected">'
                         f'<node id="555"/></graph></node>{nodes}', []),
        "nested yEd group": (f'<node id="{ids[0]}" yfiles.foldertype="group"><graph id="sub" '
                             f'edgedefault="undirected"><node id="556"/></graph></node>{nodes}',
                             [556]),
    }[case]
    gml = tmp_path / "g.graphml"
    gml.write_text(f'{GML}<graph edgedefault="undirected">{body}</graph></graphml>\n')
    want = sorted(int(n) for n in nx.read_graphml(str(gml)).nodes)
    assert want == sorted(ids + extra)  # networkx's reading, as documented above
    label_scan(good["trk"], good["atlas"], tmp_path / "o.npy", graphml_path=gml)
    side = json.loads((tmp_path / "o.npy.json").read_text())
    assert side["region_ids"] == want


def test_label_table_with_a_utf8_bom_reads_its_first_row(good, tmp_path):
    """Finding 7: a BOM (Excel's "CSV UTF-8") is not content, so row 1 is not a header."""
    from ltpa.jobs.pipeline import label_scan

    rows = [(1, "a"), (4, "b"), (9, "c"), (23, "d")]
    plain = "".join(f"{i}\t{n}\r\n" for i, n in rows)
    table = write_text_bytes(tmp_path / "bom.tsv", b"\xef\xbb\xbf" + plain.encode())
    label_scan(good["trk"], good["atlas"], tmp_path / "o.npy", labels_path=table)
    side = json.loads((tmp_path / "o.npy.json").read_text())
    assert side["region_ids"] == [i for i, _ in rows]
    # with a header row too
    table.write_bytes(b"\xef\xbb\xbfindex,name\n" + plain.replace("\t", ",").encode())
    from ltpa.formats.regions import regions_from_table

    assert regions_from_table(table).tolist() == [i for i, _ in rows]


def test_label_table_index_of_more_digits_than_int_reads_is_an_ltpa_error(tmp_path):
    """Finding 8 (int()'s 4300-digit limit read it as a header row): a clear error instead."""
    from ltpa.errors import LtpaError
    from ltpa.formats.regions import regions_from_table

    for k, first in enumerate([False, True]):
        table = tmp_path / f"long{k}.tsv"
        lines = ["index\tname", "3\tx", "9" * 5000 + "\ty", "7\tz"]
        if first:  # where a word would be a header row
            lines = ["9" * 5000 + "\ty", "7\tz"]
        table.write_text("\n".join(lines) + "\n")
        line = 1 if first else 3
        with pytest.raises(LtpaError, match=rf"label table '.*long{k}\.tsv' line {line}: label "
                                            rf"index too long \(5000 digits\)"):
            regions_from_table(table)


def test_local_data_with_a_number_of_5000_digits_is_an_ltpa_error(tmp_path, capfd):
    """Finding 9 (ValueError from json: more than 4300 digits)."""
    ld = tmp_path / "local_data.json"
    ld.write_text('[{"scan_id": "a", "scan_group": "g", "age": ' + "9" * 5000 + "}]")
    proc = ltpa_main(capfd, "validate", ld)
    assert_clean_failure(proc, f"local_data file '{ld}' could not be read as JSON: Exceeds the "
                               f"limit (4300 digits) for integer string conversion")


def test_local_data_scan_ids_and_unusable_paths_are_listed(tmp_path, capfd):
    """Findings 10/11: scan entries without a string scan_id, and paths with a NUL byte or a
    lone surrogate, are listed with the other problems (no TypeError/ValueError)."""
    ld = tmp_path / "local_data.json"
    ld.write_text(r'''[
 {"scan_id": "a", "scan_group": "g", "trk_file": "a/a\u0000.trk", "pkl_path": "a/a.pkl",
  "track_labels": [{"name": "x", "numpy_path": "a/\ud800x.npy", "volume_path": "a/at.nii.gz"}]},
 {"scan_group": "g", "trk_file": "b/b.trk", "pkl_path": "b/b.pkl"},
 {"scan_id": null, "scan_group": "g", "trk_file": "c/c.trk", "pkl_path": "c/c.pkl"},
 {"scan_id": "d", "scan_group": "g", "pkl_path": "d/d\u0000.pkl"}
]''')
    for cmd in ("validate", "status"):
        proc = ltpa_main(capfd, cmd, ld)
        assert_clean_failure(
            proc, f"local_data file '{ld}': 5 problems:",
            "scan #1 (None), field 'scan_id': is required",
            "scan #2 (None), field 'scan_id': is null; expected a string",
            "scan #0 ('a'), field 'trk_file': is not a usable path (a NUL byte or an invalid "
            "character)",
            "scan #0 ('a'), field 'track_labels[0].numpy_path': is not a usable path",
            "scan #3 ('d'), field 'pkl_path': is not a usable path")


def label_spec(good, out):
    """The JobSpec of ``ltpa label TRK ATLAS OUT --graphml G`` (as pipeline.label_scan builds
    it)."""
    from ltpa.study.spec import JobSpec

    return JobSpec("label", os.path.abspath(out),
                   {"trk_file": str(good["trk"]), "volume_path": str(good["atlas"]),
                    "graphml_path": str(good["graphml"])}, space="qsdr", start=1)


def test_sidecar_with_nul_or_surrogate_paths_makes_only_its_output_out_of_date(good, tmp_path):
    """Finding 12: such a sidecar is 'not an ltpa sidecar' (sidecar._check); staleness never
    hands such a path to the file system (_same_path treats ValueError as different)."""
    from ltpa.study import sidecar, staleness

    out = fresh_out(good, tmp_path, 0) / "s1.npy"
    spec = label_spec(good, out)
    assert staleness.judge_all([spec])[0].status == staleness.OK
    real = json.loads(Path(str(out) + ".json").read_text())
    cases = {"output NUL": ("output", "path", str(out) + "\x00"),
             "input NUL": ("inputs", "trk_file", "/tmp/a\x00b.trk"),
             "input surrogate": ("inputs", "graphml_path", "\ud800x.graphml"),
             "relpath NUL": ("inputs", "volume_path", "a\x00")}
    for case, (part, key, value) in cases.items():
        body = json.loads(json.dumps(real))
        if part == "output":
            body["output"]["path"] = value
        elif case.startswith("relpath"):
            body["inputs"][key]["relpath"] = value
        else:
            body["inputs"][key]["path"] = value
        Path(str(out) + ".json").write_text(json.dumps(body))
        got, why = sidecar.read(out)
        assert got is None and "is not an ltpa sidecar" in why, (case, why)
        verdict = staleness.judge_all([spec])[0]
        assert verdict.status == staleness.OUT_OF_DATE and "is not an ltpa sidecar" in \
            verdict.reason, (case, verdict)
    # _same_path on its own: a recorded path no file system can take is another file
    assert not staleness._same_path({"path": "/tmp/a\x00"}, str(good["trk"]), str(tmp_path))
    assert not staleness._same_path({"path": "/tmp/\ud800"}, str(good["trk"]), str(tmp_path))


def test_sidecar_null_input_record_for_a_field_the_job_does_not_have(good, tmp_path):
    """Finding 13 (TypeError: None['path']): a null record is no input, like an absent one."""
    from ltpa.study import staleness

    out = fresh_out(good, tmp_path, 0) / "s1.npy"
    spec = label_spec(good, out)
    side = Path(str(out) + ".json")
    body = json.loads(side.read_text())
    body["inputs"]["labels_path"] = None  # not an input of this job
    side.write_text(json.dumps(body))
    assert staleness.judge_all([spec])[0].status == staleness.OK
    body["inputs"]["graphml_path"] = None  # an input of this job that the sidecar lacks
    side.write_text(json.dumps(body))
    verdict = staleness.judge_all([spec])[0]
    assert verdict.status == staleness.OUT_OF_DATE
    assert verdict.reason == f"graphml_path was not used, now {str(good['graphml'])!r}"


def test_staleness_paths_no_file_system_takes_are_missing_files(good, tmp_path):
    """Finding 16 (ValueError / UnicodeEncodeError from os.stat): missing, not a crash."""
    from ltpa.study import staleness
    from ltpa.study.spec import JobSpec

    ok = label_spec(good, fresh_out(good, tmp_path, 0) / "s1.npy")
    bad_out = JobSpec("label", str(tmp_path / "o\x00.npy"), dict(ok.inputs), space="qsdr")
    bad_in = JobSpec("label", str(tmp_path / "o.npy"),
                     {**ok.inputs, "volume_path": str(tmp_path / "\ud800.nii.gz")}, space="qsdr")
    v_out, v_in = staleness.judge_all([bad_out, bad_in])
    assert v_out.status == staleness.MISSING and v_out.buildable
    assert v_in.status == staleness.MISSING and not v_in.buildable
    assert v_in.missing == (("volume_path", str(tmp_path / "\ud800.nii.gz")),)


SHEARED = [[1.25, 0, 0, 0], [0, 0.7, 0, 0], [5.7646075e17, 0, 3, 0], [0, 0, 0, 1]]


def test_trk_vox_to_ras_with_no_voxel_order_is_an_ltpa_error(tmp_path, capfd):
    """Findings 14/15 (ValueError in trk_affine): nibabel's io_orientation finds no RAS axis for
    one voxel axis of this vox_to_ras; the error names the trk and its vox_to_ras."""
    from nibabel.orientations import io_orientation

    from ltpa.errors import LtpaError
    from ltpa.jobs.pipeline import index_scan

    assert np.isnan(io_orientation(np.array(SHEARED))).any()  # what makes it unusable
    trk = small_native_trk(tmp_path / "sheared.trk", voxel_to_rasmm=SHEARED)
    with pytest.raises(LtpaError, match=r"file '.*sheared\.trk': the trk header's vox_to_ras "
                                        r"\[1\.25 0 0 0; 0 0\.7 0 0; 5\.76461e\+17 0 3 0\] has a "
                                        r"voxel axis that points along no RAS axis"):
        index_scan(trk, tmp_path / "o.pkl", space="native")
    proc = ltpa_main(capfd, "index", trk, tmp_path / "o.pkl", "--space", "native")
    assert_clean_failure(proc, f"file '{trk}': the trk header's vox_to_ras")
    # all zeros is "no vox_to_ras": the diagonal grid of the voxel order, as before
    index_scan(small_native_trk(tmp_path / "zeros.trk", voxel_to_rasmm=np.zeros((4, 4))),
               tmp_path / "z.pkl", space="native")


@pytest.mark.parametrize("order", [b"ABC", b"LLS", b"RPR"])
def test_trk_voxel_order_that_is_no_orientation_is_an_ltpa_error(tmp_path, order):
    """Found beside 14/15 (the same ValueError in trk_affine): three letters that are no
    voxel order."""
    from ltpa.errors import LtpaError
    from ltpa.jobs.pipeline import index_scan

    trk = small_native_trk(tmp_path / "order.trk", voxel_order=order)
    with pytest.raises(LtpaError, match=rf"order\.trk': the trk header's voxel_order "
                                        rf"'{order.decode()}' is not a voxel order; expected one "
                                        rf"letter of L/R, one of A/P and one of I/S"):
        index_scan(trk, tmp_path / "o.pkl", space="native")


def test_atlas_affine_with_no_voxel_order_is_refused_not_a_crash(good, tmp_path):
    """Finding 15 (ValueError in conform_plan): an atlas whose affine nibabel cannot orient is
    'not the streamlines' grid', naming the atlas."""
    from ltpa.errors import LtpaError
    from ltpa.jobs.pipeline import label_scan

    img = nib.load(str(good["atlas"]))
    affine = QSDR_AFFINE.copy()
    affine[0, 2] = 3.4e38
    path = tmp_path / "sheared.nii"
    nib.Nifti1Image(np.asanyarray(img.dataobj), affine).to_filename(str(path))
    with pytest.raises(LtpaError, match=r"field 'volume_path': atlas file '.*sheared\.nii' has "
                                        r"shape \(79, 95, 69\) and affine .* but the streamlines' "
                                        r"grid is \(79, 95, 69\)"):
        label_scan(good["trk"], path, tmp_path / "o.npy", graphml_path=good["graphml"])

"""Trust the files (#10): no raw data overwritten, no stale or mixed outputs kept as up to date.

Each case runs through the ``ltpa`` command or a real Snakemake run and ends in a correct
result or a clear error naming scan, field and file, with every input and every good output
byte-identical afterwards.

The commands run here as ``ltpa.cli.main`` in process (``ltpa_main``: the same code, its exit
status and what it wrote on fds 1 and 2; TMPDIR set with monkeypatch, tempfile's cached folder
reset). The real ``ltpa`` command runs where the process itself is the point: a job whose .trk
changes while it is stopped (SIGSTOP; also: a failing job step prints no traceback), the peak
memory of each step in a fresh process, and ``ltpa status | head -1`` (a closed stdout pipe).
A Snakemake job left running by a SIGKILLed driver is a real process too.
"""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    BIN,
    SNAKEFILE,
    SNAKEMAKE,
    ltpa_main,
    planned_jobs,
    run_snakemake,
    study_folder,
)
from ltpa import load_track_dataset
from ltpa.demo.small import make_demo, make_streamlines
from ltpa.formats.grids import MNI_DIM, QSDR_AFFINE, QSDR_DIM
from ltpa.formats.trkwrite import write_trk
from reference import hash_slow

LTPA = str(BIN / "ltpa")


def qsdr_key(v):
    return (v[0] + 6, 101 - v[1], v[2] + 11)


def files_of(folder):
    """{relative path: bytes} of every file under ``folder`` (for byte-identity checks), but the
    study folder's caches (header facts and schema checks, rebuilt at will)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and "cache" not in p.relative_to(folder).parts}


def validate(local_data):
    """``ltpa validate LOCAL_DATA``, in process (it only prints)."""
    return ltpa_main(None, "validate", local_data)


def edit(local_data, fn):
    data = json.loads(Path(local_data).read_text())
    fn(data)
    Path(local_data).write_text(json.dumps(data, indent=1))


@pytest.fixture
def study(tmp_path):
    return make_demo(tmp_path / "study", n_scans=3, seed=2, n_per_side=8, n_background=4)


# --------------------------------------------------------------------------- aliasing (#10.2)

ALIASES = {
    # case: (edit of the JSON, fragment of the expected error)
    "pkl over another scan's trk": (
        lambda d: d[1].update(pkl_path="s1/s1.trk"),
        "scan #1 ('s2'), field 'pkl_path' '{study}/s1/s1.trk': is an input (scan #0 ('s1'), "
        "field 'trk_file' '{study}/s1/s1.trk'); refusing to overwrite raw data"),
    "pkl over the study JSON": (
        lambda d: d[0].update(pkl_path="local_data.json"),
        "scan #0 ('s1'), field 'pkl_path' '{study}/local_data.json': is the study's "
        "local_data.json itself; refusing to overwrite it"),
    "npy over a graphml": (
        lambda d: d[2]["track_labels"][0].update(numpy_path="atlases/scale60.graphml"),
        "field 'track_labels[0].numpy_path' '{study}/atlases/scale60.graphml': is an input"),
    "npy over a labels table": (
        lambda d: d[0]["track_labels"][1].update(labels_path="s1/table.tsv",
                                                 graphml_path=None, numpy_path="s1/table.tsv"),
        "field 'track_labels[1].numpy_path' '{study}/s1/table.tsv': is an input"),
    "pkl_trk over the pkl's sidecar": (
        lambda d: d[0].update(pkl_trk_path="s1/s1.pkl.json"),
        "scan #0 ('s1'), field 'pkl_trk_path' '{study}/s1/s1.pkl.json': is also written as the "
        "sidecar of scan #0 ('s1'), field 'pkl_path'"),
    "two scans, one npy": (
        lambda d: d[1]["track_labels"][0].update(numpy_path="s1/scale33.npy"),
        "is also written as scan #0 ('s1'), field 'track_labels[0].numpy_path'"),
}


def _alias(study, case):
    change, fragment = ALIASES[case]
    folder = study.parent
    (folder / "s1" / "table.tsv").write_text("index\tname\n10\trh\n51\tlh\n83\tstem\n")
    edit(study, change)
    return fragment.format(study=folder)


@pytest.mark.parametrize("case", sorted(ALIASES))
def test_an_output_that_aliases_an_input_is_refused_by_validate_and_status(study, case):
    expected = _alias(study, case)
    before = files_of(study.parent)
    proc = validate(study)
    assert proc.returncode == 1 and expected in proc.stderr, proc.stderr
    status = ltpa_main(None, "status", study)
    assert status.returncode == 1 and expected in status.stderr
    assert files_of(study.parent) == before


@pytest.mark.slow
def test_an_output_that_aliases_an_input_is_refused_before_any_job(tmp_path, study):
    """The workflow makes the same check (one study function) before any job; the error ends
    without Python frames."""
    expected = _alias(study, "pkl over another scan's trk")
    assert "refusing to overwrite raw data" in expected
    before = files_of(study.parent)
    for args in (("-n",), ()):  # dry run and run: refused before any job
        run = run_snakemake(tmp_path / "work", *args, local_data=study, check=False)
        assert run.returncode == 1 and expected in run.output, run.output[-3000:]
        assert 'File "' not in run.output and "Traceback" not in run.output, run.output[-2000:]
    assert files_of(study.parent) == before


@pytest.mark.slow
def test_outputs_through_a_symlinked_folder_that_reach_raw_data(tmp_path, study):
    """A folder symlink makes pkl_path the raw trk: refused, and --forcerun deletes nothing."""
    folder = study.parent
    os.symlink(folder / "s1", folder / "derived")
    edit(study, lambda d: d[0].update(pkl_path="derived/s1.trk"))
    before = files_of(folder)
    expected = (f"field 'pkl_path' '{folder}/derived/s1.trk': is an input (scan #0 ('s1'), "
                f"field 'trk_file' '{folder}/s1/s1.trk')")
    for args in (("-n",), ("--forcerun", "index_streamlines")):
        run = run_snakemake(tmp_path / "work", *args, local_data=study, check=False)
        assert run.returncode != 0 and expected in run.output, run.output[-3000:]
    assert files_of(folder) == before


def test_a_folder_or_a_symlink_at_an_output_path_is_refused(tmp_path, study):
    folder = study.parent
    (folder / "s1" / "scale33.npy").mkdir()
    (folder / "elsewhere.npy").write_bytes(b"not ours")
    os.symlink(folder / "elsewhere.npy", folder / "s2" / "scale60.npy")
    proc = validate(study)
    assert proc.returncode == 1
    assert (f"scan #0 ('s1'), field 'track_labels[0].numpy_path' '{folder}/s1/scale33.npy': "
            f"is an existing folder, not a file") in proc.stderr
    assert (f"scan #1 ('s2'), field 'track_labels[1].numpy_path' '{folder}/s2/scale60.npy': "
            f"is a symbolic link") in proc.stderr
    assert (folder / "elsewhere.npy").read_bytes() == b"not ours"


def test_outputs_that_differ_only_by_case_warn(study):
    edit(study, lambda d: d[1].update(pkl_path="s1/S1.pkl"))
    proc = validate(study)
    assert proc.returncode == 0, proc.stderr
    assert ("differs only by letter case from scan #0 ('s1'), field 'pkl_path'"
            in proc.stderr)


def test_the_cli_refuses_to_write_over_its_input(tmp_path, study, capfd):
    folder = study.parent
    trk = folder / "s1" / "s1.trk"
    before = trk.read_bytes()
    atlas = folder / "s1" / "s1.scale33.QSDR.nii.gz"
    cases = [
        (["index", trk, trk], f"output {str(trk)!r} is the job's input trk_file"),
        (["index", trk, str(trk)[:-4] + "/../s1.trk"], "is the job's input trk_file"),
        (["label", trk, atlas, atlas], f"output {str(atlas)!r} is the job's input "
                                       f"volume_path"),
        (["index", trk, folder / "s1" / "x.pkl", "--trk-out", trk], "is the job's input"),
    ]
    for args, fragment in cases:
        proc = ltpa_main(capfd, *args)
        assert proc.returncode == 1 and fragment in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert trk.read_bytes() == before


# --------------------------------------------------------------------------- changed during a job


def big_trk(path, n_blocks=40, seed=5):
    """A QSDR trk big enough (~30 MB) that a job on it can be caught while it reads."""
    rng = np.random.default_rng(seed)
    sls = []
    for _ in range(n_blocks):
        part, _ = make_streamlines(rng, 400, 0)
        sls += part
    write_trk(path, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    return sls


@pytest.fixture(scope="module")
def big_trk_file(tmp_path_factory):
    """``big_trk``'s file (40 blocks, seed 5), made once for the module: tests copy it."""
    path = tmp_path_factory.mktemp("big") / "big.trk"
    big_trk(path)
    return path


def wait_until_open(pids, path, timeout=60):
    """The pid (of ``pids()``) that has ``path`` open, once one does."""
    import psutil

    path = os.path.realpath(path)
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in pids():
            try:
                if any(f.path == path for f in psutil.Process(pid).open_files()):
                    return pid
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.005)
    raise AssertionError(f"no process opened {path}")


def start_cli(*args):
    return subprocess.Popen([LTPA, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("how", ["replaced", "cut", "rewritten"])
def test_a_trk_changed_while_its_job_runs_fails_the_job_and_writes_nothing(tmp_path, how,
                                                                           big_trk_file):
    """The real command (stopped with SIGSTOP while it reads the file)."""
    trk = tmp_path / "s.trk"
    shutil.copyfile(big_trk_file, trk)
    out = tmp_path / "s.pkl"
    out.write_bytes(b"previous good output")
    proc = start_cli("index", trk, out, "--scan-id", "s1")
    pid = wait_until_open(lambda: [proc.pid], trk)
    os.kill(pid, signal.SIGSTOP)
    try:
        if how == "replaced":  # a new file renamed over the path (as every tool saves)
            other = tmp_path / "new.trk"
            big_trk(other, n_blocks=2, seed=9)
            os.replace(other, trk)
        elif how == "cut":  # truncated in place while it is being read
            with open(trk, "r+b") as fh:
                fh.truncate(os.path.getsize(trk) // 3)
        else:  # rewritten in place, same size, other content
            data = bytearray(trk.read_bytes())
            data[5000:5004] = b"\x00\x00\x80\x7f"
            with open(trk, "r+b") as fh:
                fh.write(bytes(data))
    finally:
        os.kill(pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "Bus error" not in err
    assert "scan 's1', field 'trk_file': file " in err
    assert ("while the job ran" in err or "while it was read" in err), err
    assert out.read_bytes() == b"previous good output"
    assert not (tmp_path / "s.pkl.json").exists()
    assert not [p for p in tmp_path.iterdir() if "ltpa-tmp" in p.name]


@pytest.mark.slow
def test_an_orphaned_job_cannot_put_an_old_result_over_a_new_one(tmp_path, big_trk_file):
    """Driver SIGKILLed, its job still running; the scan is pointed at another trk and rerun.

    The rerun's job for that output fails at once (the orphan holds the output's lock); when
    the orphan finishes, its result records the old trk, so the next run rebuilds it from
    the new one: never a stale pkl counted as up to date.
    """
    import psutil

    folder = tmp_path / "study"
    local_data = make_demo(folder, n_scans=2, seed=3, n_per_side=8, n_background=4)
    old = folder / "s1" / "s1.trk"
    shutil.copyfile(big_trk_file, old)
    work = tmp_path / "work"
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    cmd = [SNAKEMAKE, "-s", SNAKEFILE, "-d", str(work), "--cores", "1", "--config",
           f"local_data={local_data}", "qc=False"]
    driver = subprocess.Popen(cmd[:7] + [str(folder / "s1" / "s1.pkl")] + cmd[7:],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    # the job: forked from the warm job server, so found by the file it reads
    orphan = wait_until_open(lambda: [p.pid for p in psutil.process_iter()], old, timeout=120)
    os.kill(orphan, signal.SIGSTOP)
    driver.kill()
    driver.wait()
    try:
        # the user points s1 at another trk and runs again
        new = folder / "s1" / "s1_retracked.trk"
        new_sls = big_trk(new, n_blocks=3, seed=11)
        edit(local_data, lambda d: d[0].update(trk_file="s1/s1_retracked.trk"))
        # what `snakemake --unlock` does (the locks the killed driver left), without a run
        for lock in (work / ".snakemake" / "locks").iterdir():
            lock.unlink()
        rerun = run_snakemake(work, local_data=local_data, check=False)
        assert rerun.returncode != 0
        assert (f"output '{folder}/s1/s1.pkl' is being written by another ltpa job "
                f"(pid {orphan})") in rerun.output
        assert (folder / "s2" / "s2.pkl").exists()  # the other scans went on
    finally:
        os.kill(orphan, signal.SIGCONT)
    psutil.Process(orphan).wait(timeout=120)
    # the orphan's pkl is there now, built from the old trk: out of date, rebuilt
    pkl = folder / "s1" / "s1.pkl"
    assert load_track_dataset(pkl).build["trk_file"] == str(old)
    proc = run_snakemake(work, "-n", local_data=local_data)
    assert ("index_streamlines", str(pkl)) in planned_jobs(proc.output)
    status = ltpa_main(None, "status", local_data, "--tsv")
    row = next(r.split("\t") for r in status.stdout.splitlines() if f"\t{pkl}\t" in r)
    assert row[0] == "out of date" and "trk_file was" in row[4]
    # rebuilt at once after the pkl's last write (a rebuild stamp dated 2 s after the pkl
    # once made Snakemake fail such a job, the new pkl "older" than the stamp: test_stamps)
    os.utime(pkl)
    run = run_snakemake(work, local_data=local_data)
    assert ("index_streamlines", str(pkl)) in planned_jobs(run.output)  # it ran
    ds = load_track_dataset(pkl)
    assert {k: ds.tracks_at_ijk[k].tolist() for k in ds.tracks_at_ijk} == hash_slow(
        new_sls, (2, 2, 2), qsdr_key, MNI_DIM)
    assert planned_jobs(run_snakemake(work, "-n", local_data=local_data).output) == []


# --------------------------------------------------------------------------- sidecars (#10.5)

BAD_SIDECARS = {
    "not json": b"{not json",
    "a list": b"[1]",
    "wrong types": json.dumps({"sidecar_version": 2, "kind": "connection_ids", "build": "space",
                               "output": {"path": 3}, "inputs": [], "params": {}}).encode(),
    "a number for a path": None,  # made in the test from a real sidecar
    "huge": b" " * (17 << 20) + b"{}",
}


def status_rows(local_data):
    """``ltpa status --tsv`` in process: the result and {output: its row's fields}."""
    status = ltpa_main(None, "status", local_data, "--tsv")
    return status, {r.split("\t")[3]: r.split("\t") for r in status.stdout.splitlines()[1:]}


@pytest.mark.slow
def test_bad_sidecars_make_their_output_out_of_date_and_nothing_else(tmp_path, study):
    folder = study.parent
    work = tmp_path / "work"
    run_snakemake(work, local_data=study)
    real = json.loads((folder / "s3" / "scale33.npy.json").read_text())
    real["inputs"]["trk_file"]["path"] = 12
    bad = dict(BAD_SIDECARS, **{"a number for a path": json.dumps(real).encode()})
    # no victim in s2: it is the archived scan below
    victims = {"not json": folder / "s1" / "scale33.npy", "a list": folder / "s3" / "s3.pkl",
               "wrong types": folder / "s3" / "scale60.npy",
               "a number for a path": folder / "s3" / "scale33.npy",
               "huge": folder / "s1" / "s1.pkl.trk"}
    for case, out in victims.items():
        Path(str(out) + ".json").write_bytes(bad[case])
    status, rows = status_rows(study)
    assert status.returncode == 1 and "Traceback" not in status.stderr
    for case, out in victims.items():
        row = rows[str(out)]
        assert row[0] == "out of date" and f"{out}.json" in row[4], (case, row)
    assert {r[0] for p, r in rows.items() if Path(p) not in victims.values()} == {"ok"}
    dry = run_snakemake(work, "-n", local_data=study)
    assert "Traceback" not in dry.output
    assert sorted(p for _, p in planned_jobs(dry.output)) == sorted(map(str, victims.values()))
    # one run: the victims rebuilt over their bad sidecars, and an archived scan with a bad
    # sidecar kept with a warning, and the QC of the study runs
    (folder / "s2" / "s2.trk").unlink()
    Path(str(folder / "s2" / "scale60.npy") + ".json").write_bytes(b"[1]")
    proc = run_snakemake(work, local_data=study, qc=True)
    assert "Traceback" not in proc.output
    assert set(map(str, victims.values())) <= {p for _, p in planned_jobs(proc.output)}
    _, rows = status_rows(study)
    assert {rows[str(out)][0] for out in victims.values()} == {"ok"}
    assert f"{folder}/s2/scale60.npy.json' is not an ltpa sidecar" in proc.output
    summary = (study_folder(study) / "qc" / "summary.tsv").read_text()
    assert summary.count("\ns2\t") == 2 and summary.count("\ns1\t") == 2
    from ltpa.qc.tables import read_tsv

    rows = read_tsv(study_folder(study) / "qc" / "summary.tsv")
    assert all("archived" in r["flags"] for r in rows if r["scan_id"] == "s2")
    assert not any("archived" in r["flags"] for r in rows if r["scan_id"] != "s2")


# ------------------------------------------------------------------ damaged .tck / .trx (#10.6)


@pytest.fixture
def tck_and_trx(tmp_path, rng):
    import nibabel as nib
    from trx.trx_file_memmap import TrxFile, save

    sls = [(rng.uniform(-60, 60, (int(rng.integers(2, 30)), 3))).astype(np.float32)
           for _ in range(40)]
    tg = nib.streamlines.Tractogram(sls, affine_to_rasmm=np.eye(4))
    tck = tmp_path / "s.tck"
    nib.streamlines.TckFile(tg).save(str(tck))
    ref = nib.Nifti1Image(np.zeros(QSDR_DIM, np.int16), QSDR_AFFINE)
    trx_obj = TrxFile.from_tractogram(tg, reference=ref)
    trx = tmp_path / "s.trx"
    save(trx_obj, str(trx))
    trx_obj.close()
    return tck, trx, sls


def tck_parts(tck):
    raw = tck.read_bytes()
    end = raw.index(b"\nEND\n") + 5
    head = raw[:end].decode("latin-1")
    offset = int(next(line for line in head.splitlines() if line.startswith("file:")).split()[2])
    return raw, head, offset


def with_file_field(raw, head, value):
    """The .tck with its 'file:' header line replaced (padded so the data do not move)."""
    old = next(line for line in head.splitlines() if line.startswith("file:"))
    new = f"file: {value}".ljust(len(old))
    return raw.replace(old.encode(), new.encode(), 1)


def test_damaged_tck_and_trx_are_refused_naming_the_users_file(tmp_path, tck_and_trx, capfd):
    import zipfile

    tck, trx, sls = tck_and_trx
    raw, head, offset = tck_parts(tck)
    data = np.frombuffer(raw[offset:], "<f4").reshape(-1, 3)
    seps = np.flatnonzero(np.isnan(data[:, 0]))
    cases = {
        # cut at a streamline boundary: whole streamlines, no end-of-file marker, count larger
        "cut.tck": (raw[:offset + 12 * (int(seps[24]) + 1)], "no end-of-file marker"),
        "last unterminated.tck": (raw[:offset + 12 * int(seps[-1])] + raw[-12:],
                                  "has no terminator"),
        "past end.tck": (with_file_field(raw, head, ". 999999"),
                         "data start at byte 999999, but the header ends at byte"),
        "negative.tck": (with_file_field(raw, head, ". -8"), "data start at byte -8"),
        "no number.tck": (with_file_field(raw, head, ". x"), "is not '. <offset>'"),
        "count.tck": (raw.replace(b"count: 0000000040", b"count: 0000000041"),
                      "header count says 41 streamlines but the file holds 40"),
    }
    with zipfile.ZipFile(trx) as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    off_name = next(n for n in members if n.startswith("offsets."))
    offsets = np.frombuffer(members[off_name], off_name.split(".")[-1]).copy()

    def trx_with(**changed):
        buf = tmp_path / "tmp.zip"
        with zipfile.ZipFile(buf, "w") as z:
            for name, blob in {**members, **changed}.items():
                z.writestr(name, blob)
        return buf.read_bytes()

    low = offsets.copy()
    low[-1] -= 3  # the last offset below the vertex count: points would be dropped
    back = offsets.copy()
    back[5] = back[7]
    cases["low last offset.trx"] = (trx_with(**{off_name: low.tobytes()}),
                                    "offsets must run from 0 to NB_VERTICES")
    cases["decreasing.trx"] = (trx_with(**{off_name: back.tobytes()}), "and decrease")
    cases["cut.trx"] = (trx.read_bytes()[:-100], "not a readable .trx file")
    cases["no header.trx"] = (trx_with(**{"header.json": b"{"}), "header.json is not valid JSON")
    cases["short positions.trx"] = (
        trx_with(**{n: b[:-12] for n, b in members.items() if n.startswith("positions")}),
        "needs")
    assert raw.count(b"count: 0000000040") == 1, head
    for name, (blob, fragment) in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        out = tmp_path / (name + ".pkl")
        proc = ltpa_main(capfd, "index", path, out, "--scan-id", "s9")
        assert proc.returncode == 1, (name, proc.stderr)
        assert f"scan 's9', field 'trk_file': file {str(path)!r}" in proc.stderr, \
            (name, proc.stderr)
        assert fragment in proc.stderr, (name, proc.stderr)
        assert "Traceback" not in proc.stderr and "/tmp/ltpa-" not in proc.stderr.replace(
            str(tmp_path), "")
        assert not out.exists()
    # the undamaged files: the same streamlines as nibabel reads
    for path in (tck, trx):
        out = tmp_path / (path.name + ".pkl")
        proc = ltpa_main(capfd, "index", path, out)
        assert proc.returncode == 0, proc.stderr
        assert load_track_dataset(out).get_ntracks() == len(sls)


# ------------------------------------------------------------------ bounded resources (#10.7)


def raw_trk(path, body_words, n_count):
    from ltpa.formats.trkwrite import make_header

    hdr = make_header(QSDR_DIM, (2.0, 2.0, 2.0), "LPS", QSDR_AFFINE, n_count)
    with open(path, "wb") as fh:
        fh.write(hdr.tobytes())
        fh.write(np.ascontiguousarray(body_words).tobytes())


@pytest.fixture(scope="module")
def gz_zeros_1gib():
    """1 GiB of zeros gzipped (~1 MB): 16 gzip members of 64 MiB of zeros each, the one member
    compressed once (Python's gzip, which ltpa reads .gz with, reads multi-member files)."""
    member = gzip.compress(bytes(64 << 20), compresslevel=9, mtime=0)
    return member * 16


@pytest.mark.parametrize("n_count", [10, 0])
def test_a_gzip_bomb_is_refused_without_filling_tmpdir(tmp_path, n_count, gz_zeros_1gib,
                                                       monkeypatch, capfd):
    """In process, TMPDIR set (tempfile reads it again: its cached folder is reset)."""
    from ltpa.formats.trkwrite import make_header

    header = make_header(QSDR_DIM, (2.0, 2.0, 2.0), "LPS", QSDR_AFFINE, n_count).tobytes()
    bomb = tmp_path / "bomb.trk.gz"
    # the header, then 1 GiB of zeros: 268 M zero-length streamlines
    bomb.write_bytes(gzip.compress(header, mtime=0) + gz_zeros_1gib)
    assert bomb.stat().st_size < 2 << 20
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    t0 = time.time()
    proc = ltpa_main(capfd, "index", bomb, tmp_path / "b.pkl")
    assert tempfile.gettempdir() == str(tmp)  # the folder the run's temporary files went to
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    if n_count:
        assert "header n_count says 10 streamlines but the file holds more" in proc.stderr
    else:
        assert "decompresses to more than 20 times its size" in proc.stderr
    assert list(tmp.iterdir()) == [] and time.time() - t0 < 60


def peak_rss_mb(cmd):
    """Peak RSS (MB) of ``cmd`` run in a fresh process (ru_maxrss of the waited child)."""
    code = ("import resource, subprocess, sys\n"
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.stderr.write(p.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, cmd)], capture_output=True,
                          text=True)
    rc, kb = proc.stdout.split()
    assert rc == "0", proc.stderr[-2000:]
    return int(kb) / 1024


@pytest.mark.slow
def test_peak_memory_stays_within_the_rules_formula_for_any_shape(tmp_path):
    """The resources each rule asks for (ltpa.study.resources.mem_mb) bound the job, degenerate
    or not."""
    from ltpa.study.resources import mem_mb
    from ltpa.study.spec import JobSpec

    rng = np.random.default_rng(0)
    shapes = {}
    n = 6_000_000  # zero-length streamlines: 4 bytes each, the most streamlines per MB
    raw_trk(tmp_path / "zero.trk", np.zeros(n, "<i4"), n)
    shapes["zero-length"] = tmp_path / "zero.trk"
    m = 5_000_000  # one streamline of 5 M points (60 MB)
    body = np.empty(1 + 3 * m, "<f4")
    body.view("<i4")[0] = m
    body[1:] = (rng.uniform(0, 1, (m, 3)) * np.array(QSDR_DIM) * 2).ravel()
    raw_trk(tmp_path / "giant.trk", body, 1)
    shapes["one giant"] = tmp_path / "giant.trk"
    k = 2_000_000  # one point each: a new (voxel, streamline) pair per point
    body = np.empty((k, 4), "<f4")
    body.view("<i4")[:, 0] = 1
    body[:, 1:] = rng.uniform(0, 1, (k, 3)) * np.array(QSDR_DIM) * 2
    raw_trk(tmp_path / "onept.trk", body.ravel(), k)
    shapes["one point each"] = tmp_path / "onept.trk"
    demo = make_demo(tmp_path / "demo", n_scans=1, seed=1).parent
    shapes["demo"] = demo / "s1" / "s1.trk"
    atlas = demo / "s1" / "s1.scale33.QSDR.nii.gz"
    export = ("from ltpa.jobs.pipeline import export_key_trk; import sys; "
              "export_key_trk(sys.argv[1], sys.argv[2])")
    runs = []
    for k, (name, trk) in enumerate(shapes.items()):
        out = tmp_path / f"out{k}"  # a folder per shape: its runs go on beside the others'
        out.mkdir()
        jobs = {
            "index": ([LTPA, "index", trk, out / "o.pkl"], {"trk_file": str(trk)}),
            "label": ([LTPA, "label", trk, atlas, out / "o.npy"],
                      {"trk_file": str(trk), "volume_path": str(atlas)}),
            "export": ([sys.executable, "-c", export, trk, out / "o.trk"],
                       {"trk_file": str(trk)}),
        }
        for step, (cmd, inputs) in jobs.items():
            runs.append((name, step, cmd, mem_mb(JobSpec(step, str(out / "o"), inputs))))
    # each in its own fresh process (its own peak), two at a time (no swap here to lower one)
    with ThreadPoolExecutor(2) as pool:
        peaks = list(pool.map(lambda run: peak_rss_mb(run[2]), runs))
    for (name, step, _, bound), peak in zip(runs, peaks):
        assert peak <= bound, (name, step, peak, bound)


# ------------------------------------------------------------------ no raw tracebacks (#10.8)


def write_graphml_ids(path, ids):
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(str(i) for i in ids)
    nx.write_graphml(g, str(path))


def test_huge_atlas_labels_and_node_ids_label_correctly(tmp_path, capfd):
    """Labels >= 2^31 (a table indexed by label would need GiBs) use a compact map."""
    import nibabel as nib

    from reference import label_slow

    rng = np.random.default_rng(4)
    sls, _ = make_streamlines(rng, 20, 5)
    trk = tmp_path / "s.trk"
    write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    from ltpa.demo.small import atlas_volume

    small = atlas_volume("scale33").astype(np.int64)
    big_labels = {83: 2**40 + 7, 51: 2**31, 10: 2**62 + 1}
    data = np.zeros(QSDR_DIM, np.int64)
    for old, new in big_labels.items():
        data[small == old] = new
    nib.Nifti1Image(data, QSDR_AFFINE, dtype=np.int64).to_filename(str(tmp_path / "big.nii.gz"))
    regions = sorted(list(big_labels.values()) + [5, 2**50])
    write_graphml_ids(tmp_path / "big.graphml", regions)
    out = tmp_path / "big.npy"
    proc = ltpa_main(capfd, "label", trk, tmp_path / "big.nii.gz", out, "--graphml",
                     tmp_path / "big.graphml")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(out), label_slow(sls, data, (2.0, 2.0, 2.0), regions))
    assert (np.load(out) > 0).sum() >= 20
    side = json.loads((tmp_path / "big.npy.json").read_text())
    assert side["region_ids"] == regions


def test_labels_and_ids_beyond_int64_are_clear_errors(tmp_path, capfd):
    import nibabel as nib

    demo = make_demo(tmp_path / "d", n_scans=1, seed=1, n_per_side=4, n_background=2).parent
    trk = demo / "s1" / "s1.trk"
    data = np.zeros(QSDR_DIM, np.uint64)
    data[40, 50, 20] = np.uint64(2**64 - 2)
    nib.Nifti1Image(data, QSDR_AFFINE, dtype=np.uint64).to_filename(str(tmp_path / "u64.nii.gz"))
    write_graphml_ids(tmp_path / "huge.graphml", [1, 2**70])
    cases = [
        ([trk, tmp_path / "u64.nii.gz", tmp_path / "a.npy"],
         "has label 18446744073709551614, larger than 2^63 - 1"),
        ([trk, demo / "s1" / "s1.scale33.QSDR.nii.gz", tmp_path / "b.npy", "--graphml",
          tmp_path / "huge.graphml"], "has node id 1180591620717411303424, larger than 2^63 - 1"),
    ]
    for args, fragment in cases:
        proc = ltpa_main(capfd, "label", *args)
        assert proc.returncode == 1 and fragment in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "negative" not in proc.stderr


def test_deeply_nested_json_and_a_closed_pipe_are_no_tracebacks(tmp_path, study):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    proc = validate(deep)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "nested more than" in proc.stderr
    nested = [{"scan_id": "a", "scan_group": "g", "attributes": {}}]
    inner = nested[0]["attributes"]
    for _ in range(500):
        inner["x"] = {}
        inner = inner["x"]
    deep.write_text(json.dumps(nested))
    proc = validate(deep)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "nested more than" in proc.stderr
    # `ltpa status | head -1` (the real command): the reader goes away; no BrokenPipeError
    # traceback
    proc = subprocess.run(f"'{LTPA}' status '{study}' | head -1", shell=True,
                          capture_output=True, text=True)
    assert proc.stdout.strip() == "s1 (control)"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_a_study_folder_with_braces_is_a_clear_early_error(tmp_path, capfd):
    local_data = make_demo(tmp_path / "study {x}", n_scans=1, seed=1, n_per_side=4,
                           n_background=2)
    proc = run_snakemake(tmp_path / "work", "-n", local_data=local_data, check=False)
    assert proc.returncode == 1
    assert (f"path '{local_data.parent}/s1/s1.trk' contains '{{x}}', which Snakemake reads as "
            f"a wildcard") in proc.output
    assert "Traceback" not in proc.output and 'File "' not in proc.output
    # the command line processes it as it is
    folder = local_data.parent
    proc = ltpa_main(capfd, "index", folder / "s1" / "s1.trk", folder / "s1" / "s1.pkl")
    assert proc.returncode == 0, proc.stderr
    assert load_track_dataset(folder / "s1" / "s1.pkl").get_ntracks() > 0

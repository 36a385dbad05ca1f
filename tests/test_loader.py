"""The pkl format and its loader: versioned state, old files, and no code from a file.

The claim "loading a pkl runs nothing from it" is tested three ways: the exploit of issue #10
(which ran a shell command through the first release's loader) and one payload per opcode
family, each in a fresh ``python`` process with a marker file it would create; a bounded run
of benchmarks/fuzz_pkl.py (hand-built payloads plus mutated real pkls, with an audit hook that
records any exec/compile/import/system/open during a load); and the format checks below.
"""

import importlib.util
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, REPO
from ltpa import LtpaError, load_track_dataset
from ltpa.dataset import FORMAT_VERSION, save_track_dataset
from ltpa.formats.grids import MNI_DIM
from ltpa.jobs.pipeline import index_scan
from reference import hash_slow, read_trk_slow

DATA = Path(__file__).parent / "data"
V0 = DATA / "track_dataset_v0.pkl"
V0_TRK = DATA / "track_dataset_v0.trk"


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz_pkl", REPO / "benchmarks" / "fuzz_pkl.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def qsdr_key(v):
    return (v[0] + 6, 101 - v[1], v[2] + 11)


def global_names(data):
    """'module name' of every global a pickle refers to (STACK_GLOBAL after two strings)."""
    import pickletools

    strings, out = [], set()
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            out.add(f"{strings[-2]} {strings[-1]}")
        elif op.name == "GLOBAL":
            out.add(arg)
    return out


def as_dict(ds):
    return {k: ds.tracks_at_ijk[k].tolist() for k in ds.tracks_at_ijk}


# --------------------------------------------------------------------------- formats


def test_first_release_pkl_still_loads_and_equals_the_reference():
    """tests/data/track_dataset_v0.pkl was written by main at 35c4912 (format 0)."""
    sls = read_trk_slow(V0_TRK)
    ref = hash_slow(sls, (2, 2, 2), qsdr_key, MNI_DIM)
    for ds in (load_track_dataset(V0), pickle.loads(V0.read_bytes())):
        assert as_dict(ds) == ref
        assert ds.scan_id == "fx1" and ds.properties["attributes"] == {"age": 30, "sex": "F"}
        assert ds.get_ntracks() == len(sls)
        for s in (0, len(sls) - 1):  # key-grid voxmm: x as stored, y flipped, z shifted
            want = (np.asarray(sls[s], np.float32) * np.float32([1, -1, 1])
                    + np.float32([12, 204, 22]))
            np.testing.assert_allclose(ds.tracks[s], want, rtol=0, atol=1e-4)
        assert ds.header["dimensions"].tolist() == list(MNI_DIM)
        ds.verify()


def test_format_1_round_trip_plain_pickle_and_in_place_arrays(tmp_path):
    ds0 = load_track_dataset(V0)
    out = tmp_path / "v1.pkl"
    save_track_dataset(ds0, out)
    # a plain pickle stream of (ltpa.dataset._restore, (state,)) with a versioned state
    data = out.read_bytes()
    assert global_names(data) <= {"ltpa.dataset _restore", "numpy dtype",
                                  "numpy._core.numeric _frombuffer",
                                  "numpy.core.numeric _frombuffer"}
    for ds in (load_track_dataset(out), pickle.loads(data)):
        assert as_dict(ds) == as_dict(ds0)
        assert ds.properties == ds0.properties and ds.build == ds0.build
        assert ds.header.tobytes() == ds0.header.tobytes()
        assert ds._state()["version"] == FORMAT_VERSION == 1


def straight_streamlines(rng, n):
    """``n`` straight streamlines between random points of the QSDR grid, ~1 mm steps: each
    crosses ~60 voxels that few others cross (many distinct voxels for few points); then each
    again, reversed (every voxel's list holds two ids or more)."""
    from ltpa.formats.grids import QSDR_DIM

    extent = np.array(QSDR_DIM) * 2.0
    out = []
    for _ in range(n):
        a, b = rng.uniform(0, extent, (2, 3))
        t = np.linspace(0.0, 1.0, max(int(np.linalg.norm(b - a)), 2))[:, None]
        out.append((a + t * (b - a)).astype(np.float32))
    return out + [s[::-1].copy() for s in out]


def test_big_arrays_are_aligned_and_read_in_place(tmp_path, rng):
    from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
    from ltpa.formats.trkwrite import write_trk

    # ~43,000 points: ~12,600 voxels (100 KB of keys), ~25,000 ids (100 KB), 0.5 MB of
    # points, each above the 64 KB from which arrays are stored aligned and read in place
    # (safepickle.BIG)
    sls = straight_streamlines(rng, 200)
    trk = tmp_path / "big.trk"
    write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    pkl = tmp_path / "big.pkl"
    index_scan(trk, pkl, scan_id="big", sidecar=False)
    ds = load_track_dataset(pkl)
    size = pkl.stat().st_size
    for arr in (ds.tracks_at_ijk.ids, ds.tracks_at_ijk.voxels, ds._words):
        assert arr.nbytes >= 1 << 16
        assert not arr.flags.writeable and arr.flags.aligned
        # a view of the mapped file, not a copy: its base chain ends in an mmap of the pkl
        base = arr
        while getattr(base, "base", None) is not None and not isinstance(base, memoryview):
            base = base.base
        assert isinstance(base, memoryview) and base.obj is not None
        assert arr.__array_interface__["data"][0] % 64 == 0
    assert size > ds._words.nbytes
    ref = hash_slow(read_trk_slow(trk), (2, 2, 2), qsdr_key, MNI_DIM)
    assert as_dict(ds) == ref and as_dict(pickle.loads(pkl.read_bytes())) == ref


def test_a_newer_format_is_refused_with_upgrade_advice(tmp_path):
    ds = load_track_dataset(V0)
    state = ds._state()
    state["version"] = 7
    from ltpa.dataset import _restore

    bad = tmp_path / "future.pkl"
    bad.write_bytes(pickle.dumps(_Reduce(_restore, state), protocol=5))
    with pytest.raises(LtpaError, match="newer ltpa .*format 7.*upgrade"):
        load_track_dataset(bad)


class _Reduce:
    def __init__(self, fn, state):
        self.fn, self.state = fn, state

    def __reduce__(self):
        return (self.fn, (self.state,))


@pytest.mark.parametrize("field,value,message", [
    ("voxels", np.zeros(3, np.float64), "'voxels' is a float64 array"),
    ("ids", [1, 2, 3], "'ids' is a list"),
    ("indptr", np.zeros(1, np.int64), "voxels but 1 index pointers"),
    ("dim", (91, 109), "'dim' must be three sizes"),
    ("space", "talairach", "'space' is 'talairach'"),
    ("properties", {"a": [b"raw"]}, "holds a bytes"),
    ("header", b"x" * 1000, "1000 bytes of a TrackVis header"),
    ("stride", 2, "'stride' is 2"),
    ("mm_sign", (1.0, float("nan"), 1.0), "three finite numbers"),
    ("counts", np.zeros(2, np.int64), "'counts' is a int64 array"),
    ("n_properties", -1, "'n_properties' is -1"),
])
def test_wrong_typed_state_is_refused_before_an_object_exists(tmp_path, field, value, message):
    from ltpa.dataset import _restore

    state = load_track_dataset(V0)._state()
    state[field] = value
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(_Reduce(_restore, state), protocol=5))
    with pytest.raises(LtpaError, match=message):
        load_track_dataset(bad)
    with pytest.raises(LtpaError, match=message):  # plain pickle.load checks the same state
        pickle.loads(bad.read_bytes())


def test_verify_catches_inconsistent_values_that_loading_lets_through(tmp_path):
    from ltpa.dataset import _restore

    state = load_track_dataset(V0)._state()
    indptr = np.array(state["indptr"])
    k = int(np.argmax(np.diff(indptr) >= 2))  # a voxel with two ids or more
    ids = np.array(state["ids"])
    ids[indptr[k]], ids[indptr[k] + 1] = ids[indptr[k] + 1], ids[indptr[k]]
    state["ids"] = ids  # in range, but no longer sorted within the voxel
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(_Reduce(_restore, state), protocol=5))
    ds = load_track_dataset(bad)
    with pytest.raises(LtpaError, match="not sorted and unique within a voxel"):
        ds.verify()


def _edited(state, key, edit):
    arr = np.array(state[key])
    edit(arr)
    return {**state, key: arr}


def _set(pos, value):
    def edit(a):
        a[pos] = value
    return edit


def _swap_first_two(a):
    a[0], a[1] = a[1], a[0]


def _index_cases(state, n):
    """(name, state, message): index contents that would make a query read or report wrongly."""
    dim = state["dim"]
    size = dim[0] * dim[1] * dim[2]
    return [
        ("id n", _edited(state, "ids", _set(0, n)), f"streamline id {n} at position 0; "
                                                     f"expected ids 0..{n - 1}"),
        ("id -1", _edited(state, "ids", _set(-1, -1)), "streamline id -1 at position"),
        ("indptr backwards", _edited(state, "indptr", _set(1, state["indptr"][2] + 1)),
         "index pointer 2 is .*below the one before it"),
        ("voxels unsorted", _edited(state, "voxels", _swap_first_two),
         "voxel keys are not strictly increasing: key 1"),
        ("voxel repeated", _edited(state, "voxels", _set(1, state["voxels"][0])),
         "not strictly increasing"),
        ("voxel outside", _edited(state, "voxels", _set(-1, size)),
         f"voxel key {size} lies outside the key grid"),
        ("voxel negative", _edited(state, "voxels", _set(0, -5)), "voxel key -5 lies outside"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_index_contents_are_checked_on_load_naming_the_file(tmp_path, case):
    """ids of streamlines that do not exist (>= n gave a raw IndexError in a query, -1
    silently meant streamline n-1), backwards pointers, unsorted or out-of-grid voxels."""
    from ltpa.dataset import _restore

    good = load_track_dataset(V0)
    n = good.get_ntracks()
    name, state, message = _index_cases(good._state(), n)[case]
    bad = tmp_path / f"bad {case}.pkl"
    bad.write_bytes(pickle.dumps(_Reduce(_restore, state), protocol=5))
    with pytest.raises(LtpaError, match=message) as info:
        load_track_dataset(bad)
    assert str(bad) in str(info.value), name
    with pytest.raises(LtpaError, match=message):  # plain pickle.load checks the same
        pickle.loads(bad.read_bytes())


BOUNDED = ("import resource, sys, ltpa\n"
           "from ltpa.errors import LtpaError\n"
           "from ltpa.prepared.safepickle import _dtype_table\n"
           "_dtype_table()\n"  # imports what a load imports, before the baseline
           "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
           "for path in sys.argv[1:]:\n"
           "    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
           "    try:\n        ltpa.load_track_dataset(path)\n        out = 'LOADED'\n"
           "    except LtpaError as e:\n        out = 'LTPAERROR ' + str(e)\n"
           "    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base\n"
           "    print(grew // 1024, out.replace('\\n', ' '), flush=True)\n")


def _start_bounded_load(folder, *payloads):
    """Start loading ``payloads``, in order, in one fresh process with 3 GB of address space;
    ``_bounded_result`` waits for it. A later payload's peak counts only what it grew above
    the peaks before it: only the first one's is its own."""
    paths = []
    for k, data in enumerate(payloads):
        paths.append(Path(folder) / f"bomb{k}.pkl")
        paths[-1].write_bytes(data)
    proc = subprocess.Popen([str(BIN / "python"), "-c", BOUNDED, *map(str, paths)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, [len(data) for data in payloads]


def _bounded_result(started, seconds=60):
    """The started loads' (peak RSS growth in MB, the line printed) each, within a time limit
    (from now)."""
    proc, sizes = started
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"loading pkls of {sizes} bytes ran for more than {seconds} s")
    assert proc.returncode == 0, err[-2000:]
    lines = out.splitlines()
    assert len(lines) == len(sizes), out
    return [(int(grew), line.strip()) for grew, line in (x.split(" ", 1) for x in lines)]


def _bounded_load(tmp_path, *payloads, seconds=60):
    """Load ``payloads`` in one fresh process with 3 GB of address space and a time limit:
    (peak RSS growth in MB, the line it printed) per payload (only the first's peak is its
    own, see ``_start_bounded_load``)."""
    return _bounded_result(_start_bounded_load(tmp_path, *payloads), seconds)


def test_a_dtype_state_of_shared_nodes_is_refused_at_once(tmp_path):
    """DUP + TUPLE2 per level: a tree of 2^60 leaves in 148 bytes, once walked for ever."""
    fuzz = _fuzz_module()
    payload = fuzz.dtype_bomb(60)
    assert len(payload) < 150
    # and, in the same process after it: shallow but wide, 2^14 leaves (the widest allowed
    # dtype state has ~120)
    (grew, line), (_, wide) = _bounded_load(tmp_path, payload, fuzz.dtype_bomb(14), seconds=30)
    assert line.startswith("LTPAERROR") and "refusing to load: a dtype state" in line, line
    assert grew < 50, f"{grew} MB"
    assert "a dtype state of more than 10000 items" in wide, wide


def _count_bomb(what):
    from ltpa.prepared.safepickle import MAX_OBJECTS

    if what == "put":  # LONG_BINPUT of keys 0, 1, ...: b"r" + the key in 4 bytes, each
        puts = np.zeros(MAX_OBJECTS + 10, [("op", "u1"), ("key", "<u4")])
        puts["op"], puts["key"] = ord("r"), np.arange(len(puts))
        return b"\x80\x05N" + puts.tobytes() + b"."
    return {"marks": b"\x80\x05" + b"(" * (30 << 20) + b".",
            "memo": b"\x80\x05N" + b"\x94" * (MAX_OBJECTS + 10) + b"."}[what]


@pytest.fixture(scope="module")
def count_bomb_loads(tmp_path_factory):
    """The three payloads below, each loading in its own fresh process, all started at once
    (two take a second or two, each core one)."""
    started = {}
    for what in ("marks", "memo", "put"):
        started[what] = _start_bounded_load(tmp_path_factory.mktemp(what), _count_bomb(what))
    yield started
    for proc, _ in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("what", ["marks", "memo", "put"])
def test_marks_and_memo_entries_count_against_the_object_bound(count_bomb_loads, what):
    """30 MB of MARK reached 2.1 GB: marks and memo entries are bounded like objects."""
    from ltpa.prepared.safepickle import MAX_OBJECTS

    ((grew, line),) = _bounded_result(count_bomb_loads[what])
    assert line.startswith("LTPAERROR"), line
    assert ("MARKs open" if what == "marks" else "marks and memo entries") in line, line
    # a bounded machine: ~100 bytes per counted item at most
    assert grew < 100 + MAX_OBJECTS * 150 / 1e6, f"{grew} MB"


# --------------------------------------------------------------------------- no code from a file


LOADER = ("import sys, ltpa\n"
          "from ltpa.errors import LtpaError\n"
          "for path in sys.argv[1:]:\n"
          "    try:\n        ltpa.load_track_dataset(path)\n        print('LOADED')\n"
          "    except LtpaError as e:\n        print('LTPAERROR', str(e).replace('\\n', ' '))\n")


def load_in_fresh_process(*paths):
    """Load each of ``paths``, in order, in one fresh ``python`` process: LOADED or
    LTPAERROR <message> for each, one line each."""
    proc = subprocess.run([str(BIN / "python"), "-c", LOADER, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == len(paths), proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def test_the_issue_10_exploit_runs_nothing(tmp_path):
    """numpy.dtypes + '__builtins__.get' -> eval ran a command through the first loader."""
    fuzz = _fuzz_module()
    marker = tmp_path / "PWNED"
    code = f"__import__('os').system('touch {marker}')"
    payload = (b"\x80\x04" + fuzz.glob("numpy.dtypes", "__builtins__.get") + fuzz.s("eval")
               + b"\x85R" + fuzz.s(code) + b"\x85R.")
    bad = tmp_path / "exploit.pkl"
    bad.write_bytes(payload)

    # and the plain-pickle class of attack, named directly (loaded after it, same process)
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Evil()))
    exploit, plain = load_in_fresh_process(bad, evil)
    assert exploit.startswith("LTPAERROR"), exploit
    assert "'numpy.dtypes.__builtins__.get' is not one of the names" in exploit
    assert "'posix.system' is not one of the names" in plain, plain
    assert not marker.exists()
    bad.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(LtpaError, match="holds a dict, not a TrackDataset"):
        load_track_dataset(bad)


def test_every_hand_built_payload_is_refused_in_a_fresh_process(tmp_path):
    fuzz = _fuzz_module()
    marker = tmp_path / "PWNED"
    payloads = fuzz.handmade(str(marker))
    assert len(payloads) > 80
    # fresh processes: two, half the payloads each, side by side (one per payload would take
    # minutes; the count bombs' loads take seconds)
    paths = []
    for k, (_, data) in enumerate(payloads):
        p = tmp_path / f"p{k}.pkl"
        p.write_bytes(data)
        paths.append(str(p))
    code = ("import sys, ltpa, resource\n"
            "from ltpa.errors import LtpaError\n"
            "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n        ltpa.load_track_dataset(p)\n        print('LOADED', p)\n"
            "    except LtpaError as e:\n        print('LTPAERROR', p)\n")
    procs = [subprocess.Popen([str(BIN / "python"), "-c", code, *paths[half::2]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for half in (0, 1)]
    lines = []  # (path, LTPAERROR or LOADED)
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        lines += [line.split(" ", 1)[::-1] for line in out.splitlines()]
    assert sorted(p for p, _ in lines) == sorted(paths)  # one line per payload
    got = dict(lines)
    assert all(got[p] == "LTPAERROR" for p in paths), \
        [name for (name, _), p in zip(payloads, paths) if got[p] != "LTPAERROR"]
    assert not marker.exists()


@pytest.mark.slow  # an 8-second fuzz budget; the hand-built payloads above stay fast
def test_bounded_fuzz_finds_no_crash_and_no_code_run():
    proc = subprocess.run([str(BIN / "python"), str(REPO / "benchmarks" / "fuzz_pkl.py"),
                           "--seconds", "8", "--seed", "3", "--json"], capture_output=True,
                          text=True, timeout=600)
    import json

    res = json.loads(proc.stdout)
    assert res["crash"] == 0 and res["code ran"] == 0, res["problems"]
    assert res["accepted"] > 0 and res["rejected"] > res["handmade"]
    assert proc.returncode == 0

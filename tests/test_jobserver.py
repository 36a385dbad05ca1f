"""The warm job server among users (#19 items 3, 9-12): what reaches a job's log, the checks
before a client talks to a server, timeouts on both sides, and a server that survives bad
requests.

Every server (real or fake) listens in a private ``XDG_RUNTIME_DIR`` under pytest's temporary
folders, never the user's shared one: a test's own, or one real server shared by the tests
that only talk to it and leave it as they found it (``shared_server``). Where a second uid is
needed, a forked child becomes ``nobody`` (the tests run as root in CI); without root those
parts skip with the reason.
"""

import json
import os
import pwd
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN
from ltpa.jobs import wire

LTPA_JOB = str(BIN / "ltpa-job")


# --------------------------------------------------------------------------- helpers


def write_tiny_trk(path):
    from ltpa.formats.grids import QSDR_AFFINE, QSDR_DIM
    from ltpa.formats.trkwrite import write_trk

    sls = [np.array([[50.0, 60.0, 40.0], [52.0, 61.0, 41.0], [54.0, 62.0, 43.0]],
                    np.float32)] * 3
    write_trk(str(path), sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
    return path


def index_spec(trk, output, **extra):
    return json.dumps({"step": "index", "output": str(output),
                       "inputs": {"trk_file": str(trk)}, "scan_id": "s1", **extra})


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A private XDG_RUNTIME_DIR for this test: (environment for ltpa-job, socket path)."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    env = dict(os.environ, XDG_RUNTIME_DIR=str(run), LTPA_JOB_SERVER_IDLE="20")
    env.pop("LTPA_JOB_SERVER", None)
    return env, wire.socket_path()


def start_server(env, path, *args):
    """A real job server on ``path`` (its folder made 0700), once it accepts: its Popen."""
    path.parent.mkdir(mode=0o700)
    proc = subprocess.Popen([sys.executable, "-m", "ltpa.jobs.server", "--socket", str(path),
                             *args], env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, "the job server exited at start"
        assert time.monotonic() < deadline, "the job server did not start in 120 s"
        time.sleep(0.02)
    return proc


def stop_server(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def server(runtime, request):
    """A real job server of this test's own (for a test that kills it): (its Popen, the
    socket path, the client env); a test marked ``server_args(...)`` gives it those options."""
    env, path = runtime
    mark = request.node.get_closest_marker("server_args")
    proc = start_server(env, path, *(mark.args if mark else ()))
    yield proc, path, env
    stop_server(proc)


SHARED_REQUEST_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One real job server for the tests that only send it requests and wait until it has no
    child left (its start-up, ~1 s, paid once): (its Popen, the socket path, the client env).
    Its request timeout is ``SHARED_REQUEST_TIMEOUT`` (1 s): a silent connection ends after
    1 s, not the default 10; a client sends its whole request right after connecting.

    The client env's PYTHONPATH holds a ``numpy`` that cannot be imported. The server's
    children never see it (PYTHONPATH is not in the allowlist, and the server has numpy
    loaded), but a job that fell back to the client's own process fails: a job of these
    tests that succeeds ran in the server."""
    run = tmp_path_factory.mktemp("shared-run")
    os.chmod(run, 0o700)
    poison = tmp_path_factory.mktemp("poison")
    (poison / "numpy.py").write_text(
        "raise ImportError('test poison: this job ran in the client, not the server')\n")
    env = dict(os.environ, XDG_RUNTIME_DIR=str(run), LTPA_JOB_SERVER_IDLE="20",
               PYTHONPATH=str(poison))
    env.pop("LTPA_JOB_SERVER", None)
    server_env = dict(env)
    server_env.pop("PYTHONPATH")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_RUNTIME_DIR", str(run))
        path = wire.socket_path()
    proc = start_server(server_env, path, "--request-timeout", str(SHARED_REQUEST_TIMEOUT))
    yield proc, path, env
    stop_server(proc)


def ltpa_job(env, log, spec, timeout=120):
    return subprocess.run([LTPA_JOB, "--log", str(log), spec], env=env, capture_output=True,
                          text=True, timeout=timeout)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def children_of(pid):
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def raw_request(path, payload: bytes, fds=(0, 1, 2)):
    """Send ``payload`` (framed) with ``fds`` to the server at ``path``: the first reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] \
            if fds else []
        sock.sendmsg([struct.pack("!I", len(payload)) + payload], anc)
        try:
            return wire.recv_message(sock)
        except OSError:
            return None


NOBODY = None
try:
    NOBODY = pwd.getpwnam("nobody").pw_uid
except KeyError:
    pass
needs_second_uid = pytest.mark.skipif(
    os.getuid() != 0 or NOBODY is None,
    reason="needs root to run a fake server as user 'nobody' (a second uid)")


class FakeServer:
    """A process listening at ``path`` that records what it is sent and answers as told.

    ``uid``: the uid it runs as (a forked child that setuid()s, binding in a folder it can
    write, then moved into place by root). ``answer``: the messages it replies with. It takes
    one connection, closes the descriptors it was sent (it runs no job: the client's stdout
    and stderr are not held open) and keeps the connection open until ``stop``.
    """

    def __init__(self, path: Path, scratch: Path, uid=None, answer=()):
        self.record = scratch / "fake-record.json"
        import tempfile

        # a folder the fake's uid can reach (pytest's tmp_path is private to root)
        bind_dir = Path(tempfile.mkdtemp(prefix="ltpa-fake-"))
        os.chmod(bind_dir, 0o777)
        self.bind_dir = bind_dir
        bind_at = bind_dir / "s.sock"
        self.pid = os.fork()
        if self.pid == 0:  # the fake server
            try:
                if uid is not None:
                    os.setgroups([])
                    os.setgid(uid)
                    os.setuid(uid)
                lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                lst.bind(str(bind_at))
                lst.listen(8)
                conn, _ = lst.accept()
                conn.settimeout(3)
                got = b""
                try:
                    while True:
                        data, anc, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(64))
                        for level, kind, fds in anc:
                            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                                for fd in struct.unpack(f"{len(fds) // 4}i",
                                                        fds[:len(fds) // 4 * 4]):
                                    os.close(fd)
                        got += data
                        if not data or (len(got) >= 4 and len(got) >= 4 + struct.unpack(
                                "!I", got[:4])[0]):
                            break
                except OSError:
                    pass
                rec = {"bytes": len(got), "request": None}
                if len(got) > 4:
                    rec["request"] = json.loads(got[4:].decode())
                with open(bind_dir / "record.json.tmp", "w") as fh:
                    json.dump(rec, fh)
                os.rename(bind_dir / "record.json.tmp", bind_dir / "record.json")
                for msg in answer:
                    wire.send_message(conn, msg)
                    time.sleep(0.05)
                time.sleep(60)  # the connection stays open: stop() ends this process
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(0)
        deadline = time.monotonic() + 10
        while not bind_at.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.rename(bind_at, path)  # root moves the socket into the folder a client checks
        self.result = bind_dir / "record.json"

    def recorded(self, wait=10):
        deadline = time.monotonic() + wait
        while not self.result.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.result.exists():
            return None
        return json.loads(self.result.read_text())

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        import shutil

        shutil.rmtree(self.bind_dir, ignore_errors=True)


# --------------------------------------------------------------------------- item 3


@pytest.mark.parametrize("via", ["server", "in process"])
def test_every_job_error_reaches_the_log(tmp_path, runtime, via):
    """An LtpaError as its message; anything else with its traceback; exit 1 either way."""
    env, _ = runtime
    if via == "in process":
        env = dict(env, LTPA_JOB_SERVER="0")
    cases = {
        # a spec field this ltpa does not know: a TypeError before the job's log was open
        "spec": (json.dumps({"step": "index", "output": str(tmp_path / "o" / "a.pkl"),
                             "inputs": {}, "bogus": 1}), "TypeError"),
        # a step without the input it needs: a KeyError inside the job
        "input": (json.dumps({"step": "index", "output": str(tmp_path / "o" / "b.pkl"),
                              "inputs": {}}), "KeyError: 'trk_file'"),
    }
    for name, (spec, error) in cases.items():
        log = tmp_path / "logs" / f"{name}.log"
        proc = ltpa_job(env, log, spec)
        assert proc.returncode == 1, (name, proc.stdout, proc.stderr)
        text = log.read_text() if log.exists() else ""
        assert "Traceback (most recent call last)" in text and error in text, (name, text,
                                                                                proc.stderr)
        assert f"unexpected {error.split(':')[0]}" in proc.stderr, proc.stderr
    # an input problem: its message, no traceback
    log = tmp_path / "logs" / "ltpa.log"
    missing = tmp_path / "nowhere.trk"
    proc = ltpa_job(env, log, index_spec(missing, tmp_path / "o" / "c.pkl"))
    assert proc.returncode == 1
    text = log.read_text()
    assert f"{str(missing)!r} does not exist" in text and "Traceback" not in text, text


# --------------------------------------------------------------------------- item 9


def test_folder_checks(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)  # as in a SLURM job
    assert wire.socket_path().parent == Path("/tmp") / f"ltpa-{os.getuid()}"
    good = tmp_path / "good"
    assert wire.folder_problem(good) is None  # made, 0700, ours
    assert stat.S_IMODE(os.lstat(good).st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    assert "mode 0777; expected uid" in wire.folder_problem(shared)
    os.chmod(shared, 0o750)
    assert "mode 0750" in wire.folder_problem(shared)
    link = tmp_path / "link"
    link.symlink_to(good)
    assert "is a symlink" in wire.folder_problem(link)
    plain = tmp_path / "file"
    plain.write_text("")
    assert "is not a folder" in wire.folder_problem(plain)
    if os.getuid() == 0 and NOBODY is not None:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, NOBODY, NOBODY)
        assert f"belongs to uid {NOBODY} with mode 0700" in wire.folder_problem(theirs)


def test_the_environment_sent_is_an_allowlist():
    env = {"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "LC_ALL": "C", "TMPDIR": "/t",
           "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "LTPA_JOB_SERVER": "1",
           "SLURM_JOB_ID": "7", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "GITHUB_TOKEN": "t0k3n",
           "SSH_AUTH_SOCK": "/tmp/agent", "LD_PRELOAD": "/x.so", "PYTHONPATH": "/evil"}
    sent = wire.job_environment(env)
    assert set(sent) == {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "OMP_NUM_THREADS",
                         "NUMBA_NUM_THREADS", "LTPA_JOB_SERVER", "SLURM_JOB_ID"}
    assert all(sent[k] == env[k] for k in sent)


def _takeover_setup(tmp_path, monkeypatch, folder_mode, owner):
    """The per-user socket folder pre-created with ``folder_mode`` (and ``owner``), as another
    user can do with ``/tmp/ltpa-<uid>``; here under a test XDG_RUNTIME_DIR, so the user's
    real folder is never touched (the same check guards both)."""
    run = tmp_path / "xdg"
    run.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(run), SECRET_TOKEN="do-not-send",
               LTPA_JOB_SERVER_TIMEOUT="5")
    env.pop("LTPA_JOB_SERVER", None)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    path = wire.socket_path()
    path.parent.mkdir(mode=0o700)
    os.chmod(path.parent, folder_mode)
    if owner is not None:
        os.chown(path.parent, owner, owner)
    return env, path


@needs_second_uid
@pytest.mark.parametrize("attack", ["world-writable folder", "another user's server"])
def test_a_socket_of_another_user_gets_nothing(tmp_path, monkeypatch, attack):
    """Another user's listening socket: in a 0777 folder (the folder check refuses it before
    connecting), or somehow in our private folder (SO_PEERCRED names its uid): the client
    sends it nothing (no environment, no descriptors) and runs the job itself."""
    mode = 0o777 if attack == "world-writable folder" else 0o700
    env, path = _takeover_setup(tmp_path, monkeypatch, mode, None)
    fake = FakeServer(path, tmp_path, uid=NOBODY, answer=[{"pid": 1}, {"exit": 0}])
    try:
        trk = write_tiny_trk(tmp_path / "s1.trk")
        out = tmp_path / "out" / "s1.pkl"
        proc = ltpa_job(env, tmp_path / "s1.log", index_spec(trk, out))
        assert proc.returncode == 0, proc.stderr
        assert out.exists()  # built, by the client itself
        warning = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
        assert len(warning) == 1, proc.stderr
        if mode == 0o777:
            assert str(path.parent) in warning[0] and "mode 0777" in warning[0], warning
        else:
            assert f"runs as uid {NOBODY}, not as this user" in warning[0], warning
        if mode == 0o777:
            # the folder check refuses it before connecting: a connection made now is the
            # first the fake accepts (a Unix socket accepts in order), and what it records
            sentinel = json.dumps({"sentinel": "sent by the test"}).encode()
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                try:
                    sock.connect(str(path))
                    sock.sendall(struct.pack("!I", len(sentinel)) + sentinel)
                except OSError:
                    pass  # the fake is gone: it took a connection before this one
                rec = fake.recorded()
            assert rec == {"bytes": 4 + len(sentinel), "request": json.loads(sentinel)}, rec
        else:
            rec = fake.recorded()
            assert rec is not None and rec["bytes"] == 0, rec  # not one byte reached it
    finally:
        fake.stop()


def test_a_server_of_ours_gets_only_the_allowlist_and_success_needs_the_output(
        tmp_path, monkeypatch):
    """What the client sends, as a server sees it; and "exit 0" without the output fails."""
    env, path = _takeover_setup(tmp_path, monkeypatch, 0o700, None)
    fake = FakeServer(path, tmp_path, uid=None, answer=[{"pid": 1}, {"exit": 0}])
    try:
        trk = write_tiny_trk(tmp_path / "s1.trk")
        out = tmp_path / "out" / "s1.pkl"
        proc = ltpa_job(env, tmp_path / "s1.log", index_spec(trk, out))
        rec = fake.recorded()
    finally:
        fake.stop()
    assert rec is not None and rec["request"] is not None, rec
    sent = rec["request"]["env"]
    assert "SECRET_TOKEN" not in sent and set(sent) == set(wire.job_environment(env))
    assert proc.returncode == 1 and not out.exists()
    assert f"reported success but the output {str(out)!r} does not exist" in proc.stderr


# --------------------------------------------------------------------------- item 10


def test_a_silent_connection_stalls_no_job(tmp_path, shared_server):
    proc, path, env = shared_server
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(path))  # and sends nothing
    try:
        trk = write_tiny_trk(tmp_path / "s1.trk")
        out = tmp_path / "out" / "s1.pkl"
        # no fallback within the test's time: the server itself must answer (and a job
        # run in the client would fail: shared_server's poisoned PYTHONPATH)
        env = dict(env, LTPA_JOB_SERVER_TIMEOUT="300")
        t0 = time.monotonic()
        job = ltpa_job(env, tmp_path / "s1.log", index_spec(trk, out), timeout=60)
        assert job.returncode == 0 and out.exists(), job.stderr
        assert "warning" not in job.stderr
        # the silent connection's child gives up after the request timeout (1 s here)
        deadline = t0 + SHARED_REQUEST_TIMEOUT + 30
        while children_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not children_of(proc.pid)
        silent.settimeout(10)  # its connection was ended, never given a job
        assert wire.recv_message(silent) == {"exit": 65}
    finally:
        silent.close()


def test_a_server_that_does_not_answer_means_the_job_runs_here(tmp_path, monkeypatch):
    env, path = _takeover_setup(tmp_path, monkeypatch, 0o700, None)
    env["LTPA_JOB_SERVER_TIMEOUT"] = "0.5"
    fake = FakeServer(path, tmp_path, uid=None, answer=[])  # reads, never answers
    try:
        trk = write_tiny_trk(tmp_path / "s1.trk")
        out = tmp_path / "out" / "s1.pkl"
        t0 = time.monotonic()
        proc = ltpa_job(env, tmp_path / "s1.log", index_spec(trk, out), timeout=60)
        took = time.monotonic() - t0
        assert proc.returncode == 0 and out.exists(), proc.stderr
        assert 0.5 <= took < 50, took  # the answer waited for, then the job run here
        rec = fake.recorded()  # the server was sent the job (and kept the connection open)
        assert rec is not None and rec["request"]["argv"][-1] == index_spec(trk, out), rec
    finally:
        fake.stop()


# --------------------------------------------------------------------------- item 11


def test_an_orphaned_job_does_not_hold_the_listener(tmp_path, server):
    """The server killed mid-job: its job goes on, but new clients are not queued on a
    socket nobody accepts from (they are refused at once and start a new server)."""
    proc, path, env = server
    log = tmp_path / "fifo.log"
    os.mkfifo(log)  # the job blocks opening its log until the test reads it
    trk = write_tiny_trk(tmp_path / "s1.trk")
    client = subprocess.Popen([LTPA_JOB, "--log", str(log),
                               index_spec(trk, tmp_path / "out" / "s1.pkl")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not children_of(proc.pid):
            assert time.monotonic() < deadline, "the job's child never appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the server only, not its job
        proc.wait()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            with pytest.raises(ConnectionRefusedError):
                sock.connect(str(path))
    finally:
        fd = os.open(log, os.O_RDONLY | os.O_NONBLOCK)  # let the job go on
        try:
            out, err = client.communicate(timeout=60)
        finally:
            os.close(fd)
    assert client.returncode == 0, err


# --------------------------------------------------------------------------- item 12


def test_bad_requests_leak_nothing_and_the_server_survives(tmp_path, shared_server):
    proc, path, env = shared_server
    before = open_fds(proc.pid)
    bad = [b"not json", b"[" * 100_000 + b"]" * 100_000, b'{"argv": 1, "cwd": "/", "env": {}}',
           json.dumps({"argv": [], "cwd": "relative", "env": {}}).encode(),
           b'{"argv": ["\\u0000"], "cwd": "/", "env": {}}', b"\xff\xfe", b"{}" * 10]
    for k in range(100):
        payload = bad[k % len(bad)]
        fds = (0, 1, 2) if k % 3 else (0, 1)
        reply = raw_request(path, payload, fds)
        assert reply is None or "pid" not in reply, (payload[:40], reply)
    # each bad request ended in its own child, with the descriptors it got
    deadline = time.monotonic() + 30
    while children_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the server died"
    assert open_fds(proc.pid) <= before + 1, (before, open_fds(proc.pid))
    trk = write_tiny_trk(tmp_path / "s1.trk")
    out = tmp_path / "out" / "s1.pkl"
    env = dict(env, LTPA_JOB_SERVER_TIMEOUT="300")  # run by the server (the poisoned PYTHONPATH)
    job = ltpa_job(env, tmp_path / "s1.log", index_spec(trk, out), timeout=60)
    assert job.returncode == 0 and out.exists(), job.stderr


def test_request_parser_refuses_deep_large_and_wrong_requests():
    deep = b"[" * 1_000_000 + b"]" * 1_000_000
    for payload, message in [
            (deep[:2 * wire.MAX_JSON_DEPTH + 10], "nested more than 64"),
            (b"x" * (wire.MAX_REQUEST + 1), "at most"),
            (b'{"argv": [], "cwd": "/"}', "argv, cwd and env"),
            (b'{"argv": [1], "cwd": "/", "env": {}}', "list of strings"),
            (b'{"argv": [], "cwd": "/", "env": {"A": 1}}', "names to strings"),
            (b'{"argv": [], "cwd": "/", "env": {"A=B": "1"}}', "NUL"),
            (b"\xff", "not UTF-8"), (b"{", "not JSON")]:
        with pytest.raises(wire.BadRequest, match=message):
            wire.parse_request(payload)
    # nesting inside a string is text, not depth
    ok = json.dumps({"argv": ["[" * 1000], "cwd": "/", "env": {"LANG": "C", "SECRET": "x"}})
    assert wire.parse_request(ok.encode()) == {"argv": ["[" * 1000], "cwd": "/",
                                                    "env": {"LANG": "C"}}
    t0 = time.perf_counter()
    with pytest.raises(wire.BadRequest):
        wire.parse_request(deep[:wire.MAX_REQUEST])
    assert time.perf_counter() - t0 < 5


def test_json_depth_matches_a_recursive_reference():
    def slow(v):
        if isinstance(v, list):
            return 1 + max((slow(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((slow(x) for x in v.values()), default=0)
        return 0

    rng = np.random.default_rng(5)

    def make(depth):
        if depth == 0 or rng.random() < 0.2:
            return rng.choice(["a]\"{", 1, None, "x\\\"[", 2.5])
        if rng.random() < 0.5:
            return [make(depth - 1) for _ in range(rng.integers(0, 3))]
        return {f"k{i}[": make(depth - 1) for i in range(rng.integers(0, 3))}

    for _ in range(300):
        v = make(int(rng.integers(0, 8)))
        v = v.item() if hasattr(v, "item") else v
        assert wire.json_depth(json.dumps(v)) == slow(v), v



@pytest.mark.slow  # a 6-second fuzz budget; the hand-made bad requests stay fast
def test_bounded_fuzz_of_the_request_reader_finds_nothing():
    """benchmarks/fuzz.py --format request: mutated and deep requests, odd framing and
    descriptor counts through the server's own reader: no crash, hang, wrong answer or leak."""
    from conftest import REPO

    proc = subprocess.run([str(BIN / "python"), str(REPO / "benchmarks" / "fuzz.py"),
                           "--format", "request", "--seconds", "6", "--seed", "2", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout[proc.stdout.index("{"):])["results"][0]
    assert res["crash"] == 0 and res["wrong"] == 0, res["distinct"]
    assert res["equal"] > 0 and res["rejected"] > 0 and res["inputs"] > 100, res


def test_a_large_request_goes_through_the_server_whole(tmp_path, shared_server):
    """A spec near the 128 KB a command-line argument can hold (a scan's metadata), run by the
    server (a job run in the client fails: shared_server's poisoned PYTHONPATH)."""
    proc, path, env = shared_server
    trk = write_tiny_trk(tmp_path / "s1.trk")
    out = tmp_path / "out" / "s1.pkl"
    notes = "x" * 120_000
    spec = index_spec(trk, out, properties={"scan_group": "a", "notes": notes})
    job = ltpa_job(dict(env, LTPA_JOB_SERVER_TIMEOUT="300"), tmp_path / "s1.log", spec,
                   timeout=120)
    assert job.returncode == 0, job.stderr
    from ltpa import load_track_dataset

    assert load_track_dataset(out).properties["notes"] == notes

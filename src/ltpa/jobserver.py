"""Run jobs in processes forked from a warm server: the per-job start-up cost, removed.

Every workflow job is a fresh process, and a fresh Python spends ~0.6 s importing numpy,
nibabel and numba and loading the compiled kernels before it does any work: for a study of
small scans that is most of the run. So the job command (``ltpa-job``, ``ltpa.client``) is
a small client: it asks a server that has all of that loaded (this module) to fork a child
for the job, hands it its stdin/stdout/stderr (SCM_RIGHTS), its working directory and the
part of its environment a job needs, and waits for the child's exit status, which becomes
its own. Each job is still its own process (its own memory, killed alone; an error or a
crash in one job is that job's), it just starts warm. docs/jobserver.md has the whole picture.

- The server is started by the first client that finds none, in a new session (so killing
  a job's process group leaves it), and exits after ``IDLE_SECONDS`` without a job.
- One server per (user, Python, ltpa install and version, SLURM job): a job of one SLURM
  allocation never forks from another allocation's server (its memory, its limits), and an
  upgrade starts a new server.
- Among users: the socket is in a folder that must be a real folder of this user with mode
  0700 (``$XDG_RUNTIME_DIR/ltpa`` or ``/tmp/ltpa-<uid>``, checked with lstat before every
  connection); each side checks the other's uid (SO_PEERCRED); the client sends only an
  allowlist of environment variables (``job_environment``) and trusts an exit status 0 only
  when the job's output exists.
- The accept loop never reads: each connection is handed to a forked child at once, which
  reads the request within ``REQUEST_TIMEOUT`` (so a silent client stalls nobody), checks
  it (size, JSON depth, types) and becomes the job; a bad request ends only its child.
- A client killed by a signal it can catch (Snakemake stopping a job) passes it on to the
  child; a client killed outright (SIGKILL) closes its socket, which the child watches: it
  stops then too. A job never outlives its command for long.
- ``LTPA_JOB_SERVER=0`` runs every job in the client's own process (no server); any problem
  reaching a server does the same, so a job never fails because of this shortcut.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import socket
import stat
import struct
import sys
import time
from pathlib import Path

IDLE_SECONDS = 120
MAX_MESSAGE = 16 << 20  # a reply (the server's few bytes)
MAX_REQUEST = 1 << 20  # a request: argv (the job's JSON spec), cwd and the allowlisted env
MAX_JSON_DEPTH = 64  # a real request nests 4 levels (its spec is a string)
REQUEST_TIMEOUT = 10.0  # seconds a connection has to deliver its request

# The environment a job gets, and all the client sends: enough for the job to behave as in
# its own process, and nothing else of the user's (tokens, keys, passwords stay home).
#   PATH, HOME, USER, LOGNAME  programs, ~ and the user's name, as libraries look them up
#   LANG, LANGUAGE, LC_*, TZ   how text is decoded and log times are printed
#   TMPDIR                     where temporary files go (a SLURM job's node-local folder)
#   thread counts              OMP/OPENBLAS/MKL/NUMEXPR/VECLIB: BLAS and OpenMP thread pools;
#                              NUMBA_*: numba's threads and cache (the job's CPU share)
#   LTPA_*                     the package's own switches
#   SLURM_JOB_ID, SLURM_CPUS_* the allocation a job runs in (what the job is allowed to use)
ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "SLURM_JOB_ID", "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE",
})
ENV_PREFIXES = ("LC_", "LTPA_", "NUMBA_")


def job_environment(env) -> dict:
    """The variables of ``env`` a job needs (``ENV_NAMES``, ``ENV_PREFIXES``), as str -> str."""
    return {k: v for k, v in env.items()
            if isinstance(k, str) and isinstance(v, str)
            and (k in ENV_NAMES or k.startswith(ENV_PREFIXES))}


# --------------------------------------------------------------------------- where


def socket_path() -> Path:
    """The server socket for this user, Python, ltpa install and SLURM job."""
    import ltpa

    here = Path(ltpa.__file__).resolve().parent
    # the code's version: a changed module (an upgrade, an edit) gets a new server
    stamp = sorted(f"{e.name}:{e.stat().st_mtime_ns}" for e in os.scandir(here)
                   if e.name.endswith(".py"))
    key = "|".join([sys.executable, str(here), ltpa.__version__, *stamp,
                    os.environ.get("SLURM_JOB_ID", "")])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(base) / "ltpa" if base and os.path.isdir(base) else \
        Path("/tmp") / f"ltpa-{os.getuid()}"
    return folder / f"jobs-{digest}.sock"


def folder_problem(folder: Path, create: bool = True) -> str | None:
    """None if ``folder`` is private to this user, else what is wrong with it.

    Private: a real folder (lstat: not a symlink to one), owned by this uid, with no
    permission for group or others (0700). Anyone can create ``/tmp/ltpa-<uid>`` before
    this user does; a folder that fails this is never used (``create``: make it if absent).
    """
    if create:
        try:
            os.mkdir(folder, 0o700)  # never follows a symlink: an existing name is kept
        except OSError:
            pass  # it exists, or cannot be made: the lstat below says what is wrong
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return f"{folder} cannot be used ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder"
        return f"{folder} is {kind}; expected a folder of uid {os.getuid()} with mode 0700"
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        return (f"{folder} belongs to uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}; "
                f"expected uid {os.getuid()} and mode 0700")
    return None


def peer_uid(sock) -> int:
    """The uid of the process at the other end of the Unix socket ``sock`` (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


# --------------------------------------------------------------------------- framing


def send_message(sock, obj) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def recv_message(sock):
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    (n,) = struct.unpack("!I", head)
    if n > MAX_MESSAGE:
        raise ValueError("message too large")
    data = _recv_exact(sock, n)
    return None if data is None else json.loads(data.decode())


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class BadRequest(ValueError):
    """A request the server does not run (its child says why in the exit status)."""


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deeply the JSON ``text`` nests (no recursion: strings removed, brackets counted)."""
    depth = peak = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            peak = max(peak, depth)
        else:
            depth -= 1
    return peak


def parse_request(data: bytes) -> dict:
    """A job request (``{"argv": [str], "cwd": str, "env": {str: str}}``) from its JSON bytes.

    Raises ``BadRequest`` for anything else: too large, nested more than ``MAX_JSON_DEPTH``
    levels (checked before parsing, so no recursion limit is reached), not UTF-8, not JSON,
    missing or wrong-typed fields.
    """
    if len(data) > MAX_REQUEST:
        raise BadRequest(f"request of {len(data)} bytes; at most {MAX_REQUEST}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request is not UTF-8") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise BadRequest(f"request nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"request is not JSON ({str(exc)[:100]})") from None
    if not isinstance(msg, dict) or set(msg) != {"argv", "cwd", "env"}:
        raise BadRequest("request must be an object with argv, cwd and env")
    argv, cwd, env = msg["argv"], msg["cwd"], msg["env"]
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise BadRequest("argv must be a list of strings")
    if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
        raise BadRequest("cwd must be an absolute path")
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise BadRequest("env must map names to strings")
    if any("\0" in a for a in argv) or any("\0" in k or "=" in k or "\0" in v
                                          for k, v in env.items()):
        raise BadRequest("argv and env must not hold NUL characters")
    return {"argv": argv, "cwd": cwd, "env": job_environment(env)}


# --------------------------------------------------------------------------- the server


def _warm() -> None:
    """Import everything a job needs and run each step once on a tiny scan.

    Imports, numba's compiled kernels (for the argument types real jobs use), nibabel's
    readers and the first-use costs of the libraries are then paid here, once, not in
    every forked job.
    """
    import shutil
    import tempfile

    import numpy as np

    from .grids import QSDR_AFFINE, QSDR_DIM
    from .pipeline import export_key_trk, index_scan, label_scan, write_patterns
    from .trkwrite import write_trk

    folder = tempfile.mkdtemp(prefix="ltpa-warm-")
    try:
        import networkx  # noqa: F401 - region lists from a graphml are read with networkx
        import nibabel as nib

        sls = [np.array([[50.0, 60.0, 40.0], [52.0, 61.0, 41.0], [54.0, 62.0, 43.0]],
                        np.float32)] * 3
        trk = f"{folder}/w.trk"
        write_trk(trk, sls, QSDR_DIM, (2, 2, 2), "LPS", QSDR_AFFINE)
        atlas = np.zeros(QSDR_DIM, np.int16)
        atlas[25:28, 30, 20] = [1, 2, 3]
        nib.Nifti1Image(atlas, QSDR_AFFINE).to_filename(f"{folder}/a.nii.gz")
        with open(f"{folder}/g.graphml", "w") as fh:
            fh.write('<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/'
                     'xmlns"><graph edgedefault="undirected"><node id="1"/><node id="2"/>'
                     '<node id="3"/></graph></graphml>')
        index_scan(trk, f"{folder}/w.pkl", scan_id="warm")
        export_key_trk(trk, f"{folder}/w.key.trk")
        label_scan(trk, f"{folder}/a.nii.gz", f"{folder}/w.npy",
                   graphml_path=f"{folder}/g.graphml")
        write_patterns(f"{folder}/w.pkl", f"{folder}/w.npy", f"{folder}/w.patterns.npz", 1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def serve(path: Path, idle: float = IDLE_SECONDS) -> None:
    """Listen on ``path`` and fork a child per connection, until idle for ``idle`` seconds."""
    _warm()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = path.with_name(path.name + f".{os.getpid()}")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    listener.bind(str(tmp))
    os.chmod(tmp, 0o600)
    listener.listen(64)
    os.replace(tmp, path)  # clients see the socket only once it accepts
    mine = os.stat(path).st_ino
    children = {}  # pid -> connection
    last = time.monotonic()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    try:
        while True:
            try:
                ready, _, _ = select.select([listener, wake_r], [], [], 5.0)
            except InterruptedError:
                ready = []
            if wake_r in ready:
                os.read(wake_r, 4096)
            _reap(children)
            if listener in ready:
                last = time.monotonic()
                try:
                    _accept(listener, children, (wake_r, wake_w))
                except Exception:  # one connection's failure never ends the server
                    time.sleep(0.05)  # e.g. out of descriptors: let the children finish
            if not children and time.monotonic() - last > idle:
                break
            try:
                if os.stat(path).st_ino != mine:
                    break  # another server took the socket's name: leave
            except OSError:
                break
    finally:
        try:
            if os.stat(path).st_ino == mine:
                path.unlink()
        except (OSError, UnboundLocalError):
            pass
        listener.close()


def _reap(children) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        # the child sends its own exit status; this one is for a child that died before it
        # could (a signal, a crash): the client reads the first and ignores the rest
        code = os.waitstatus_to_exitcode(status)
        data = json.dumps({"exit": code}).encode()
        try:
            conn.send(struct.pack("!I", len(data)) + data, socket.MSG_DONTWAIT)
        except OSError:
            pass
        conn.close()


def _accept(listener, children, wake) -> None:
    """Hand the next connection to a forked child at once: the accept loop never reads."""
    conn, _ = listener.accept()
    try:
        if peer_uid(conn) != os.getuid():
            conn.close()  # another user's process: nothing is read, nothing is forked
            return
        pid = os.fork()
    except BaseException:
        conn.close()
        raise
    if pid:
        children[pid] = conn
        return
    # the child: first let go of everything of the server's (an orphaned job must not keep
    # the listener open, or new clients would queue on a socket nobody accepts from)
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        listener.close()
        for fd in wake:
            os.close(fd)
        for other in children.values():
            other.close()
        children.clear()
        code = _child(conn)
    except BaseException:
        import traceback

        try:
            traceback.print_exc()  # the job's stderr once it has it, else the server's
        except BaseException:
            pass
    finally:
        os._exit(code)


def _recv_request(conn, deadline: float):
    """A request: its length, then the JSON with the client's three fds (SCM_RIGHTS).

    Returns (bytes, fds); on any error the fds received so far are closed.
    """
    fds = []
    buf = bytearray()
    need = None
    try:
        while need is None or len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BadRequest(f"no request within {REQUEST_TIMEOUT:.0f} s")
            conn.settimeout(left)
            try:
                data, ancdata, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(3 * 4))
            except TimeoutError:
                raise BadRequest(f"no request within {REQUEST_TIMEOUT:.0f} s") from None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    k = len(payload) // 4
                    fds += list(struct.unpack(f"{k}i", payload[:4 * k]))
            if not data:
                raise BadRequest("connection closed before the request was complete")
            buf += data
            if need is None and len(buf) >= 4:
                (need,) = struct.unpack("!I", bytes(buf[:4]))
                if need > MAX_REQUEST:
                    raise BadRequest(f"request of {need} bytes; at most {MAX_REQUEST}")
                need += 4
        if len(buf) != need:
            raise BadRequest("more bytes than the request's length")
        if len(fds) != 3:
            raise BadRequest(f"{len(fds)} file descriptors; expected 3 (stdin, stdout, stderr)")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return bytes(buf[4:need]), fds


def _child(conn) -> int:
    """In the forked child: read and check the request, become the job and run it."""
    import tempfile
    import threading

    try:
        data, fds = _recv_request(conn, time.monotonic() + REQUEST_TIMEOUT)
    except (BadRequest, OSError):
        return 65
    try:
        msg = parse_request(data)
        conn.settimeout(REQUEST_TIMEOUT)
        send_message(conn, {"pid": os.getpid()})
        conn.settimeout(None)
    except (BadRequest, OSError):  # a bad request, or the client left: no job
        for fd in fds:
            os.close(fd)
        return 65
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    os.environ.clear()
    os.environ.update(msg["env"])
    tempfile.tempdir = None  # the job's TMPDIR, not the one the server started with
    try:
        os.chdir(msg["cwd"])
    except OSError as exc:
        print(f"ltpa-job: cannot enter {msg['cwd']!r}: {exc.strerror}", file=sys.stderr)
        return 1

    def watch():  # the client went away (killed): so does the job
        while True:
            try:
                select.select([conn], [], [])
                if not conn.recv(1):
                    break
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                break
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()
    from .client import run_here

    code = run_here(msg["argv"])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        send_message(conn, {"exit": code})
    except OSError:
        pass
    return code


def build_parser():
    import argparse

    from .cli import HelpFormatter

    ap = argparse.ArgumentParser(prog="python -m ltpa.jobserver", formatter_class=HelpFormatter,
                                 description="The warm job server (started by ltpa-job).")
    ap.add_argument("--socket", required=True,
                    help="the Unix socket to serve on, in a private folder (required)")
    ap.add_argument("--idle", type=float, default=IDLE_SECONDS,
                    help="seconds without a job after which the server exits")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    path = Path(args.socket)
    problem = folder_problem(path.parent)
    if problem:
        print(f"ltpa.jobserver: not serving: {problem}", file=sys.stderr)
        return 1
    serve(path, args.idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())

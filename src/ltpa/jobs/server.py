"""Run jobs in processes forked from a warm server: the per-job start-up cost, removed.

Every workflow job is a fresh process, and a fresh Python spends ~0.6 s importing numpy,
nibabel and numba and loading the compiled kernels before it does any work: for a study of
small scans that is most of the run. So the job command (``ltpa-job``, ``ltpa.jobs.client``) is
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
  allowlist of environment variables (``wire.job_environment``) and trusts an exit status 0 only
  when the job's output exists.
- The accept loop never reads: each connection is handed to a forked child at once, which
  reads the request within ``wire.REQUEST_TIMEOUT`` (so a silent client stalls nobody), checks
  it (size, JSON depth, types) and becomes the job; a bad request ends only its child.
- A client killed by a signal it can catch (Snakemake stopping a job) passes it on to the
  child; a client killed outright (SIGKILL) closes its socket, which the child watches: it
  stops then too. A job never outlives its command for long.
- ``LTPA_JOB_SERVER=0`` runs every job in the client's own process (no server); any problem
  reaching a server does the same, so a job never fails because of this shortcut.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import nibabel as nib
import numpy as np

from ..clihelp import HelpFormatter
from ..formats.grids import QSDR_AFFINE, QSDR_DIM
from ..formats.trkwrite import write_trk
from ..study.spec import JobSpec
from .client import run_here
from .pipeline import export_key_trk, index_scan, label_scan, run, write_patterns
from .wire import (
    REQUEST_TIMEOUT,
    BadRequest,
    folder_problem,
    parse_request,
    peer_uid,
    recv_request,
    send_message,
)

IDLE_SECONDS = 120


# --------------------------------------------------------------------------- the server


def _warm() -> None:
    """Import everything a job needs and run each step once on a tiny scan.

    Imports, numba's compiled kernels (for the argument types real jobs use), nibabel's
    readers and the first-use costs of the libraries are then paid here, once, not in
    every forked job.
    """
    folder = tempfile.mkdtemp(prefix="ltpa-warm-")
    try:
        import networkx  # noqa: F401 - region lists from a graphml are read with networkx

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
        run(JobSpec("qc_scan", f"{folder}/q.tsv", inputs={"pkl_path": f"{folder}/w.pkl"},
                    scan_id="warm", sidecar=False,
                    extra={"lengths": f"{folder}/l.tsv", "atlases": [["a", f"{folder}/w.npy"]],
                           "trk_file": trk, "kept": []}))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def serve(path: Path, idle: float = IDLE_SECONDS,
          request_timeout: float = REQUEST_TIMEOUT) -> None:
    """Listen on ``path`` and fork a child per connection, until idle for ``idle`` seconds.

    The server warms up first (imports and compiled kernels, one tiny job per step), then
    binds a temporary socket (mode 0600) and moves it to ``path``, so clients see it only
    once it accepts. It stops when no job came for ``idle`` seconds and none runs, or when
    ``path`` was removed or taken by another server's socket; it removes ``path`` on the way
    out only if it is still its own.

    Parameters
    ----------
    path : pathlib.Path
        The socket, in a folder private to this user (checked by the caller,
        ``wire.folder_problem``).
    idle : float, optional
        Seconds without a new connection (and with no job running) after which the server
        exits (default ``IDLE_SECONDS``, 120).
    request_timeout : float, optional
        Seconds each connection's child gives the client to deliver its request (default
        ``wire.REQUEST_TIMEOUT``, 10).
    """
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
                    _accept(listener, children, (wake_r, wake_w), request_timeout)
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


def _accept(listener, children, wake, request_timeout=REQUEST_TIMEOUT) -> None:
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
        code = _child(conn, request_timeout)
    except BaseException:
        try:
            traceback.print_exc()  # the job's stderr once it has it, else the server's
        except BaseException:
            pass
    finally:
        os._exit(code)


def _child(conn, request_timeout=REQUEST_TIMEOUT) -> int:
    """In the forked child: read and check the request (within ``request_timeout`` s),
    become the job and run it."""
    try:
        data, fds = recv_request(conn, time.monotonic() + request_timeout)
    except (BadRequest, OSError):
        return 65
    try:
        msg = parse_request(data)
        conn.settimeout(request_timeout)
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
    code = run_here(msg["argv"])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        send_message(conn, {"exit": code})
    except OSError:
        pass
    return code


def build_parser():
    """The command line of ``python -m ltpa.jobs.server``: ``--socket PATH [--idle SECONDS]``.

    Returns
    -------
    argparse.ArgumentParser
    """
    ap = argparse.ArgumentParser(prog="python -m ltpa.jobs.server", formatter_class=HelpFormatter,
                                 description="The warm job server (started by ltpa-job).")
    ap.add_argument("--socket", required=True,
                    help="the Unix socket to serve on, in a private folder (required)")
    ap.add_argument("--idle", type=float, default=IDLE_SECONDS,
                    help="seconds without a job after which the server exits")
    ap.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT,
                    help="seconds a connection has to deliver its request (a silent one is "
                         "then closed)")
    return ap


def main(argv=None) -> int:
    """Serve jobs on ``--socket`` (``serve``): until no job came for ``--idle`` seconds and
    none runs, or the socket's name was taken by another server or removed.

    The socket's folder must be private to this user (``wire.folder_problem``); if it is
    not, nothing is served.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``, as argparse reads them).

    Returns
    -------
    int
        0 once the server stops, 1 (with the reason on stderr) when the folder is not private.
    """
    ap = build_parser()
    args = ap.parse_args(argv)
    if not args.request_timeout > 0:
        ap.error("--request-timeout must be a positive number of seconds")
    path = Path(args.socket)
    problem = folder_problem(path.parent)
    if problem:
        print(f"ltpa.jobs.server: not serving: {problem}", file=sys.stderr)
        return 1
    serve(path, args.idle, args.request_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

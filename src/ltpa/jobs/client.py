"""``ltpa-job``: the command every workflow job runs (``ltpa-job --log LOG SPEC``).

It runs the job described by SPEC (an ``ltpa.study.spec.JobSpec`` as JSON) through
``ltpa.jobs.pipeline.run``, logging to LOG, and exits 0, or 1 with the error on stderr and in the
log. It does so in a process forked from the warm job server (``ltpa.jobs.server``: no import
or compile cost per job), or in its own process when no server can be reached or
``LTPA_JOB_SERVER=0``. This module imports nothing heavy, so the client starts in
milliseconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from ..clihelp import HelpFormatter
from .wire import private_folder, recv_message, send_request, socket_path

START_TIMEOUT = 120  # the first server of an install also compiles the kernels


class _NoServer(Exception):
    pass


def build_parser():
    import argparse

    ap = argparse.ArgumentParser(
        prog="ltpa-job", formatter_class=HelpFormatter,
        description="The command every workflow job runs: the job described by SPEC, through "
                    "the warm job server when one can be reached (LTPA_JOB_SERVER=0: in this "
                    "process).")
    ap.add_argument("--log", required=True, help="the job's log file (required)")
    ap.add_argument("spec", help="the job (ltpa.study.spec.JobSpec as JSON)")
    return ap


def run_here(argv) -> int:
    """Run the job in this process; returns its exit status."""
    args = build_parser().parse_args(argv)
    # the job's modules (numpy, numba, nibabel: ~0.6 s) only when it runs in this process; a
    # job sent to the warm server never imports them here, so ltpa-job starts in ~40 ms
    from ..study.spec import JobSpec
    from .job import job
    from .pipeline import run

    spec = JobSpec.from_json(args.spec)
    try:
        with job(args.log, f"{spec.step} scan={spec.scan_id} -> {spec.output}"):
            run(spec)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def _server(path):
    """A connection to the server at ``path``, starting one when there is none."""
    sock = _connect(path)
    if sock is not None:
        return sock
    if not private_folder(path.parent):
        raise _NoServer(f"no private folder for the job server ({path.parent})")
    subprocess.Popen([sys.executable, "-m", "ltpa.jobs.server", "--socket", str(path)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.02)
        sock = _connect(path)
        if sock is not None:
            return sock
    raise _NoServer("the job server did not start")


def run_via_server(argv) -> int:
    sock = _server(socket_path())
    with sock:
        try:
            send_request(sock, {"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ)})
            first = recv_message(sock)
        except (OSError, ValueError) as exc:
            raise _NoServer(str(exc)) from None
        if not first or "pid" not in first:
            raise _NoServer("the job server refused the job")
        pid = first["pid"]

        def forward(signum, _frame):
            try:
                os.kill(pid, signum)
            except OSError:
                pass

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, forward)
        try:
            msg = recv_message(sock)
        except (OSError, ValueError):
            msg = None
    if msg is None or "exit" not in msg:
        print("ltpa-job: the job's process ended without an exit status", file=sys.stderr)
        return 1
    code = int(msg["exit"])
    return 128 - code if code < 0 else code


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("LTPA_JOB_SERVER", "1") == "0" or not hasattr(socket, "AF_UNIX"):
        return run_here(argv)
    if any(a in ("-h", "--help") for a in argv):
        return run_here(argv)
    try:
        return run_via_server(argv)
    except _NoServer:
        return run_here(argv)


if __name__ == "__main__":
    sys.exit(main())

"""``ltpa-job``: the command every workflow job runs (``ltpa-job --log LOG SPEC``).

It runs the job described by SPEC (an ``ltpa.study.spec.JobSpec`` as JSON) through
``ltpa.jobs.pipeline.run``, logging to LOG, and exits 0, or 1 with the error on stderr and in
the log (an ``LtpaError`` as its message, anything else with its traceback). It does so in a
process forked from the warm job server (``ltpa.jobs.server``: no import or compile cost per
job), or in its own process when no server can be reached safely, answers in time, or
``LTPA_JOB_SERVER=0``. This module imports nothing heavy, so the client starts in
milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback

from ..clihelp import HelpFormatter
from .wire import folder_problem, job_environment, peer_uid, recv_message, send_request, socket_path

START_TIMEOUT = 120  # the first server of an install also compiles the kernels
# seconds for a running server to take the request and name the job's process: it forks at
# once, so only a stopped or overloaded server takes longer, and then the job runs here
# (LTPA_JOB_SERVER_TIMEOUT overrides it)
ANSWER_TIMEOUT = 30


class _NoServer(Exception):
    pass


def build_parser():
    """The command line of ``ltpa-job``: ``--log LOG SPEC``.

    Returns
    -------
    argparse.ArgumentParser
    """
    ap = argparse.ArgumentParser(
        prog="ltpa-job", formatter_class=HelpFormatter,
        description="The command every workflow job runs: the job described by SPEC, through "
                    "the warm job server when one can be reached (LTPA_JOB_SERVER=0: in this "
                    "process).")
    ap.add_argument("--log", required=True, help="the job's log file (required)")
    ap.add_argument("spec", help="the job (ltpa.study.spec.JobSpec as JSON)")
    return ap


def run_here(argv) -> int:
    """Run the job in this process; returns its exit status (never raises).

    Every failure ends in the job's log (``ltpa.jobs.job``): an ``LtpaError`` as its
    message, any other exception with its traceback; what happens before the log is open
    (a spec that cannot be read, a log that cannot be written) goes to stderr.

    Parameters
    ----------
    argv : list of str
        The ``ltpa-job`` arguments (``--log LOG SPEC``).

    Returns
    -------
    int
        The job's exit status: 0 on success, 1 on any failure, or the status of a
        ``SystemExit`` raised on the way (argparse's 2 for bad arguments, 0 for ``--help``).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return _code(exc)
    try:
        # the job's modules (numpy, numba, nibabel: ~0.6 s) only when it runs in this
        # process; a job sent to the warm server never imports them here, so ltpa-job starts
        # in ~40 ms
        from ..study.spec import JobSpec
        from .job import job
        from .pipeline import run

        try:
            spec = JobSpec.from_json(args.spec)
            title = f"{spec.step} scan={spec.scan_id} -> {spec.output}"
        except Exception:
            spec, title = None, "a job whose description cannot be read"
        with job(args.log, title):
            if spec is None:
                JobSpec.from_json(args.spec)  # raises again, now into the log
            run(spec)
    except SystemExit as exc:
        return _code(exc)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def _answer_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("LTPA_JOB_SERVER_TIMEOUT", ANSWER_TIMEOUT)))
    except ValueError:
        return ANSWER_TIMEOUT


def _connect(path):
    """A connection to a server of this user at ``path``, or None (nothing listening).

    Raises ``_NoServer`` when something listens that is not this user's.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_answer_timeout())
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    try:
        uid = peer_uid(sock)
    except OSError:
        sock.close()
        return None
    if uid != os.getuid():
        sock.close()
        raise _NoServer(f"the job server at {path} runs as uid {uid}, not as this user "
                        f"({os.getuid()})")
    return sock


def _server(path):
    """A connection to the server at ``path``, starting one when there is none."""
    problem = folder_problem(path.parent)
    if problem:
        raise _NoServer(f"not a private folder: {problem}")
    sock = _connect(path)
    if sock is not None:
        return sock
    idle = os.environ.get("LTPA_JOB_SERVER_IDLE")  # else the server's own default
    subprocess.Popen([sys.executable, "-m", "ltpa.jobs.server", "--socket", str(path),
                      *(["--idle", idle] if idle else [])],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.02)
        sock = _connect(path)
        if sock is not None:
            return sock
    raise _NoServer("the job server did not start")


def _output_of(argv):
    """The output file the job's spec names, or None when the spec cannot be read here."""
    try:
        args = build_parser().parse_args(argv)
        output = json.loads(args.spec).get("output")
    except (SystemExit, ValueError, AttributeError):
        return None
    return output if isinstance(output, str) and output else None


def run_via_server(argv) -> int:
    """Run the job in a process forked by the warm job server, starting a server if none runs.

    The request carries ``argv``, the working folder, the allowlisted environment
    (``wire.job_environment``) and this process's stdin, stdout and stderr. Once the server
    names the job's process, SIGTERM, SIGINT and SIGHUP received here are forwarded to it.

    Parameters
    ----------
    argv : list of str
        The ``ltpa-job`` arguments (``--log LOG SPEC``).

    Returns
    -------
    int
        The job's exit status (128 + N for a process ended by signal N); 1 when the job's
        process ended without reporting one, or reported 0 but the output the spec names does
        not exist.

    Raises
    ------
    _NoServer
        When the job could not be handed to a server (a spec that names no output, a socket
        folder that is not private, a server of another user, one that did not start, or a
        first answer that does not name the job's process: a refusal, a timeout, a broken
        connection); ``main`` then runs the job here.
    """
    output = _output_of(argv)
    if output is None:
        raise _NoServer("the job's description names no output")
    sock = _server(socket_path())
    with sock:
        try:
            send_request(sock, {"argv": list(argv), "cwd": os.getcwd(),
                                "env": job_environment(os.environ)})
            first = recv_message(sock)  # within the answer timeout (the socket's)
        except (OSError, ValueError) as exc:
            raise _NoServer(str(exc)) from None
        if not isinstance(first, dict) or not isinstance(first.get("pid"), int):
            raise _NoServer("the job server refused the job")
        pid = first["pid"]

        def forward(signum, _frame):
            try:
                os.kill(pid, signum)
            except OSError:
                pass

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, forward)
        sock.settimeout(None)  # the job takes as long as it takes
        try:
            msg = recv_message(sock)
        except (OSError, ValueError):
            msg = None
    if not isinstance(msg, dict) or not isinstance(msg.get("exit"), int):
        print("ltpa-job: the job's process ended without an exit status", file=sys.stderr)
        return 1
    code = msg["exit"]
    if code == 0 and not os.path.exists(output):
        print(f"ltpa-job: the job server reported success but the output {output!r} does not "
              f"exist: failing the job", file=sys.stderr)
        return 1
    return 128 - code if code < 0 else code


def main(argv=None) -> int:
    """Run ``ltpa-job``: through the job server when one can be used, else in this process.

    The job runs here (``run_here``) when ``LTPA_JOB_SERVER=0``, without Unix sockets, for
    ``-h``/``--help``, or when the server cannot take it; a socket folder that is not private
    or a server of another user is also reported on stderr as a warning.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The job's exit status: 0 on success.
    """
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("LTPA_JOB_SERVER", "1") == "0" or not hasattr(socket, "AF_UNIX"):
        return run_here(argv)
    if any(a in ("-h", "--help") for a in argv):
        return run_here(argv)
    try:
        return run_via_server(argv)
    except _NoServer as exc:
        text = str(exc)
        if text.startswith(("not a private folder", "the job server at")):
            print(f"ltpa-job: warning: running in this process, not through the job server: "
                  f"{text}", file=sys.stderr)
        return run_here(argv)


if __name__ == "__main__":
    sys.exit(main())

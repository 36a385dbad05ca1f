"""Running one step as a job: log to a file, turn input errors into one clear line.

Used by the workflow scripts and the command line alike; knows nothing of Snakemake.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback

from .. import __version__
from ..errors import LtpaError

FORMAT = "%(asctime)s %(levelname)s %(message)s"


@contextlib.contextmanager
def job(log_path=None, title=""):
    """Log to ``log_path`` (and stderr), time the step, exit 1 on any error.

    An ``LtpaError`` is logged as its message (it says what and where); any other exception
    with its traceback.

    The process's stderr is sent to the log too, so warnings from libraries land
    there; the final error line is also written to the original stderr so that
    the Snakemake console shows it without opening the log. On the way out, the stderr
    descriptor and the root logger's handlers and level are put back as they were, so the
    step can run inside a longer-lived process (``ltpa.cli.main`` called from Python).

    Parameters
    ----------
    log_path : str or os.PathLike, optional
        The log file, appended to (its folder is created); None or empty: log to stderr only.
    title : str, optional
        What the job does, logged in the first line after the package version.

    Yields
    ------
    logging.Logger
        The ``ltpa`` logger, for the step to log to.

    Raises
    ------
    SystemExit
        With status 1 when the step raises any exception (logged first).
    """
    console = os.fdopen(os.dup(2), "w", buffering=1)
    handlers = [logging.StreamHandler(console)]
    log_file = None
    saved_stderr = None
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    try:
        if log_path:
            os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
            log_file = open(log_path, "a", buffering=1)
            sys.stderr.flush()
            saved_stderr = os.dup(2)
            os.dup2(log_file.fileno(), 2)
            handlers = [logging.StreamHandler(log_file)]
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            h.setFormatter(logging.Formatter(FORMAT))
            root.addHandler(h)
        root.setLevel(logging.INFO)
        log = logging.getLogger("ltpa")
        log.info("ltpa %s: %s", __version__, title)
        t0 = time.perf_counter()
        try:
            yield log
        except LtpaError as exc:
            log.error("%s", exc)
            if log_file is not None:
                print(f"ltpa error: {exc}", file=console)
            sys.exit(1)
        except Exception as exc:
            # not an input problem: a bug or the system's (disk, memory). The traceback goes
            # to the log whoever runs the job (this process, or a child of the job server,
            # whose uncaught exceptions would otherwise end unseen)
            log.error("unexpected error (%s), please report it with this log:\n%s",
                      type(exc).__name__, traceback.format_exc().rstrip())
            if log_file is not None:
                print(f"ltpa error: unexpected {type(exc).__name__}: {str(exc)[:300]} "
                      f"(traceback in {log_path})", file=console)
            sys.exit(1)
        log.info("done in %.2f s", time.perf_counter() - t0)
    finally:
        # the process as it was (a caller of ``ltpa.cli.main`` in its own process keeps its
        # stderr and logging): stderr's descriptor, the root logger's handlers and level
        for h in handlers:
            root.removeHandler(h)
        for h in saved_root[0]:
            root.addHandler(h)
        root.setLevel(saved_root[1])
        if saved_stderr is not None:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
        if log_file is not None:
            log_file.close()
        console.close()

"""Progress lines in a job's log: the one callback the steps and the QC tables share."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("ltpa")


def progress_logger(what):
    """A ``progress(done, total)`` callback that logs at most every 5 s.

    Parameters
    ----------
    what : str
        What is being done, e.g. "hashing": each line is ``"<what>: <percent>%"``.

    Returns
    -------
    callable
        ``report(done, total)``; it logs (logger ``ltpa``, INFO) when 5 s have passed since
        its last line, and when ``done == total``.
    """
    last = [0.0]

    def report(done, total):
        now = time.monotonic()
        if now - last[0] > 5 or done == total:
            last[0] = now
            log.info("%s: %.0f%%", what, 100.0 * done / max(total, 1))
    return report

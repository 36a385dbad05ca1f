"""Rebuild stamps: how the workflow has Snakemake rebuild what ltpa finds out of date.

Whether an output is up to date is ``ltpa.study.staleness``'s decision, from the study's
files (sidecars), never from Snakemake's records of a working folder. Snakemake learns it
through its public rules only: a job whose output is out of date gets one more input, a
*stamp* file under the study's folder (``<work_dir>/stale/<rule><output path>.stamp``) whose
modification time is later than the output's, so Snakemake's modification-time rule reruns
the job (and, as always, whatever reads its output). An output that is up to date has no
stamp among its inputs. A stamp is written only for a job Snakemake asks about (the
requested targets), and stamps of outputs that are no longer out of date are removed.

Snakemake's other rerun triggers (parameters, code, the set of inputs) read its records in
the working folder, so the workflow keeps only the modification-time trigger.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import InputError

FOLDER = "stale"
SUFFIX = ".stamp"
# a stamp is at least this much later than its output (Snakemake compares modification
# times as float seconds, exact to ~0.25 us today: 1 ms is a safe lead) ...
LEAD_NS = 1_000_000
# ... and, where the file system keeps coarser times than that (whole seconds; two on FAT)
# and stored the stamp no later than the output, the first of these that it does store later
COARSE_LEADS_NS = (1_000_000_000, 2_000_000_000)


def stamp_path(work_dir, rule: str, output) -> Path:
    """The stamp of ``output`` (made by ``rule``) under the study's ``work_dir``.

    Parameters
    ----------
    work_dir : str or Path
        The study's own folder (``<json stem>.ltpa``, or config ``results_dir``).
    rule : str
        The rule that makes the output.
    output : str or Path
        The output's path (made absolute).

    Returns
    -------
    Path
        ``<work_dir>/stale/<rule><absolute output path>.stamp``.
    """
    return Path(f"{os.path.abspath(work_dir)}/{FOLDER}/{rule}{os.path.abspath(output)}{SUFFIX}")


def write_stamp(path, output) -> Path:
    """Create or touch the stamp ``path`` so that it is later than ``output``.

    Its modification time is now, or, for an output written less than ``LEAD_NS`` ago (or
    dated in the future by a skewed clock), the output's time plus ``LEAD_NS``; on a file
    system that stored it no later than the output (coarse timestamps), the output's time
    plus 1 s, else 2 s. It is never later than it must be: the job that rebuilds the output
    must write it after the stamp's time, or Snakemake finds the new output older than an
    input and fails the job ("clock skew"); a stamp dated 2 s ahead failed every rebuild
    that ran within 2 s of the output's last write. Its content is new each time (the
    output's path and the time): Snakemake does not rerun a job for an input whose checksum
    is the one it recorded in an earlier run, so an unchanged stamp would not count.

    Parameters
    ----------
    path : str or Path
        The stamp (``stamp_path``); its folders are made.
    output : str or Path
        The output it makes out of date (absent: the stamp is simply now).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If the stamp cannot be written (a read-only study folder): the output could not be
        rebuilt, so this stops the run naming both.
    """
    path = Path(path)
    try:
        out_ns = os.stat(output).st_mtime_ns
    except OSError:
        out_ns = None
    when = time.time_ns()
    if out_ns is not None:
        when = max(when, out_ns + LEAD_NS)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or (path.exists() and not path.is_file()):
            path.unlink()
        # new content each time: Snakemake skips an input newer than the output whose
        # checksum equals the one its records hold from an earlier run
        with open(path, "w") as fh:
            fh.write(f"{os.path.abspath(output)}\nout of date as of {time.time_ns()}\n")
        os.utime(path, ns=(when, when))
        if out_ns is not None:
            for lead in COARSE_LEADS_NS:
                if os.stat(path).st_mtime_ns > out_ns:  # as the file system stored both
                    break
                when = max(when, out_ns + lead)
                os.utime(path, ns=(when, when))
    except OSError as exc:
        raise InputError(f"output {str(output)!r} is out of date, but its rebuild stamp "
                         f"{str(path)!r} cannot be written ({exc.strerror}): the study's "
                         f"folder must be writable to rebuild it") from None
    return path


def remove_other_stamps(work_dir, keep) -> int:
    """Remove the stamps under ``work_dir`` that are not in ``keep``.

    Parameters
    ----------
    work_dir : str or Path
        The study's own folder.
    keep : iterable of Path
        The stamps of the outputs out of date now (``stamp_path``).

    Returns
    -------
    int
        How many stamps were removed (files ending in ``.stamp`` only; nothing else under
        the folder is touched).
    """
    root = Path(os.path.abspath(work_dir)) / FOLDER
    if root.is_symlink() or not root.is_dir():  # a link is not ours to walk
        return 0
    keep = {os.fspath(p) for p in keep}
    removed = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(SUFFIX) and path not in keep:
                try:
                    os.unlink(path)
                    removed += 1
                except OSError:
                    pass
    return removed
